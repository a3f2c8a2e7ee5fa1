"""Surfaces broken corpus specs as an Airflow DAG import error (this file defines no DAG).

Airflow records import errors per Python file, and an exception would hide every DAG defined in the
same file; so the factory (synthcorpus_dags.py) skips broken specs and this separate file raises one
error listing each broken spec with its file, field and what was expected.
"""

from __future__ import annotations

import os
from pathlib import Path

from synthcorpus.spec import discover

CORPORA_DIR = Path(os.environ.get("SYNTHCORPUS_CORPORA_DIR") or Path(__file__).resolve().parents[1] / "include" / "corpora")


class BrokenCorpusSpec(ValueError):
    pass


_, _broken = discover(CORPORA_DIR)
if _broken:
    raise BrokenCorpusSpec(
        f"{len(_broken)} corpus spec(s) invalid; their DAGs are not loaded:\n"
        + "\n".join(str(problem) for err in _broken.values() for problem in err.problems)
    )

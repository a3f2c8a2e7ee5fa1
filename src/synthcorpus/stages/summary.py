"""summary: the one-screen summary of the run (what ``make demo`` prints), from its ``lineage.json``.

Reads ``publish`` (through the run's lineage); writes nothing but its marker, which carries the text.
"""

from __future__ import annotations

import logging

from .contract import RunContext, StageResult

NAME = "summary"
READS = ("publish",)
MAPPED = False
USES: tuple[str, ...] = ()  # the text comes from the published lineage

log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    from ..summary import run_summary

    text = run_summary(run.spec, run.run_id)
    log.info("summary of run %s\n%s", run.run_id, text)
    return StageResult(NAME, {}, {"text": text})

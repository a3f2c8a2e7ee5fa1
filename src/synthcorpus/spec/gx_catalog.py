"""The GX Core expectation catalog as data, so a spec's user expectations are checked at load time
without importing great_expectations (which takes seconds and must stay out of DAG parsing).

Generated from the installed great_expectations by ``python -m synthcorpus.spec.gx_catalog``;
tests/integration/test_gate.py fails when it no longer matches the installed version.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CATALOG_FILE = Path(__file__).with_name("gx_expectations.json")
# Fields every expectation has that are not arguments a spec should set.
NOT_ARGUMENTS = {"id", "meta", "notes", "rendered_content", "batch_id", "windows", "description", "severity",
                 "result_format", "catch_exceptions"}


def build() -> dict[str, dict]:
    import re

    import great_expectations as gx
    from great_expectations.expectations.expectation import Expectation

    out = {}
    for name in sorted(dir(gx.expectations)):
        cls = getattr(gx.expectations, name)
        if isinstance(cls, type) and issubclass(cls, Expectation) and name.startswith("Expect"):
            fields = cls.__fields__  # GX 1.x expectations are pydantic v1 models
            out[re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()] = {
                "class": name,
                "arguments": sorted(k for k in fields if k not in NOT_ARGUMENTS),
                "required": sorted(k for k, f in fields.items() if f.required and k not in NOT_ARGUMENTS),
            }
    return out


def load() -> dict[str, dict]:
    return json.loads(CATALOG_FILE.read_text())


if __name__ == "__main__":
    CATALOG_FILE.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {CATALOG_FILE}", file=sys.stderr)

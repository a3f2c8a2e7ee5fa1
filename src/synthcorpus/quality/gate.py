"""The quality gate: a Great Expectations (GX Core 1.x) checkpoint over the surviving documents.

Two batches are validated against a file Data Context rooted at ``workdir``: ``documents`` (one row
per document) and ``run_metrics`` (one row of run-level counters). Each batch has its own Checkpoint
(GX passes one ``batch_parameters`` dict to every validation definition of a Checkpoint, so two
dataframes cannot share one); both runs share a run id and update the same Data Docs site on disk.
A failed gate does not raise here: the caller checks :attr:`QualityReport.passed` and raises
:class:`GateFailed` itself.

GX and pandas are imported inside :func:`run_quality_gate` so this module stays cheap to import.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

DOCUMENT_COLUMNS = ("text", "n_words", "text_hash")
_COLUMNS = ("batch", "expectation", "column", "expected", "observed", "success")


@dataclass(frozen=True)
class GateThresholds:
    min_documents: int
    max_filtered_share: float
    min_words: int
    max_words: int
    max_opening_share: float | None = None  # None: not checked
    check_canaries: bool = False  # every planted contamination canary must have been caught
    min_language_match_rate: float | None = None  # None: not checked
    extra: tuple = ()  # user expectations: (batch, GX expectation name, kwargs) from the spec


@dataclass
class QualityReport:
    passed: bool
    expectations: list[dict] = field(default_factory=list)
    validation: dict = field(default_factory=dict)
    data_docs_dir: Path | None = None

    def failures(self) -> list[dict]:
        return [e for e in self.expectations if not e["success"]]

    def table(self, only_failed: bool = False) -> str:
        rows = self.failures() if only_failed else self.expectations
        cells = [[_cell(r[c]) for c in _COLUMNS] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(_COLUMNS)]
        line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()  # noqa: E731
        out = [line(_COLUMNS), line(["-" * w for w in widths])] + [line(row) for row in cells]
        return "\n".join(out)

    def to_dict(self) -> dict:
        failed = len(self.failures())
        counts = {"evaluated": len(self.expectations), "successful": len(self.expectations) - failed, "failed": failed}
        return {"passed": self.passed, "expectations": self.expectations, "counts": counts}


class GateFailed(RuntimeError):
    def __init__(self, report: QualityReport):
        self.report = report
        n = len(report.failures())
        super().__init__(f"quality gate failed: {n} expectation(s) not met\n{report.table(only_failed=True)}")


def _cell(value: Any, limit: int = 60) -> str:
    if value is None or isinstance(value, bool):
        return {True: "ok", False: "FAILED", None: "-"}[value]
    if isinstance(value, dict) and "unexpected_count" in value:  # column-map result
        value = f"{value['unexpected_count']}/{value['element_count']} unexpected" + (
            f": {', '.join(value['unexpected_examples'])}" if value["unexpected_examples"] else "")
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so numpy scalars, timestamps and the like become plain values."""
    return json.loads(json.dumps(value, default=str))


def _observed(result: dict, exception_info: dict) -> Any:
    # exception_info is either one {"raised_exception": ...} dict or a dict of them keyed by metric id.
    infos = [exception_info] if "raised_exception" in exception_info else list(exception_info.values())
    errors = [i.get("exception_message") or "error" for i in infos if isinstance(i, dict) and i.get("raised_exception")]
    if errors:
        return {"error": "; ".join(dict.fromkeys(errors))[:200]}
    if "observed_value" in result:
        return result["observed_value"]
    examples = list(dict.fromkeys(str(v)[:40] for v in (result.get("partial_unexpected_list") or [])))[:5]
    return {"unexpected_count": result.get("unexpected_count"), "element_count": result.get("element_count"),
            "unexpected_examples": examples}


def _build_suites(gx: Any, t: GateThresholds, suite_name: str) -> dict[str, tuple[Any, dict]]:
    """Per batch: (suite, {(expectation type, column): human-readable expectation})."""
    E = gx.expectations
    plan = {
        "documents": [
            (E.ExpectTableRowCountToBeBetween(min_value=t.min_documents), f">= {t.min_documents}"),
            (E.ExpectColumnValuesToNotBeNull(column="text"), "not null"),
            (E.ExpectColumnValuesToBeBetween(column="n_words", min_value=t.min_words, max_value=t.max_words),
             f"between {t.min_words} and {t.max_words}"),
            (E.ExpectColumnValuesToBeUnique(column="text_hash"), "unique"),
        ],
        "run_metrics": [
            (E.ExpectColumnValuesToBeBetween(column="filtered_share", min_value=0, max_value=t.max_filtered_share),
             f"between 0 and {t.max_filtered_share:g}"),
        ],
    }
    if t.min_language_match_rate is not None:
        plan["run_metrics"].append(
            (E.ExpectColumnValuesToBeBetween(column="language_match_rate", min_value=t.min_language_match_rate, max_value=1),
             f">= {t.min_language_match_rate:g}")
        )
    if t.check_canaries:
        plan["run_metrics"].append(
            (E.ExpectColumnValuesToBeBetween(column="canaries_missed", min_value=0, max_value=0), "0 (all caught)")
        )
    if t.max_opening_share is not None:
        plan["run_metrics"].append(
            (E.ExpectColumnValuesToBeBetween(column="max_opening_share", min_value=0, max_value=t.max_opening_share),
             f"between 0 and {t.max_opening_share:g}")
        )
    if t.extra:
        from .gx_catalog import load

        catalog = load()
        for batch, name, kwargs in t.extra:
            expectation = getattr(E, catalog[name]["class"])(**kwargs)
            shown = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "column")
            plan[batch].append((expectation, f"{shown} (spec)"))
    suites = {}
    for batch, items in plan.items():
        suite = gx.ExpectationSuite(name=f"{suite_name}.{batch}")
        for expectation, _ in items:
            suite.add_expectation(expectation)
        labels = {(e.expectation_type, getattr(e, "column", None)): label for e, label in items}
        suites[batch] = (suite, labels)
    return suites


def run_quality_gate(
    documents: pd.DataFrame, run_metrics: dict, thresholds: GateThresholds, workdir: Path, suite_name: str
) -> QualityReport:
    """Validate ``documents`` and ``run_metrics`` against ``thresholds``; never raises on a failed gate."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    docs = documents
    if docs.empty:  # an empty frame may arrive without columns; give it the schema so it fails on row count only
        docs = docs.reindex(columns=list(dict.fromkeys([*docs.columns, *DOCUMENT_COLUMNS])))
    frames = {"documents": docs, "run_metrics": pd.DataFrame([dict(run_metrics)])}

    context = gx.get_context(mode="file", project_root_dir=workdir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in task logs
    source = context.data_sources.add_or_update_pandas(name=suite_name)
    run_id = RunIdentifier(run_name=suite_name, run_time=dt.datetime.now(dt.timezone.utc))
    expectations, validation = [], {"success": True, "run_id": run_id.to_json_dict(), "results": {}}
    # One Checkpoint per batch (see module docstring); the shared run_id groups both runs in Data Docs.
    for batch, (suite, labels) in _build_suites(gx, thresholds, suite_name).items():
        batch_def = source.add_dataframe_asset(name=batch).add_batch_definition_whole_dataframe(batch)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=batch_def, suite=context.suites.add_or_update(suite))
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=suite.name,
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="update_data_docs")],
                result_format={"result_format": "SUMMARY"},
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frames[batch]}, run_id=run_id)
        for suite_result in result.run_results.values():
            payload = suite_result.to_json_dict()
            validation["results"][batch] = payload
            validation["success"] = validation["success"] and bool(payload["success"])
            for r in payload["results"]:
                config = r["expectation_config"]
                column = config["kwargs"].get("column")
                observed = _observed(r.get("result") or {}, r.get("exception_info") or {})
                if batch == "run_metrics" and column in run_metrics:  # one row: the value itself says more
                    observed = run_metrics[column]
                expectations.append({
                    "batch": batch,
                    "expectation": config["type"],
                    "column": column,
                    "expected": labels.get((config["type"], column), json.dumps(config["kwargs"], default=str)),
                    "observed": observed,
                    "success": bool(r["success"]),
                })

    sites = context.get_docs_sites_urls()
    index = next((Path(s["site_url"].removeprefix("file://")) for s in sites if s.get("site_url")), None)
    if index is None or not index.exists():
        index = next(iter(sorted(workdir.rglob("data_docs/**/index.html"))), None)
    return QualityReport(
        passed=validation["success"] and all(e["success"] for e in expectations),
        expectations=_jsonable(expectations),
        validation=_jsonable(validation),
        data_docs_dir=index.parent if index else None,
    )

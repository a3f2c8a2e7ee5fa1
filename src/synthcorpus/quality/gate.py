"""The quality gate: Great Expectations (GX Core 1.x) checkpoints over the surviving documents.

A suite is a list of :class:`Check` on two batches, validated against a file Data Context rooted at
``workdir``: ``documents`` (one row per document; the release validates it shard by shard) and
``run_metrics`` (one row of run-level counters). Each batch has its own Checkpoint
(GX passes one ``batch_parameters`` dict to every validation definition of a Checkpoint, so two
dataframes cannot share one); both runs share a run id and update the same Data Docs site on disk.
A failed gate does not raise here: the caller checks :attr:`QualityReport.passed` and raises
:class:`GateFailed` itself.

GX and pandas are imported inside :func:`validate` so this module stays cheap to import. The release
suite itself is built from the spec by ``quality.release.release_checks``.
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
class Check:
    """One expectation of the release suite: on which batch, which GX expectation (snake-case name, as
    in the spec and GX's docs), its arguments, and the human-readable expected value for the report."""

    batch: str  # "documents" (one row per document; validated per shard) | "run_metrics" (one row)
    type: str
    kwargs: dict
    label: str

    def key(self) -> tuple[str, str, Any]:
        return self.batch, self.type, self.kwargs.get("column")


def between(batch: str, column: str, lo: float | None, hi: float | None, label: str | None = None) -> Check:
    kwargs = {"column": column, **({"min_value": lo} if lo is not None else {}), **({"max_value": hi} if hi is not None else {})}
    if label is None:
        label = f"between {lo:g} and {hi:g}" if lo is not None and hi is not None else (f">= {lo:g}" if lo is not None else f"<= {hi:g}")
    return Check(batch, "expect_column_values_to_be_between", kwargs, label)


def user_check(batch: str, name: str, kwargs: dict) -> Check:
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items() if k != "column")
    return Check(batch, name, dict(kwargs), f"{shown} (spec)")


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
        cells = [[format_cell(r[c]) for c in _COLUMNS] for r in rows]
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


def format_cell(value: Any, limit: int = 60) -> str:
    if value is None or isinstance(value, bool):
        return {True: "ok", False: "FAILED", None: "-"}[value]
    if isinstance(value, dict) and "unexpected_count" in value:  # column-map result
        value = f"{value['unexpected_count']}/{value['element_count']} unexpected" + (
            f" in {', '.join(value['failed_shards'])}" if value.get("failed_shards") else "") + (
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


def _build_suites(gx: Any, checks: list[Check], suite_name: str) -> dict[str, tuple[Any, dict]]:
    """Per batch: (suite, {expectation key: [(index of the check in ``checks``, human-readable expectation)]}).
    Results are matched back to their checks by type + arguments (:func:`_key`), not by position: GX
    reorders a stored suite and merges identical expectations (a user's copy of a built-in one), and one
    suite may hold the same type on the same column twice with different arguments."""
    from ..spec.gx_catalog import load

    catalog = load()
    suites: dict[str, tuple[Any, dict]] = {}
    for index, check in enumerate(checks):
        if check.type not in catalog:
            raise ValueError(f"quality gate: {check.type!r} is not a GX expectation")
        if check.batch not in suites:
            suites[check.batch] = (gx.ExpectationSuite(name=f"{suite_name}.{check.batch}"), {})
        suite, labels = suites[check.batch]
        suite.add_expectation(getattr(gx.expectations, catalog[check.type]["class"])(**check.kwargs))
        labels.setdefault(_key(check.type, check.kwargs), []).append((index, check.label))
    return suites


def _key(type_: str, kwargs: dict) -> str:
    """Type + arguments, as GX reports them back (numbers as floats, no batch id)."""
    def norm(v: Any) -> Any:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        if isinstance(v, (int, float)):
            return float(v)
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return str(v)

    return json.dumps([type_, {k: norm(v) for k, v in kwargs.items() if k != "batch_id"}], sort_keys=True)


GX_RESULT_DIRS = ("gx/expectations", "gx/uncommitted/validations")


def gx_result_files(workdir: Path) -> dict[str, bytes]:
    """The suites and validation results of a validate() run (a few KB of JSON): what another run's
    Data Docs need to show it. The rendered site itself (~4 MB of fonts and images) is not included."""
    workdir = Path(workdir)
    return {str(p.relative_to(workdir)): p.read_bytes() for d in GX_RESULT_DIRS for p in sorted((workdir / d).rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def validate(frames: dict[str, pd.DataFrame], checks: list[Check], workdir: Path, suite_name: str,
             run_name: str | None = None, include: dict[str, bytes] | None = None, data_docs: bool = True) -> QualityReport:
    """Run ``checks`` on the batches in ``frames`` (one GX Checkpoint per batch, Data Docs under
    ``workdir``); never raises on a failed expectation. Checks of batches not in ``frames`` are skipped.

    ``include``: suites and validation results of other runs (from :func:`gx_result_files`, e.g. one per
    shard), added to the context first, so this run's Data Docs site shows them all. ``data_docs=False``
    skips rendering (for runs whose results are included elsewhere)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    frames = dict(frames)
    docs = frames.get("documents")
    if docs is not None and docs.empty:  # an empty frame may arrive without columns: give it every checked one
        checked = [c.kwargs["column"] for c in checks if c.batch == "documents" and "column" in c.kwargs]
        frames["documents"] = docs.reindex(columns=list(dict.fromkeys([*docs.columns, *DOCUMENT_COLUMNS, *checked])))
    metrics_row = frames["run_metrics"].to_dict("records")[0] if "run_metrics" in frames and len(frames["run_metrics"]) == 1 else {}

    for rel, data in (include or {}).items():
        (workdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (workdir / rel).write_bytes(data)
    context = gx.get_context(mode="file", project_root_dir=workdir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in task logs
    source = context.data_sources.add_or_update_pandas(name=suite_name)
    run_id = RunIdentifier(run_name=run_name or suite_name, run_time=dt.datetime.now(dt.timezone.utc))
    expectations, validation = [], {"success": True, "run_id": run_id.to_json_dict(), "results": {}}
    # One Checkpoint per batch (see module docstring); the shared run_id groups both runs in Data Docs.
    checks = [c for c in checks if c.batch in frames]
    for batch, (suite, labels) in _build_suites(gx, checks, suite_name).items():
        stored = context.suites.add_or_update(suite)
        batch_def = source.add_dataframe_asset(name=batch).add_batch_definition_whole_dataframe(batch)
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=suite.name, data=batch_def, suite=stored)
        )
        checkpoint = context.checkpoints.add_or_update(
            gx.Checkpoint(
                name=suite.name,
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="update_data_docs")] if data_docs and not include else [],
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
                if batch == "run_metrics" and column in metrics_row:  # one row: the value itself says more
                    observed = metrics_row[column]
                fallback = [(None, json.dumps(config["kwargs"], default=str))]
                for index, label in labels.get(_key(config["type"], config["kwargs"]), fallback):
                    expectations.append({
                        "batch": batch,
                        "check": index,
                        "expectation": config["type"],
                        "column": column,
                        "expected": label,
                        "observed": observed,
                        "success": bool(r["success"]),
                    })
    expectations.sort(key=lambda e: (e["check"] is None, e["check"] or 0))  # the suite's order

    if not data_docs:
        return QualityReport(passed=validation["success"] and all(e["success"] for e in expectations),
                             expectations=_jsonable(expectations), validation=_jsonable(validation))
    if include:
        context.build_data_docs()  # the whole site: included results and this run's
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

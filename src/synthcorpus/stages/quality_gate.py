"""quality_gate: the release gate on the whole run. Merges the shard profiles and the stages' stats
into one row of run metrics, validates it against the ``run_metrics`` expectations (GX Core) and
combines it with every shard's ``documents`` expectations into one report.

Reads ``validate_shard`` (running any shard not committed yet), the stats of ``filter_shard``,
``dedup``, ``near_dedup``, ``decontaminate`` and ``top_up`` (its rounds filter, dedup and decontaminate too),
and ``prompts``' diversity report; writes
``quality_gate/report.json``, ``validation.json``, ``report.html``, ``diversity.json``, ``profile.json``, one Data Docs site
(``quality_gate/data_docs/``) and the run's ``lineage.json``. A failed gate keeps a quarantine copy of
the report and raises :class:`GateFailed` -- nothing is committed, nothing can be published -- unless
the DAG param ``override_gate_reason`` gives a reason: then the run may be published and the override
is recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from .. import storage
from .contract import RunContext, StageResult, execute, result, results, shards, stats

NAME = "quality_gate"
# The run metrics' inputs, and (for lineage.json of a failed run) every stage before the gate.
READS = ("validate_shard", "top_up", "filter_shard", "judge", "dedup", "near_dedup", "decontaminate", "prompts", "seeds", "topics",
         "generate", "history")
MAPPED = False
# The release suite (quality.release.release_checks) and the run metrics (run_metrics).
USES: tuple[str, ...] = (
    "name", "prompts.formats", "prompts.audiences", "prompts.languages", "quality.min_words", "quality.max_words",
    "quality.heuristics", "quality.min_documents", "quality.max_filtered_share", "quality.max_filtered_share_by_reason",
    "quality.max_duplicate_rate", "quality.max_contaminated", "quality.decontamination.canaries",
    "quality.min_language_match_rate", "quality.word_quantiles", "quality.max_share", "quality.min_share",
    "quality.max_opening_share", "quality.expectations", "judge.enabled", "judge.thresholds", "judge.gate",
)

log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pandas as pd

    from ..layout import shard_name
    from ..quality.gate import GateFailed, QualityReport, validate
    from ..quality.release import merge_document_results, release_checks, report_html, run_metrics
    from .validate_shard import suite_name

    layout = run.layout
    documents = result(run, "top_up")["outputs"]["documents"]
    for index in shards(run, "validate_shard"):  # normally committed by the mapped validate_shard tasks: a no-op
        execute(run, "validate_shard", index)
    # One dict per shard: its result file (expectations, profile, gx_files), stats (rows, passed) and
    # outputs (validation, source), its index and its name.
    shard_results = [{**storage.read_json(m["outputs"]["result"]), **m["stats"], **m["outputs"], "index": m["shard"],
                      "shard": shard_name(m["shard"])} for m in results(run, "validate_shard")]
    checks = release_checks(run.spec)
    stage_stats = quality_stats(run)
    profiles = [s["profile"] for s in shard_results]
    metrics, openings = run_metrics(run.spec, stage_stats, documents, profiles)
    write_diversity(run, openings)
    write_profile(run, profiles)
    include = {rel: storage.read_bytes(layout.shard_dir("validate_shard", s["index"], rel))
               for s in shard_results for rel in s["gx_files"]}
    docs_dir = layout.output(NAME, "data_docs")
    with tempfile.TemporaryDirectory(prefix="synthcorpus-gx-") as tmp:
        # One Data Docs site for the run: every shard's documents validation and the run metrics.
        corpus = validate({"run_metrics": pd.DataFrame([metrics])}, [c for c in checks if c.batch == "run_metrics"],
                          Path(tmp), suite_name=suite_name(run), run_name="run_metrics", include=include)
        docs_uri, docs_files = _copy_data_docs(corpus, docs_dir)
    expectations = merge_document_results(shard_results, [c for c in checks if c.batch == "documents"]) + corpus.expectations
    report = QualityReport(passed=corpus.passed and all(s["passed"] for s in shard_results), expectations=expectations,
                           validation={"run_metrics": corpus.validation,
                                       "shards": {s["shard"]: s["validation"] for s in shard_results}})
    validation_uri, report_uri, html_uri = (layout.output(NAME, n) for n in ("validation", "report", "report_html"))
    storage.write_json(validation_uri, report.validation)
    summary = {**report.to_dict(), "metrics": metrics, "data_docs": docs_uri,
               "validation_json": validation_uri, "report_html": html_uri,
               "shards": [{k: s[k] for k in ("shard", "source", "rows", "passed")} for s in shard_results],
               "documents": list(documents), "override": None}
    reason = (run.params.get("override_gate_reason") or "").strip()
    if not report.passed and reason:
        summary["override"] = {
            "reason": reason,
            "failed_expectations": [f["expectation"] + (f" ({f['column']})" if f["column"] else "") for f in report.failures()],
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
    storage.write_json(report_uri, summary)
    storage.write_text(html_uri, report_html(run.spec.name, run.run_id, summary, _validation_pages(docs_files)))
    log.info("quality gate %s\n%s", "PASSED" if report.passed else "FAILED", report.table())
    write_run_lineage(run, summary)  # the run is explainable from here on (publish rewrites it; so do approvals)
    if not report.passed:
        # Quarantine: one place listing every run that failed its gate, with its report.
        storage.write_json(layout.quarantine, summary)
        if not reason:
            raise GateFailed(report)
        log.warning("quality gate FAILED but overridden (reason: %s): this run may be published", reason)
    return StageResult(NAME, {"report": report_uri, "data_docs": summary["data_docs"], "documents": list(documents)},
                       {"passed": report.passed, "override": summary["override"], **metrics})


def quality_stats(run: RunContext) -> dict[str, Any]:
    """The stats of the quality stages as the run metrics read them, top-up rounds included: each round's
    filter counts as one more filter shard, its duplicates and contaminated documents add to the stages'."""
    from ..lineage import TOP_UP_REMOVED, quality_counts

    return quality_counts([m["stats"] for m in results(run, "filter_shard")], {s: stats(run, s) for s in TOP_UP_REMOVED},
                          stats(run, "top_up").get("round_stats", []))


def _copy_data_docs(report: Any, docs_uri: str) -> tuple[str | None, list[str]]:
    """Copy the rendered Data Docs site into the run; returns its index URI and the files copied
    (relative to the site)."""
    if report.data_docs_dir is None:
        return None, []
    copied = []
    for path in sorted(Path(report.data_docs_dir).rglob("*")):
        if path.is_file():
            rel = path.relative_to(report.data_docs_dir).as_posix()
            storage.write_bytes(storage.join(docs_uri, rel), path.read_bytes())
            copied.append(rel)
    return storage.join(docs_uri, "index.html"), copied


def _validation_pages(site_files: list[str]) -> dict[str, str]:
    """Link text -> link (relative to report.html, which sits beside the site folder) of every
    validation page of the Data Docs site. GX names them validations/<suite>/<run name>/<time>/<batch>.html."""
    from ..layout import OUTPUTS

    folder = OUTPUTS[NAME]["data_docs"]
    return {"/".join(rel.split("/")[1:-2]): f"{folder}/{rel}" for rel in site_files
            if rel.startswith("validations/") and rel.endswith(".html") and rel.count("/") >= 3}


def write_profile(run: RunContext, profiles: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's distributions (documents per format, audience, topic and language; the word-count
    histogram) merged from the shard profiles: what the run page charts without reading a document."""
    from ..quality.release import distributions

    profile = distributions(profiles)
    storage.write_json(run.layout.output(NAME, "profile"), profile)
    return profile


def write_diversity(run: RunContext, openings: Counter[str]) -> dict[str, Any]:
    """The run's diversity report: the prompt plan's (written by the prompts stage) plus document openings."""
    from ..quality.diversity import opening_report_from_counts

    prompts = result(run, "prompts", required=False).get("outputs", {}).get("diversity")
    report = {
        "prompts": storage.read_json(prompts) if prompts and storage.exists(prompts) else None,
        "openings": opening_report_from_counts(openings),
    }
    storage.write_json(run.layout.output(NAME, "diversity"), report)
    return report


def write_run_lineage(run: RunContext, gate: dict[str, Any] | None) -> dict[str, Any]:
    """The run's ``lineage.json``, built from every stage's committed results (and the approval's state)."""
    from ..lineage import LINEAGE_STAGES, build_lineage
    from .approval import state

    diversity_uri = run.layout.output(NAME, "diversity")
    lineage = build_lineage(
        run.spec, run.run_id, {s: results(run, s, required=False) for s in LINEAGE_STAGES}, gate,
        storage.read_json(diversity_uri) if storage.exists(diversity_uri) else None,
        approval=state(run),
    )
    storage.write_json(run.layout.lineage, lineage)
    return lineage

"""The release gate as a stage: gather the run's documents and metrics, run the GX suite, keep the
validation JSON and Data Docs with the run, and refuse (GateFailed) when an expectation fails."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from . import storage
from .diversity import opening_report
from .lineage import write_run_lineage
from .quality.gate import GateFailed, GateThresholds, run_quality_gate
from .run import RunContext, StageResult
from .spec import GATE_COLUMNS

log = logging.getLogger(__name__)


def run_metrics(run: RunContext, documents: int, openings: dict[str, Any]) -> dict[str, Any]:
    markers = [storage.read_json(u) for u in storage.list_files(run.run_uri("filter")) if u.endswith(".commit.json")]
    generated = sum(m.get("input", 0) for m in markers)
    matched = checked = 0
    for m in markers:
        for want, got in m.get("language_confusion", {}).items():
            matched += got.get(want, 0)
            checked += sum(got.values())
    decontam_uri = run.run_uri("decontam", "_stage.json")
    decontam = storage.read_json(decontam_uri)["stats"] if storage.exists(decontam_uri) else {}
    return {
        "generated": generated,
        "documents": documents,
        "filtered_share": round(1 - documents / generated, 6) if generated else 1.0,
        "max_opening_share": openings["max_opening_share"],
        "contaminated": decontam.get("removed", 0),
        "canaries_missed": len(decontam.get("canaries_missed", [])),
        "language_match_rate": round(matched / checked, 6) if checked else 1.0,
    }


def write_diversity(run: RunContext, texts: list[str]) -> dict[str, Any]:
    """The run's diversity report: the prompt plan's (written by the prompts stage) plus document openings."""
    prompts_uri = run.run_uri("prompts", "diversity.json")
    report = {
        "prompts": storage.read_json(prompts_uri) if storage.exists(prompts_uri) else None,
        "openings": opening_report(texts),
    }
    storage.write_json(run.run_uri("diversity.json"), report)
    return report


def quality_gate(run: RunContext, document_uris: list[str], override_reason: str | None = None) -> StageResult:
    """Validate the run; on failure keep a quarantine copy of the report and raise GateFailed, unless an
    explicit override reason is given: then the run may be published and the override is recorded."""
    import datetime as dt

    import pandas as pd

    frames = [storage.read_parquet(u).to_pandas() for u in document_uris]
    frames = [f[[c for c in GATE_COLUMNS["documents"] if c in f.columns]] for f in frames if len(f)]
    docs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        {"text": pd.Series([], dtype=object), "n_words": pd.Series([], dtype="int64"), "text_hash": pd.Series([], dtype=object)}
    )
    diversity = write_diversity(run, docs["text"].tolist())
    metrics = run_metrics(run, len(docs), diversity["openings"])
    q = run.spec.quality
    thresholds = GateThresholds(
        min_documents=q.min_documents, max_filtered_share=q.max_filtered_share, min_words=q.min_words,
        max_words=q.max_words, max_opening_share=q.max_opening_share,
        check_canaries=bool(q.decontamination and q.decontamination.canaries),
        min_language_match_rate=q.min_language_match_rate,
        extra=tuple((e.batch, e.type, dict(e.kwargs)) for e in q.expectations),
    )
    with tempfile.TemporaryDirectory(prefix="synthcorpus-gx-") as tmp:
        report = run_quality_gate(docs, metrics, thresholds, Path(tmp), suite_name=f"{run.spec.name}_release")
        docs_uri = run.run_uri("gate", "data_docs")
        if report.data_docs_dir is not None:
            for path in sorted(Path(report.data_docs_dir).rglob("*")):
                if path.is_file():
                    storage.write_bytes(storage.join(docs_uri, str(path.relative_to(report.data_docs_dir))), path.read_bytes())
    storage.write_json(run.run_uri("gate", "validation.json"), report.validation)
    summary = {**report.to_dict(), "metrics": metrics, "data_docs": storage.join(docs_uri, "index.html"),
               "documents": list(document_uris), "override": None}
    reason = (override_reason or "").strip()
    if not report.passed and reason:
        summary["override"] = {
            "reason": reason,
            "failed_expectations": [f["expectation"] + (f" ({f['column']})" if f["column"] else "") for f in report.failures()],
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
    storage.write_json(run.run_uri("gate", "report.json"), summary)
    log.info("quality gate %s\n%s", "PASSED" if report.passed else "FAILED", report.table())
    if not report.passed:
        # Quarantine: one place listing every run that failed its gate, with its report.
        storage.write_json(storage.join(run.corpus_uri, "quarantine", f"{run.run_id}.json"), summary)
        write_run_lineage(run, summary)  # the failed run stays explainable
        if not reason:
            raise GateFailed(report)
        log.warning("quality gate FAILED but overridden (reason: %s): this run may be published", reason)
    return StageResult("gate", {"report": run.run_uri("gate", "report.json"), "data_docs": summary["data_docs"]},
                       {"passed": report.passed, "override": summary["override"], **metrics}).save(run)

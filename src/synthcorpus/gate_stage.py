"""The release gate as two stages, so it scales with the corpus and never holds it in memory.

1. ``validate_shard`` (mapped, one task per document shard): the ``documents`` expectations of the
   suite (GX Core) on one shard, with its validation JSON and GX result files kept under
   ``gate/shards/shard-XXXXX/`` (rendered into the run's one Data Docs site by the gate), plus a small *profile* of the shard (row count, counts per format,
   audience, topic and language, the histogram of word counts, opening counts).
2. ``quality_gate`` (one task): merges the profiles and the stage stats (filter reasons, exact and
   near duplicates, decontamination) into one row of run metrics, validates it against the
   ``run_metrics`` expectations, and combines both into one report. A failed gate keeps a quarantine
   copy of the report and raises :class:`GateFailed` — unless an explicit override reason is given;
   then the run may be published and the override is recorded.

The suite is generated from the spec by :func:`release_checks`: fixed expectations, the thresholds
the spec sets, and the spec's own GX expectations.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from . import storage
from .diversity import opening, opening_report_from_counts
from .lineage import write_run_lineage
from .quality.gate import Check, GateFailed, QualityReport, between, gx_result_files, user_check, validate
from .run import RunContext, StageResult
from .spec import BALANCE_DIMENSIONS, GATE_COLUMNS, WORD_QUANTILES, CorpusSpec

log = logging.getLogger(__name__)

PROFILE_BATCH = 2048


# ------------------------------------------------------------------------------------------ the suite


def release_checks(spec: CorpusSpec) -> list[Check]:
    """The release suite of a corpus, generated from its spec (see README, "Gate")."""
    q = spec.quality
    p = spec.prompts
    docs = [
        Check("documents", "expect_column_values_to_not_be_null", {"column": "text"}, "not null"),
        between("documents", "n_words", q.min_words, q.max_words),
        Check("documents", "expect_column_values_to_be_unique", {"column": "text_hash"}, "unique"),
        Check("documents", "expect_column_values_to_be_in_set", {"column": "language", "value_set": list(p.languages)},
              f"in {list(p.languages)}"),
        Check("documents", "expect_column_values_to_be_in_set", {"column": "format", "value_set": list(p.formats)},
              f"in {list(p.formats)}"),
        Check("documents", "expect_column_values_to_be_in_set", {"column": "audience", "value_set": list(p.audiences)},
              f"in {list(p.audiences)}"),
    ]
    metrics = [
        between("run_metrics", "documents", q.min_documents, None),
        between("run_metrics", "filtered_share", 0, q.max_filtered_share),
        between("run_metrics", "duplicate_text_hashes", 0, 0, "0 (exact dedup ran)"),
    ]
    for reason, limit in sorted(q.max_filtered_share_by_reason.items()):
        metrics.append(between("run_metrics", f"filtered_share_{reason}", 0, limit))
    if q.max_duplicate_rate is not None:
        metrics.append(between("run_metrics", "duplicate_rate", 0, q.max_duplicate_rate))
    if q.max_contaminated is not None:
        metrics.append(between("run_metrics", "contaminated", 0, q.max_contaminated))
    if q.decontamination and q.decontamination.canaries:
        metrics.append(between("run_metrics", "canaries_missed", 0, 0, "0 (all caught)"))
    if q.min_language_match_rate is not None:
        metrics.append(between("run_metrics", "language_match_rate", q.min_language_match_rate, 1))
    for name, bounds in sorted(q.word_quantiles.items()):
        metrics.append(between("run_metrics", f"n_words_{name}", bounds.min, bounds.max))
    for dim, limit in sorted(q.max_share.items()):
        metrics.append(between("run_metrics", f"{dim}_max_share", 0, limit))
    for dim, limit in sorted(q.min_share.items()):
        metrics.append(between("run_metrics", f"{dim}_min_share", limit, 1))
    if q.max_opening_share is not None:
        metrics.append(between("run_metrics", "max_opening_share", 0, q.max_opening_share))
    users = [user_check(e.batch, e.type, dict(e.kwargs)) for e in q.expectations]
    return docs + metrics + users


# --------------------------------------------------------------------------------- stage 1: per shard


def _shard_name(document_uri: str) -> str:
    return document_uri.rsplit("/", 1)[-1].removesuffix(".parquet")


def profile_batches(batches: Iterable[Any]) -> dict[str, Any]:
    """Counts a shard contributes to the run metrics; merging profiles never needs the documents."""
    rows = 0
    counts: dict[str, Counter[str]] = {d: Counter() for d in BALANCE_DIMENSIONS}
    words: Counter[int] = Counter()
    openings: Counter[str] = Counter()
    for batch in batches:
        rows += batch.num_rows
        names = batch.schema.names
        for dim in BALANCE_DIMENSIONS:
            if dim in names:
                counts[dim].update(str(v) for v in batch.column(dim).to_pylist())
        if "n_words" in names:
            words.update(int(v) for v in batch.column("n_words").to_pylist() if v is not None)
        if "text" in names:
            openings.update(opening(t) for t in batch.column("text").to_pylist() if t and t.strip())
    return {
        "rows": rows,
        "counts": {d: dict(c) for d, c in counts.items()},
        "n_words": {str(k): v for k, v in sorted(words.items())},
        "openings": dict(openings),
    }


def validate_shard(run: RunContext, document_uri: str) -> dict[str, Any]:
    """The ``documents`` expectations on one shard + its profile -> ``gate/shards/<shard>.json``.
    Idempotent: a result for the same shard file is reused."""
    name = _shard_name(document_uri)
    out_uri = run.run_uri("gate", "shards", f"{name}.json")
    if storage.exists(out_uri):
        done = storage.read_json(out_uri)
        if done.get("source") == document_uri:
            return done
    checks = [c for c in release_checks(run.spec) if c.batch == "documents"]
    # One shard is bounded by the shard plan: read once, profiled batch by batch, validated by GX as one
    # pandas batch.
    table = storage.read_parquet(document_uri)
    table = table.select([c for c in GATE_COLUMNS["documents"] if c in table.column_names])
    profile = profile_batches(table.to_batches(max_chunksize=PROFILE_BATCH))
    frame = table.to_pandas()
    del table
    with tempfile.TemporaryDirectory(prefix="synthcorpus-gx-") as tmp:
        # Rendered once for the whole run by quality_gate, from the result files kept here.
        report = validate({"documents": frame}, checks, Path(tmp), suite_name=_suite(run), run_name=name, data_docs=False)
        gx_files = []
        for rel, data in gx_result_files(Path(tmp)).items():
            storage.write_bytes(run.run_uri("gate", "shards", name, rel), data)
            gx_files.append(rel)
    storage.write_json(run.run_uri("gate", "shards", name, "validation.json"), report.validation)
    result = {"source": document_uri, "shard": name, "passed": report.passed, "rows": profile["rows"],
              "expectations": report.expectations, "gx_files": gx_files, "profile": profile}
    storage.write_json(out_uri, result)
    log.info("shard %s: documents expectations %s (%d rows)\n%s", name, "passed" if report.passed else "FAILED",
             profile["rows"], report.table())
    return result


def _suite(run: RunContext) -> str:
    return f"{run.spec.name}_release"


def _copy_data_docs(report: QualityReport, docs_uri: str) -> str | None:
    if report.data_docs_dir is None:
        return None
    for path in sorted(Path(report.data_docs_dir).rglob("*")):
        if path.is_file():
            storage.write_bytes(storage.join(docs_uri, str(path.relative_to(report.data_docs_dir))), path.read_bytes())
    return storage.join(docs_uri, "index.html")


# ------------------------------------------------------------------------------- stage 2: run metrics


def _stage_stats(run: RunContext, stage: str) -> dict[str, Any]:
    uri = run.run_uri(stage, "_stage.json")
    return storage.read_json(uri)["stats"] if storage.exists(uri) else {}


def _quantile(hist: Counter[int], q: float) -> float:
    """The q-quantile of a histogram (lower value at ties, like numpy's 'lower'); 0 when empty."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank, seen = q * (total - 1), 0
    for value in sorted(hist):
        seen += hist[value]
        if seen > rank:
            return float(value)
    return float(max(hist))


def _residual_duplicates(document_uris: list[str]) -> int:
    """Documents whose text hash repeats across the whole run (should be 0 after exact dedup): reads
    only the hash column, 8 bytes per document."""
    import numpy as np

    parts = []
    for uri in document_uris:
        for batch in storage.iter_batches(uri, ["text_hash"], 65536):
            if "text_hash" in batch.schema.names:
                parts.append(np.array([int(h[:16], 16) for h in batch.column("text_hash").to_pylist() if h], np.uint64))
    if not parts:
        return 0
    hashes = np.concatenate(parts)
    return int(len(hashes) - len(np.unique(hashes)))


def run_metrics(run: RunContext, document_uris: list[str], profiles: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter[str]]:
    """One row of run-level metrics (what the ``run_metrics`` expectations check) and the merged opening counts."""
    from .quality.filters import reason_names

    markers = [storage.read_json(u) for u in storage.list_files(run.run_uri("filter")) if u.endswith(".commit.json")]
    generated = sum(m.get("input", 0) for m in markers)
    filter_kept = sum(m.get("kept", 0) for m in markers)
    reasons: Counter[str] = Counter()
    matched = checked = 0
    for m in markers:
        reasons.update(m.get("reasons", {}))
        for want, got in m.get("language_confusion", {}).items():
            matched += got.get(want, 0)
            checked += sum(got.values())
    documents = sum(p["rows"] for p in profiles)
    exact = _stage_stats(run, "dedup").get("removed", 0)
    near = _stage_stats(run, "near_dedup").get("removed", 0)
    decontam = _stage_stats(run, "decontam")
    words: Counter[int] = Counter()
    openings: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {d: Counter() for d in BALANCE_DIMENSIONS}
    for p in profiles:
        words.update({int(k): v for k, v in p["n_words"].items()})
        openings.update(p["openings"])
        for d in BALANCE_DIMENSIONS:
            counts[d].update(p["counts"].get(d, {}))
    share = lambda n, d: round(n / d, 6) if d else 0.0  # noqa: E731
    metrics: dict[str, Any] = {
        "generated": generated,
        "documents": documents,
        "filtered_share": round(1 - documents / generated, 6) if generated else 1.0,
        **{f"filtered_share_{r}": share(reasons.get(r, 0), generated) for r in reason_names(run.spec.quality.heuristics)},
        "exact_duplicates": exact,
        "near_duplicates": near,
        "duplicate_rate": share(exact + near, filter_kept),
        "duplicate_text_hashes": _residual_duplicates(document_uris),
        "contaminated": decontam.get("removed", 0),
        "canaries_missed": len(decontam.get("canaries_missed", [])),
        "language_match_rate": round(matched / checked, 6) if checked else 1.0,
        **{f"n_words_{name}": _quantile(words, q) for name, q in WORD_QUANTILES.items()},
        "max_opening_share": opening_report_from_counts(openings)["max_opening_share"],
    }
    expected = {"format": run.spec.prompts.formats, "audience": run.spec.prompts.audiences,
                "language": run.spec.prompts.languages}
    for d in BALANCE_DIMENSIONS:
        c = counts[d]
        values = [c.get(v, 0) for v in expected[d]] if d in expected else list(c.values())
        metrics[f"{d}_max_share"] = share(max(values, default=0), documents)
        metrics[f"{d}_min_share"] = share(min(values, default=0), documents)
    return metrics, openings


def write_diversity(run: RunContext, openings: Counter[str]) -> dict[str, Any]:
    """The run's diversity report: the prompt plan's (written by the prompts stage) plus document openings."""
    prompts_uri = run.run_uri("prompts", "diversity.json")
    report = {
        "prompts": storage.read_json(prompts_uri) if storage.exists(prompts_uri) else None,
        "openings": opening_report_from_counts(openings),
    }
    storage.write_json(run.run_uri("diversity.json"), report)
    return report


def _merge_document_results(shards: list[dict[str, Any]], checks: list[Check]) -> list[dict[str, Any]]:
    """One line per ``documents`` expectation for the whole run: failed if any shard failed it, with the
    unexpected counts summed and the failing shards named."""
    merged = []
    for index, check in enumerate(checks):
        column = check.kwargs.get("column")
        lines = [(s["shard"], e) for s in shards for e in s["expectations"] if e["check"] == index]
        failed = [name for name, e in lines if not e["success"]]
        unexpected = sum(e["observed"].get("unexpected_count") or 0 for _, e in lines if isinstance(e["observed"], dict))
        examples = [x for _, e in lines if isinstance(e["observed"], dict) for x in e["observed"].get("unexpected_examples") or []]
        errors = [e["observed"]["error"] for _, e in lines if isinstance(e["observed"], dict) and "error" in e["observed"]]
        observed: Any = {"unexpected_count": unexpected, "element_count": sum(s["rows"] for s in shards),
                         "unexpected_examples": list(dict.fromkeys(examples))[:5]}
        if errors:
            observed = {"error": "; ".join(dict.fromkeys(errors))[:200]}
        if failed:
            observed["failed_shards"] = failed
        merged.append({"batch": "documents", "check": index, "expectation": check.type, "column": column, "expected": check.label,
                       "observed": observed, "success": not failed})
    return merged


def report_html(run: RunContext, summary: dict[str, Any]) -> str:
    """The gate report as one self-contained HTML page (GX's Data Docs index needs JavaScript from a CDN
    to list its validations; this page reads offline), linking each shard's and the run's Data Docs page."""
    from html import escape

    from .quality.gate import format_cell

    pages = [u for u in storage.list_files(run.run_uri("gate", "data_docs", "validations")) if u.endswith(".html")]
    links = "".join(f'<li><a href="data_docs/{escape(u.split("/gate/data_docs/", 1)[1])}">'
                    f'{escape(u.split("/validations/", 1)[1].rsplit("/", 2)[0])}</a></li>' for u in pages)
    rows = "".join(
        f'<tr class="{"ok" if e["success"] else "failed"}"><td>{escape(e["batch"])}</td><td>{escape(e["expectation"])}</td>'
        f'<td>{escape(str(e["column"] or ""))}</td><td>{escape(str(e["expected"]))}</td>'
        f'<td>{escape(format_cell(e["observed"], limit=200))}</td><td>{"ok" if e["success"] else "FAILED"}</td></tr>'
        for e in summary["expectations"])
    metrics = "".join(f"<tr><td>{escape(k)}</td><td>{escape(str(v))}</td></tr>" for k, v in summary["metrics"].items())
    override = (f"<p><b>Published by override:</b> {escape(summary['override']['reason'])}</p>"
                if summary.get("override") else "")
    status = "PASSED" if summary["passed"] else "FAILED"
    c = summary["counts"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(run.spec.name)} {escape(run.run_id)}: gate {status}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.failed td{{background:#fde2e2}}tr.ok td:last-child{{color:#1a7f37}}</style></head><body>
<h1>Quality gate {status}: {escape(run.spec.name)} / {escape(run.run_id)}</h1>
<p>{c["successful"]} of {c["evaluated"]} expectations met; {len(summary["shards"])} document shards validated, then the run metrics.</p>{override}
<table><tr><th>batch</th><th>expectation</th><th>column</th><th>expected</th><th>observed</th><th>result</th></tr>{rows}</table>
<h2>Run metrics</h2><table>{metrics}</table>
<h2>Great Expectations Data Docs</h2><ul>{links}</ul><p><a href="data_docs/index.html">Data Docs index</a></p>
</body></html>
"""


def quality_gate(run: RunContext, document_uris: list[str], override_reason: str | None = None) -> StageResult:
    """Validate the run (per shard, then run metrics); on failure keep a quarantine copy of the report
    and raise GateFailed, unless an explicit override reason is given: then the run may be published
    and the override is recorded."""
    import pandas as pd

    document_uris = sorted(document_uris)
    # Normally done by the mapped validate_shard tasks already; reused from storage then.
    shards = [validate_shard(run, uri) for uri in document_uris]
    checks = release_checks(run.spec)
    metrics, openings = run_metrics(run, document_uris, [s["profile"] for s in shards])
    write_diversity(run, openings)
    include = {rel: storage.read_bytes(run.run_uri("gate", "shards", s["shard"], rel)) for s in shards for rel in s["gx_files"]}
    with tempfile.TemporaryDirectory(prefix="synthcorpus-gx-") as tmp:
        # One Data Docs site for the run: every shard's documents validation and the run metrics.
        corpus = validate({"run_metrics": pd.DataFrame([metrics])}, [c for c in checks if c.batch == "run_metrics"],
                          Path(tmp), suite_name=_suite(run), run_name="run_metrics", include=include)
        docs_uri = _copy_data_docs(corpus, run.run_uri("gate", "data_docs"))
    expectations = _merge_document_results(shards, [c for c in checks if c.batch == "documents"]) + corpus.expectations
    report = QualityReport(passed=corpus.passed and all(s["passed"] for s in shards), expectations=expectations,
                           validation={"run_metrics": corpus.validation,
                                       "shards": {s["shard"]: run.run_uri("gate", "shards", s["shard"], "validation.json")
                                                  for s in shards}})
    storage.write_json(run.run_uri("gate", "validation.json"), report.validation)
    summary = {**report.to_dict(), "metrics": metrics, "data_docs": docs_uri,
               "validation_json": run.run_uri("gate", "validation.json"), "report_html": run.run_uri("gate", "report.html"),
               "shards": [{k: s[k] for k in ("shard", "source", "rows", "passed")} for s in shards],
               "documents": list(document_uris), "override": None}
    reason = (override_reason or "").strip()
    if not report.passed and reason:
        summary["override"] = {
            "reason": reason,
            "failed_expectations": [f["expectation"] + (f" ({f['column']})" if f["column"] else "") for f in report.failures()],
            "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
    storage.write_json(run.run_uri("gate", "report.json"), summary)
    storage.write_text(run.run_uri("gate", "report.html"), report_html(run, summary))
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

"""The release suite and its run-level metrics: what the gate checks, computed from the spec, the
stages' stats and per-shard profiles (never the documents themselves). Plain functions, no run
layout: the ``validate_shard`` and ``quality_gate`` stages do the I/O; the GX adapter is
:mod:`synthcorpus.quality.gate`.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable

from .. import storage
from ..spec import BALANCE_DIMENSIONS, WORD_QUANTILES
from .diversity import opening, opening_report_from_counts
from .gate import Check, between, user_check

if TYPE_CHECKING:
    from ..spec import CorpusSpec


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


def merge_profiles(profiles: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The shards' profiles (see :func:`profile_batches`) summed: rows, counts per balance dimension,
    the word-count histogram (int keys) and the opening counts, as Counters."""
    rows = 0
    words: Counter[int] = Counter()
    openings: Counter[str] = Counter()
    counts: dict[str, Counter[str]] = {d: Counter() for d in BALANCE_DIMENSIONS}
    for p in profiles:
        rows += p["rows"]
        words.update({int(k): v for k, v in p["n_words"].items()})
        openings.update(p.get("openings", {}))
        for d in BALANCE_DIMENSIONS:
            counts[d].update(p["counts"].get(d, {}))
    return {"rows": rows, "counts": counts, "n_words": words, "openings": openings}


def distributions(profiles: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The merged profiles as JSON: rows, documents per value of each balance dimension (most common
    first) and the word-count histogram; no openings (the diversity report keeps the top ones)."""
    merged = merge_profiles(profiles)
    return {"rows": merged["rows"], "counts": {d: dict(c.most_common()) for d, c in merged["counts"].items()},
            "n_words": {str(k): v for k, v in sorted(merged["n_words"].items())}}


def quantile(hist: Counter[int], q: float) -> float:
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


def residual_duplicates(document_uris: list[str]) -> int:
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


def run_metrics(spec: CorpusSpec, stage_stats: dict[str, Any], document_uris: list[str],
                profiles: list[dict[str, Any]]) -> tuple[dict[str, Any], Counter[str]]:
    """One row of run-level metrics (what the ``run_metrics`` expectations check) and the merged opening
    counts. ``stage_stats``: the stats of the ``filter_shard`` shards (a list), ``dedup``, ``near_dedup``
    and ``decontaminate``, as their markers carry them. Prompts the run's budget left ungenerated are
    neither generated nor filtered: they count in ``not_generated`` only."""
    from .filters import not_generated_rows, reason_names

    markers = stage_stats["filter_shard"]
    not_generated = sum(not_generated_rows(m) for m in markers)
    generated = sum(m.get("input", 0) for m in markers) - not_generated
    filter_kept = sum(m.get("kept", 0) for m in markers)
    reasons: Counter[str] = Counter()
    matched = checked = 0
    for m in markers:
        reasons.update(m.get("reasons", {}))
        for want, got in m.get("language_confusion", {}).items():
            matched += got.get(want, 0)
            checked += sum(got.values())
    merged = merge_profiles(profiles)
    documents, words, openings, counts = merged["rows"], merged["n_words"], merged["openings"], merged["counts"]
    exact = stage_stats["dedup"].get("removed", 0)
    near = stage_stats["near_dedup"].get("removed", 0)
    decontam = stage_stats["decontaminate"]
    share = lambda n, d: round(n / d, 6) if d else 0.0  # noqa: E731
    metrics: dict[str, Any] = {
        "generated": generated,
        "not_generated": not_generated,
        "documents": documents,
        "filtered_share": round(1 - documents / generated, 6) if generated else 1.0,
        **{f"filtered_share_{r}": share(reasons.get(r, 0), generated) for r in reason_names(spec.quality.heuristics)},
        "exact_duplicates": exact,
        "near_duplicates": near,
        "duplicate_rate": share(exact + near, filter_kept),
        "duplicate_text_hashes": residual_duplicates(document_uris),
        "contaminated": decontam.get("removed", 0),
        "canaries_missed": len(decontam.get("canaries_missed", [])),
        "language_match_rate": round(matched / checked, 6) if checked else 1.0,
        **{f"n_words_{name}": quantile(words, q) for name, q in WORD_QUANTILES.items()},
        "max_opening_share": opening_report_from_counts(openings)["max_opening_share"],
    }
    expected = {"format": spec.prompts.formats, "audience": spec.prompts.audiences,
                "language": spec.prompts.languages}
    for d in BALANCE_DIMENSIONS:
        c = counts[d]
        values = [c.get(v, 0) for v in expected[d]] if d in expected else list(c.values())
        metrics[f"{d}_max_share"] = share(max(values, default=0), documents)
        metrics[f"{d}_min_share"] = share(min(values, default=0), documents)
    return metrics, openings


def merge_document_results(shards: list[dict[str, Any]], checks: list[Check]) -> list[dict[str, Any]]:
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


def report_html(corpus: str, run_id: str, summary: dict[str, Any], pages: dict[str, str]) -> str:
    """The gate report as one self-contained HTML page (GX's Data Docs index needs JavaScript from a CDN
    to list its validations; this page reads offline), linking each shard's and the run's Data Docs page.
    ``pages``: link text -> path relative to the page."""
    from html import escape

    from .gate import format_cell

    links = "".join(f'<li><a href="{escape(rel)}">{escape(name)}</a></li>' for name, rel in pages.items())
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
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(corpus)} {escape(run_id)}: gate {status}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
tr.failed td{{background:#fde2e2}}tr.ok td:last-child{{color:#1a7f37}}</style></head><body>
<h1>Quality gate {status}: {escape(corpus)} / {escape(run_id)}</h1>
<p>{c["successful"]} of {c["evaluated"]} expectations met; {len(summary["shards"])} document shards validated, then the run metrics.</p>{override}
<table><tr><th>batch</th><th>expectation</th><th>column</th><th>expected</th><th>observed</th><th>result</th></tr>{rows}</table>
<h2>Run metrics</h2><table>{metrics}</table>
<h2>Great Expectations Data Docs</h2><ul>{links}</ul><p><a href="data_docs/index.html">Data Docs index</a></p>
</body></html>
"""

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
from ..spec.judge import DIMENSIONS, SCORE_MAX
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
    return docs + metrics + judge_checks(spec) + users


def judge_checks(spec: CorpusSpec) -> list[Check]:
    """The gate's expectations on the judge's scores (``judge.gate``), when the judge is on."""
    j = spec.judge
    if not j.enabled:
        return []
    g = j.gate
    checks: list[Check] = []
    if g.max_unscored_share is not None:
        checks.append(between("run_metrics", "judge_unscored_share", 0, g.max_unscored_share))
    # A metric of no scored document is null, and GX passes null values: each gated metric must also exist,
    # so a judge that scored nothing fails the gate instead of passing it.
    def scored(column: str) -> Check:
        return Check("run_metrics", "expect_column_values_to_not_be_null", {"column": column}, "not null (documents scored)")

    for d, v in sorted(g.min_mean.items()):
        checks += [scored(f"score_{d}_mean"), between("run_metrics", f"score_{d}_mean", v, SCORE_MAX)]
        for group in g.by:  # a group none of whose documents was scored has nothing to check (null)
            for value in (spec.prompts.formats if group == "format" else spec.prompts.audiences):
                checks.append(between("run_metrics", f"score_{d}_mean_{group}_{value}", v, SCORE_MAX))
    for d, v in sorted(g.min_p25.items()):
        checks += [scored(f"score_{d}_p25"), between("run_metrics", f"score_{d}_p25", v, SCORE_MAX)]
    for d, v in sorted(g.max_share_below.items()):
        checks += [scored(f"score_{d}_below_share"), between("run_metrics", f"score_{d}_below_share", 0, v)]
    return checks


def profile_batches(batches: Iterable[Any]) -> dict[str, Any]:
    """Counts a shard contributes to the run metrics; merging profiles never needs the documents."""
    rows = 0
    counts: dict[str, Counter[str]] = {d: Counter() for d in BALANCE_DIMENSIONS}
    words: Counter[int] = Counter()
    openings: Counter[str] = Counter()
    scores = _empty_scores()
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
        if "judge_status" in names:
            _profile_scores(batch, scores)
    out = {
        "rows": rows,
        "counts": {d: dict(c) for d, c in counts.items()},
        "n_words": {str(k): v for k, v in sorted(words.items())},
        "openings": dict(openings),
    }
    if scores["rows"]:
        out["scores"] = scores
    return out


def _empty_scores() -> dict[str, Any]:
    """The judge's scores of a shard's documents: a 0-5 histogram per dimension, overall and per format and
    audience (``{group: {value: {dimension: histogram}}}``), and how many documents are unscored."""
    return {"rows": 0, "unscored": 0, "hist": {d: [0] * (SCORE_MAX + 1) for d in DIMENSIONS},
            "by": {"format": {}, "audience": {}}}


def _profile_scores(batch: Any, scores: dict[str, Any]) -> None:
    cols = {c: batch.column(c).to_pylist() for c in ("judge_status", "format", "audience", *(f"score_{d}" for d in DIMENSIONS))
            if c in batch.schema.names}
    for i, status in enumerate(cols["judge_status"]):
        scores["rows"] += 1
        if status != "scored":
            scores["unscored"] += 1
            continue
        for d in DIMENSIONS:
            value = cols[f"score_{d}"][i]
            scores["hist"][d][value] += 1
            for group in ("format", "audience"):
                key = str(cols.get(group, [None] * (i + 1))[i])
                slot = scores["by"][group].setdefault(key, {x: [0] * (SCORE_MAX + 1) for x in DIMENSIONS})
                slot[d][value] += 1


def merge_scores(profiles: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The shards' score profiles summed (None when no shard was judged)."""
    out, found = _empty_scores(), False
    for p in profiles:
        s = p.get("scores")
        if not s:
            continue
        found = True
        out["rows"] += s["rows"]
        out["unscored"] += s["unscored"]
        for d in DIMENSIONS:
            out["hist"][d] = [a + b for a, b in zip(out["hist"][d], s["hist"][d])]
        for group, values in s["by"].items():
            for key, hists in values.items():
                slot = out["by"][group].setdefault(key, {x: [0] * (SCORE_MAX + 1) for x in DIMENSIONS})
                for d in DIMENSIONS:
                    slot[d] = [a + b for a, b in zip(slot[d], hists[d])]
    return out if found else None


def hist_mean(hist: list[int]) -> float | None:
    """The mean score of a 0..SCORE_MAX histogram (None when it counts nothing), to 4 decimals."""
    n = sum(hist)
    return round(sum(v * c for v, c in enumerate(hist)) / n, 4) if n else None


def score_metrics(spec: CorpusSpec, scores: dict[str, Any] | None) -> dict[str, Any]:
    """The judge's run metrics: per dimension the mean, p25 and p50 and the share below its threshold;
    the share unscored; the mean per format and per audience (``score_<dim>_mean_<group>_<value>``)."""
    if not spec.judge.enabled:
        return {}
    scores = scores or _empty_scores()  # on, but no document reached the judge: every metric null
    groups = {"format": spec.prompts.formats, "audience": spec.prompts.audiences}
    out: dict[str, Any] = {"judged": scores["rows"], "judge_unscored": scores["unscored"],
                           "judge_unscored_share": round(scores["unscored"] / scores["rows"], 6) if scores["rows"] else 0.0}
    for d in DIMENSIONS:
        hist = Counter({v: c for v, c in enumerate(scores["hist"][d]) if c})
        n = sum(hist.values())
        out[f"score_{d}_mean"] = hist_mean(scores["hist"][d])
        out[f"score_{d}_p25"] = quantile(hist, 0.25) if n else None
        out[f"score_{d}_p50"] = quantile(hist, 0.5) if n else None
        if d in spec.judge.thresholds:
            t = spec.judge.thresholds[d]
            out[f"score_{d}_below_share"] = round(sum(c for v, c in hist.items() if v < t) / n, 6) if n else None
        for group, values in sorted(scores["by"].items()):
            for key in sorted({*values, *groups.get(group, ())}):  # every value of the spec, null when unscored
                out[f"score_{d}_mean_{group}_{key}"] = hist_mean(values[key][d]) if key in values else None
    return out


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
    first), the word-count histogram and (judged runs) the score histograms; no openings (the diversity
    report keeps the top ones)."""
    profiles = list(profiles)
    merged = merge_profiles(profiles)
    out = {"rows": merged["rows"], "counts": {d: dict(c.most_common()) for d, c in merged["counts"].items()},
           "n_words": {str(k): v for k, v in sorted(merged["n_words"].items())}}
    scores = merge_scores(profiles)
    if scores:
        out["scores"] = scores  # the judge's histograms, overall and per format and audience
    return out


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
        **score_metrics(spec, merge_scores(profiles)),
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

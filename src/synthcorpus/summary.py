"""One-screen summary of a run or of the latest published version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import storage
from .layout import RunLayout

if TYPE_CHECKING:
    from .spec import CorpusSpec


def _pct(n: float, d: float) -> str:
    return f"{100 * n / d:.1f}%" if d else "n/a"


def _decontam_line(d: dict[str, Any] | None) -> str:
    if not d or d.get("skipped"):
        return "decontam    not configured"
    hits = ", ".join(f"{b}: {v['removed_docs']} docs/{v['unique_items_hit']} items" for b, v in d["benchmarks"].items())
    return (f"decontam    removed {d['removed']} of {d['input']} generated docs; canaries caught "
            f"{d['canaries_caught']}/{d['canaries_planted']} (hits incl. canaries: {hits})")


def _diversity_line(d: dict[str, Any] | None) -> str:
    if not d:
        return "diversity   n/a"
    o = d["openings"]
    top = o["top"][0] if o["top"] else {"opening": "", "share": 0}
    p = d.get("prompts") or {}
    return (f"diversity   {o['distinct_openings']}/{o['documents']} distinct openings, top {top['share']:.1%} "
            f"\"{top['opening'][:40]}\"; prompt near-dup rate {p.get('near_duplicate_rate', 0):.1%}")


def _budget_line(b: dict[str, Any] | None) -> str:
    if not b:
        return "budget      n/a"
    limits = ", ".join(f"{k.removeprefix('max_')} {v}" for k, v in (b.get("limits") or {}).items() if v is not None)
    u = b.get("used") or {}
    used = (f"used {u.get('completion_tokens')} completion tokens, {u.get('gpu_seconds')} GPU-s, "
            f"~${u.get('cost_usd')}")
    if b.get("stopped_by_budget"):
        return (f"budget      stopped by budget: {b.get('not_generated')} prompts not generated "
                f"(reached {', '.join(b.get('reached') or []) or 'a limit'}; limits {limits}; {used})")
    return f"budget      {'limits ' + limits if limits else 'unlimited'}; {used}"


def _metrics_line(m: dict[str, Any] | None) -> str:
    if not m or "n_words_p50" not in m:
        return "metrics     n/a"
    shares = ", ".join(f"{d} {m[f'{d}_min_share']:.0%}-{m[f'{d}_max_share']:.0%}" for d in ("format", "audience", "topic")
                       if f"{d}_max_share" in m)
    return (f"metrics     duplicate rate {m['duplicate_rate']:.1%}; words p05/p50/p95 {m['n_words_p05']:.0f}/"
            f"{m['n_words_p50']:.0f}/{m['n_words_p95']:.0f}; share per value: {shares}")


def _documents_line(lineage: dict[str, Any]) -> str:
    """requested / generated / published, what the run built on, and why any shortfall remains."""
    c, h = lineage["counts"], lineage.get("history") or {}
    base = (f"on top of {h['base_version']} ({h.get('published_rows')} published)" if h.get("base_version")
            else ("full rebuild" if h.get("full_rebuild") else "first version"))
    line = (f"documents   {c.get('documents')} new of {c.get('requested')} requested, {base}; "
            f"{c.get('generated')} generated, {c.get('top_up_rounds') or 0} top-up round(s), "
            f"{c.get('surplus') or 0} surplus set aside; {c.get('skipped_published_prompts') or 0} published prompts skipped, "
            f"{c.get('retired_prompts') or 0} retired")
    if c.get("shortfall"):
        line += f"\n  SHORT     {c['shortfall']} fewer than requested: {c.get('shortfall_reason')}"
    return line


def _approval_text(a: dict[str, Any]) -> str:
    """One line about the release approval (``stages.approval``): its state, who, when, the comment."""
    who = (a.get("by") or {}).get("name") or (a.get("by") or {}).get("id")
    text = {"awaiting": "awaiting a decision", "not_requested": "required, not asked yet",
            "timed_out": "no answer in time (rejected)"}.get(a["status"], a["status"])
    text += f" by {who}" if who else ""
    text += f" at {a['at']}" if a.get("at") else (f" since {a['requested_at']}" if a.get("requested_at") else "")
    return text + (f": {a['comment']}" if a.get("comment") else "")


def _not_published(gate: dict[str, Any], approval: dict[str, Any] | None) -> str:
    if not gate.get("passed") and not gate.get("override"):
        return "gate failed"
    if approval and approval.get("status") != "approved":
        return "approval " + _approval_text(approval)
    return "not published yet"


def format_summary(lineage: dict[str, Any], where: str | None) -> str:
    c = lineage["counts"]
    gate = lineage.get("gate") or {}
    gc = gate.get("counts", {})
    generated = c.get("generated") or 0
    removed = c.get("filtered_out") or {}
    model = lineage.get("model") or {}
    lines = [
        f"corpus      {lineage['corpus']}   run {lineage['run_id']}",
        f"published   {where or 'NOTHING (' + _not_published(gate, lineage.get('approval')) + ')'}",
        _documents_line(lineage),
        f"model       {model.get('model')} [{model.get('engine')}] "
        + (f"{model.get('model_file')} sha256 {str(model.get('model_sha256'))[:12]}" if model.get("model_sha256") else str(model.get("base_url") or "")),
        f"prompts     {c.get('prompts')} from {c.get('topics_kept')} kept topics of {c.get('topics')} ({c.get('seeds')} seeds)",
        f"generated   {generated} docs, {c.get('completion_tokens')} completion tokens + {c.get('prompt_tokens')} prompt tokens "
        f"in {c.get('generation_wall_s')}s (model load {c.get('model_load_s')}s); regenerated {c.get('regenerated')}, "
        f"gave up on {c.get('generation_failed')}; {c.get('gpu_seconds')} GPU-s, ~${c.get('cost_usd')}",
        _budget_line(lineage.get("budget")),
        f"filters     pass {c.get('after_filters')}/{generated} ({_pct(c.get('after_filters') or 0, generated)}); removed: "
        + (", ".join(f"{k}={v}" for k, v in removed.items() if v) or "none"),
        f"dedup       {c.get('after_dedup')} docs after exact dedup, {c.get('after_near_dedup')} after MinHash near-dedup "
        f"({c.get('near_duplicates')} near-duplicates; {c.get('published_duplicates') or 0} copies of published documents)",
        _decontam_line(lineage.get("decontamination")),
        "languages   " + ("; ".join(
            f"{want}: " + ", ".join(f"{n} detected {got}" for got, n in found.items())
            for want, found in (lineage.get("language_confusion") or {}).items()) or "n/a"),
        _diversity_line(lineage.get("diversity")),
        _metrics_line(gate.get("metrics")),
        f"gate        {'PASSED' if gate.get('passed') else 'FAILED'}: {gc.get('successful')}/{gc.get('evaluated')} expectations"
        + (f" ({len(gate['shards'])} shards validated, then run metrics)" if gate.get("shards") else "")
        + (f"; data docs {gate.get('data_docs')}" if gate.get("data_docs") else ""),
    ]
    if gate.get("report_html"):
        lines.append(f"  report    {gate['report_html']}")
    if gate.get("validation_json"):
        lines.append(f"  results   {gate['validation_json']}")
    if gate.get("override"):
        lines.append(f"  override  published anyway: {gate['override']['reason']}")
    judge = lineage.get("judge")
    if judge:
        metrics = gate.get("metrics") or {}
        means = ", ".join(f"{d} {metrics[f'score_{d}_mean']:.2f}" for d in ("educational_value", "coherence", "faithfulness",
                                                                               "audience_fit") if metrics.get(f"score_{d}_mean") is not None)
        reasons = ", ".join(f"{k}={v}" for k, v in (judge.get("unscored_reasons") or {}).items())
        lines.append(f"judge       {judge['model']}: {judge['scored']}/{judge['input']} scored"
                     + (f" (unscored: {reasons})" if reasons else "") + f", {judge['refined']} refined; "
                     + (f"mean {means}; " if means else "no scores; ")
                     + f"{judge['judge_completion_tokens']} judge + {judge['rewrite_completion_tokens']} rewrite tokens"
                     + ("; NOT ONE document scored: this judge cannot judge these documents, its scores are absent, "
                        "not good" if judge["input"] and not judge["scored"] else ""))
    if lineage.get("approval"):
        lines.append(f"approval    {_approval_text(lineage['approval'])}")
    for f in gate.get("expectations", []):
        if not f.get("success"):
            lines.append(f"  failed    {f['expectation']} {f.get('column') or ''}: observed {f['observed']}, expected {f['expected']}")
    return "\n".join(lines)


def latest_summary(spec: CorpusSpec) -> str:
    latest = RunLayout.of(spec, "latest").latest
    if not storage.exists(latest):
        return f"{spec.name}: nothing published yet ({latest} does not exist)"
    pointer = storage.read_json(latest)
    lineage = storage.read_json(RunLayout.of(spec, pointer["version"]).version_lineage)
    return format_summary(lineage, pointer["uri"])


def run_summary(spec: CorpusSpec, run_id: str) -> str:
    layout = RunLayout.of(spec, run_id)
    lineage = storage.read_json(layout.lineage)
    where = layout.version_uri() if storage.exists(layout.manifest) else None
    return format_summary(lineage, where)

"""Per-run lineage: one ``lineage.json`` that says exactly what produced a corpus version.

Per-row provenance lives in the data itself (run_id, prompt_id, topic, format, audience, language,
model, template, template_version); this file ties those values to the spec, code, model file,
sampling parameters, templates, per-stage counts and the gate result.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .spec.vocabulary import BUDGET_TOTALS

if TYPE_CHECKING:
    from .spec import CorpusSpec


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """Package version, plus the git commit when running from a checkout (None in an installed image)."""
    commit = None
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
        if out.returncode == 0:
            commit = out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": "synthcorpus", "version": __version__, "git_commit": commit}


# The stages whose committed results lineage reads.
LINEAGE_STAGES = ("history", "seeds", "topics", "prompts", "generate", "filter_shard", "judge", "dedup", "near_dedup",
                  "decontaminate", "top_up")


def build_lineage(spec: CorpusSpec, run_id: str, results: dict[str, list[dict[str, Any]]], gate: dict[str, Any] | None,
                  diversity: dict[str, Any] | None, approval: dict[str, Any] | None = None) -> dict[str, Any]:
    """``results``: every committed marker of each of LINEAGE_STAGES (one per shard for mapped stages);
    ``approval``: the release approval's state (``stages.approval.state``), None when none is required."""
    def stats(stage: str) -> dict[str, Any]:
        found = results.get(stage) or []
        return found[0].get("stats", {}) if found else {}

    top_up = stats("top_up")
    rounds = top_up.get("round_stats", [])  # each top-up round generates and filters like one more shard
    generated = [m["stats"] for m in results.get("generate", [])] + [r["generate"] for r in rounds]
    quality = quality_counts([m["stats"] for m in results.get("filter_shard", [])],
                             {s: stats(s) for s in TOP_UP_REMOVED}, rounds)
    filtered = quality["filter_shard"]
    reasons: dict[str, int] = {}
    confusion: dict[str, dict[str, int]] = {}
    for m in filtered:
        for k, v in m.get("reasons", {}).items():
            reasons[k] = reasons.get(k, 0) + v
        for want, got in m.get("language_confusion", {}).items():
            for lang, n in got.items():
                confusion.setdefault(want, {})[lang] = confusion.get(want, {}).get(lang, 0) + n
    # the judge's stats: one per plan shard (judge stage) and one per top-up round that judged documents
    judged = [m["stats"] for m in results.get("judge", []) if (m.get("stats") or {}).get("enabled")]
    judged += [r["judge_stats"] for r in rounds if r.get("judge_stats")]
    models = {(m["model"]["model"], m["model"].get("model_sha256")): m["model"] for m in generated if m.get("model")}
    not_generated = sum(m.get("not_generated", 0) for m in generated)
    return {
        "corpus": spec.name,
        "run_id": run_id,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "spec": {"path": str(spec.source_path) if spec.source_path else None, "sha256": spec.spec_hash(), "content": spec.canonical()},
        "code": code_version(),
        "model": next(iter(models.values()), None),
        "models": list(models.values()),
        "sampling": generated[0].get("sampling") if generated else None,
        "templates": stats("prompts").get("templates", {}),
        "seeds": stats("seeds"),
        "topics": stats("topics"),
        "decontamination": stats("decontaminate"),
        "budget": budget_block(spec, generated, judged),
        "judge": judge_block(spec, judged),
        "diversity": diversity,
        "history": {k: stats("history").get(k) for k in ("base_version", "published_rows", "full_rebuild", "measured_yield")},
        "counts": {
            # documents: the new documents this run publishes (the spec's `documents`, unless short: see why)
            "requested": spec.documents,
            "documents": top_up.get("documents"),
            "shortfall": top_up.get("shortfall"),
            "shortfall_reason": top_up.get("shortfall_reason"),
            "surplus": top_up.get("surplus"),
            "top_up_rounds": top_up.get("rounds"),
            "retired_prompts": stats("prompts").get("retired"),
            "skipped_published_prompts": stats("prompts").get("skipped_published"),
            "seeds": stats("seeds").get("seeds"),
            "topics": stats("topics").get("topics"),
            "topics_kept": stats("topics").get("kept"),
            "prompts": stats("prompts").get("prompts"),
            # prompts with a generation (including rows that failed validation); budget rows are not
            "generated": sum(m.get("rows", 0) for m in generated) - not_generated,
            "not_generated": not_generated,
            "filtered_out": reasons,
            "after_filters": sum(m.get("kept", 0) for m in filtered),
            # the main round's stage counts plus each top-up round's (filtered -> exact -> near -> decontaminated)
            "after_dedup": _plus(stats("dedup").get("kept"), sum(r["kept"] + r["near_duplicates"] + r["contaminated"] for r in rounds)),
            "exact_duplicates": quality["dedup"]["removed"],
            "published_duplicates": stats("dedup").get("removed_published", 0) + stats("near_dedup").get("removed_published", 0),
            "near_duplicates": quality["near_dedup"]["removed"],
            "after_near_dedup": _plus(stats("near_dedup").get("kept"), sum(r["kept"] + r["contaminated"] for r in rounds)),
            "contaminated": quality["decontaminate"]["removed"],
            "prompt_tokens": sum(m.get("prompt_tokens", 0) for m in generated),
            "completion_tokens": sum(m.get("completion_tokens", 0) for m in generated),
            "generation_wall_s": round(sum(m.get("wall_s", 0.0) for m in generated), 3),
            "model_load_s": round(sum(m.get("load_s", 0.0) for m in generated), 3),
            "regenerated": sum(m.get("regenerated", 0) for m in generated),
            "generation_failed": sum(m.get("failed", 0) for m in generated),
            "gpu_seconds": round(sum(m.get("gpu_seconds", 0.0) for m in generated), 1),
            "cost_usd": round(sum(m.get("cost_usd", 0.0) for m in generated), 4),
        },
        "language_confusion": confusion,
        "gate": gate,
        "approval": approval,
        "provenance_columns": list(PROVENANCE_COLUMNS),
    }


# What a top-up round counts (its round_stats key) for the stage whose work it repeats.
TOP_UP_REMOVED = {"dedup": "exact_duplicates", "near_dedup": "near_duplicates", "decontaminate": "contaminated"}


def quality_counts(filter_stats: list[dict[str, Any]], stage_stats: dict[str, dict[str, Any]],
                   rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The quality stages' stats with the top-up rounds folded in (what lineage and the gate's run metrics
    count): each round's filter stats as one more filter shard; its exact and near duplicates and its
    contaminated documents added to the ``removed`` of dedup, near_dedup and decontaminate."""
    out: dict[str, Any] = {"filter_shard": [*filter_stats, *(r["filter_stats"] for r in rounds)]}
    for stage, key in TOP_UP_REMOVED.items():
        merged = dict(stage_stats.get(stage) or {})
        merged["removed"] = merged.get("removed", 0) + sum(r[key] for r in rounds)
        out[stage] = merged
    return out


def _plus(count: int | None, more: int) -> int | None:
    return None if count is None else count + more


JUDGE_TOKENS = ("judge_prompt_tokens", "judge_completion_tokens", "rewrite_prompt_tokens", "rewrite_completion_tokens")


def judge_block(spec: CorpusSpec, judged: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The judge's part of the run: which model, documents scored / unscored (why) / refined, rewrite
    rounds, and its tokens, counted apart from generation's (None when the judge is off)."""
    if not spec.judge.enabled:
        return None
    reasons: dict[str, int] = {}
    for m in judged:
        for k, v in (m.get("unscored_reasons") or {}).items():
            reasons[k] = reasons.get(k, 0) + v
    j = spec.judge
    return {
        "engine": j.engine or spec.generation.engine, "model": j.model or spec.generation.model,
        "max_rounds": j.max_rounds, "thresholds": dict(j.thresholds),
        **{k: sum(int(m.get(k) or 0) for m in judged) for k in ("input", "scored", "unscored", "refined", "rewrite_rounds")},
        "unscored_reasons": reasons,
        **{k: sum(int(m.get(k) or 0) for m in judged) for k in JUDGE_TOKENS},
        "stopped_by_budget": sorted({r for m in judged for r in m.get("stopped_by_budget") or []}),
        "model_info": next((m["model_info"] for m in judged if m.get("model_info")), None),  # as the engine reported it
    }


def budget_block(spec: CorpusSpec, generated: list[dict[str, Any]], judged: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The run's budget: the spec's limits, what every generating shard spent (all attempts, summed over
    shards) plus the judge's tokens, whether any shard stopped at a limit, the prompts left ungenerated and
    the limits reached."""
    used = dict.fromkeys(BUDGET_TOTALS, 0.0)
    for m in generated:
        spent = (m.get("budget") or {}).get("spent") or {k: m.get(k, 0) for k in BUDGET_TOTALS}
        for k in BUDGET_TOTALS:
            used[k] += float(spent.get(k) or 0)
    for m in judged or []:  # the judge and its rewrites count against the same limits
        used["completion_tokens"] += m.get("judge_completion_tokens", 0) + m.get("rewrite_completion_tokens", 0)
        used["prompt_tokens"] += m.get("judge_prompt_tokens", 0) + m.get("rewrite_prompt_tokens", 0)
    for k in ("completion_tokens", "prompt_tokens", "rows"):
        used[k] = int(used[k])
    used["gpu_seconds"], used["cost_usd"] = round(used["gpu_seconds"], 1), round(used["cost_usd"], 4)
    reached = sorted({r for m in generated for r in (m.get("budget") or {}).get("reached") or []})
    return {
        "limits": spec.generation.budget.model_dump(),
        "used": used,
        "stopped_by_budget": any(m.get("stopped_by_budget") for m in generated),
        "not_generated": sum(m.get("not_generated", 0) for m in generated),
        "reached": reached,
    }


PROVENANCE_COLUMNS = (
    "run_id", "prompt_id", "seed_id", "seed_kind", "topic_id", "topic", "topic_in_prompt", "format", "audience",
    "language", "style_index", "model", "template", "template_version",
)

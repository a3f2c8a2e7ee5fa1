"""prompts: the prompt matrix -- kept topics' seeds x format x audience x language, rendered from
``include/prompts/<language>/<format>.j2`` (templates, plan and ids in :mod:`synthcorpus.prompts`).

A refresh asks only for prompts never published: it retries the prompts the base version tried and did
not publish (up to ``refresh.retire_after_failures`` failures, then they are retired and counted), and
continues the plan from where the base version stopped (from its first item if the plan changed: new
seeds, topics, templates), skipping every prompt id the published index holds. Prompts set aside (surplus)
or left by the budget come first; failed ones wait at the end of the top-up reserve, with a new seed. It provisions
``documents / yield`` prompts (the yield measured on the published versions, ``refresh.expected_yield``
before there is one) and keeps the next candidates as the top-up reserve.

Reads ``seeds``, ``topics`` and ``history``; writes ``prompts/prompts.parquet``,
``prompts/reserve.parquet`` and ``prompts/diversity.json`` (plan distribution, prompt near-dup rate).
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "prompts"
READS = ("seeds", "topics", "history")
MAPPED = False
USES: tuple[str, ...] = ("documents", "prompts", "generation.seed", "refresh.expected_yield", "refresh.max_overprovision",
                         "refresh.top_up_rounds", "refresh.retire_after_failures", "quality.near_dedup.ngram",
                         "quality.near_dedup.bands", "quality.near_dedup.rows", "quality.near_dedup.seed")


def fingerprint_inputs(run: RunContext, shard: int | None = None) -> dict[str, str | None]:
    """Content hashes of the templates the prompt matrix renders (``<template_dir>/<language>/<format>.j2``)."""
    from .contract import file_sha256

    spec = run.spec
    return {f"prompts.template_dir/{lang}/{fmt}.j2": file_sha256((spec.template_dir / lang / f"{fmt}.j2").as_uri())
            for lang in spec.prompts.languages for fmt in spec.prompts.formats}


ID_BATCH = 4096  # candidate ids looked up in the published index at a time

log = logging.getLogger(__name__)


def provision(run: RunContext, measured_yield: float | None) -> tuple[int, int, float]:
    """(prompts to generate, top-up reserve size, yield assumed) for ``documents`` published documents."""
    ref = run.spec.refresh
    target = run.spec.documents
    assumed = measured_yield if measured_yield else ref.expected_yield
    cap = math.ceil(target * ref.max_overprovision)
    first = min(cap, math.ceil(target / max(assumed, 1e-6)))
    # Enough for top-up rounds when the yield is half the one assumed; rendered now, so kept bounded.
    reserve = min(cap - first, 2 * math.ceil(first * (1 - assumed)) + 8) if ref.top_up_rounds else 0
    return first, reserve, assumed


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..prompts import PromptMatrix
    from ..quality.diversity import prompt_report
    from .history import base as history_base
    from .history import published_index

    seeds = result(run, "seeds")["outputs"]
    topics = result(run, "topics")["outputs"]
    matrix = PromptMatrix(
        run.spec,
        storage.read_parquet(seeds["seeds"]).to_pylist(),
        storage.read_parquet(topics["topics"]).to_pylist(),
        storage.read_parquet(topics["assignments"]).to_pylist(),
    )
    base = history_base(run)
    wanted, reserve_n, assumed = provision(run, base.get("yield"))
    fingerprint = matrix.fingerprint()
    plan = base.get("prompt_plan") or {}
    start = plan.get("cursor", 0) if plan.get("fingerprint") == fingerprint else 0

    # 1. Prompts the base version tried and did not publish. Deferred ones (their document was set aside as
    # surplus, or the budget left them) come first, with their seed: they passed, or never ran. Failed ones
    # go to the end of the top-up reserve with a new seed: a fresh prompt yields better than one that failed,
    # so they are tried when a run needs more; after K failures they are retired.
    retry_rows, retired = _retry_rows(base, run.spec.refresh.retire_after_failures)
    deferred = [r for r in retry_rows if r["failures"] == 0]
    failed = [_reseeded(r, run.spec.generation.seed) for r in retry_rows if r["failures"] > 0]
    taken = {r["prompt_id"] for r in retry_rows} | retired
    # 2. The plan from the cursor, minus everything published (and the retries).
    index = published_index(run)
    fresh: list[dict[str, Any]] = []
    skipped_published = 0
    candidates = (c for c in matrix.candidates() if c.position >= start)
    need = max(0, wanted - len(deferred)) + reserve_n
    batch_size = max(ID_BATCH, need)
    while len(fresh) < need:
        batch = [c for _, c in zip(range(batch_size), candidates)]
        published = index.published_prompts([c.row["prompt_id"] for c in batch]) if base["segments"] else set()
        for c in batch:
            pid = c.row["prompt_id"]
            if pid in published:
                skipped_published += 1
            elif pid not in taken:
                taken.add(pid)
                fresh.append(matrix.render(c))
                if len(fresh) == need:
                    break
    head = deferred + fresh
    rows, reserve = head[:wanted], head[wanted:] + failed
    # Where the plan's own prompts sit in the reserve (the rest are retries): publish moves the plan cursor
    # past those that top-up rounds used.
    plan_in_reserve = [max(0, len(deferred) - wanted), len(head) - wanted]
    uri, reserve_uri = run.layout.output(NAME, "prompts"), run.layout.output(NAME, "reserve")
    storage.write_parquet(uri, _table(pa, rows))
    storage.write_parquet(reserve_uri, _table(pa, reserve))
    report = prompt_report(rows)
    diversity = run.layout.output(NAME, "diversity")
    storage.write_json(diversity, report)
    stats = {
        "prompts": len(rows),
        "requested_documents": run.spec.documents,
        "assumed_yield": round(assumed, 4),
        "reserve": len(reserve),
        "deferred": len(deferred),
        "failed_to_retry": len(failed),
        "retired": len(retired),
        "skipped_published": skipped_published,
        # Where the next refresh continues the plan: after the last plan item this run took (publish moves
        # it past the reserve prompts top-up rounds used).
        "prompt_plan": {"fingerprint": fingerprint, "start": start,
                        "cursor": max([r["plan_position"] + 1 for r in rows[len(deferred):]], default=start),
                        "in_reserve": plan_in_reserve},
        "templates": {t.name: {"version": t.version, "sha256": t.sha256} for t in matrix.templates.values()},
        "topics_used": matrix.topics_used,
        "near_duplicate_rate": report["near_duplicate_rate"],
        "topic_in_prompt_share": report["topic_in_prompt_share"],
        **{f"by_{k}": report["distribution"][k] for k in ("format", "audience", "language", "seed_kind")},
    }
    log.info("prompts: %d to generate for %d documents (yield %.2f), %d in reserve; %d deferred ones first, %d failed "
             "ones last in the reserve, %d retired, %d published ones skipped; plan from item %d", len(rows),
             run.spec.documents, assumed, len(reserve), len(deferred), len(failed), len(retired), skipped_published, start)
    return StageResult(NAME, {"prompts": uri, "reserve": reserve_uri, "diversity": diversity}, stats)


RETRY_COLUMNS = ("failures", "last_reason")


def _retry_rows(base: dict[str, Any], retire_after: int) -> tuple[list[dict[str, Any]], set[str]]:
    """(prompt rows to retry, in plan order; ids of retired prompts)."""
    if not base.get("retry"):
        return [], set()
    rows = storage.read_parquet(base["retry"]).to_pylist()
    retired = {r["prompt_id"] for r in rows if r["failures"] >= retire_after}
    retry = sorted((r for r in rows if r["failures"] < retire_after), key=lambda r: (r["plan_position"], r["prompt_id"]))
    return retry, retired


def _reseeded(row: dict[str, Any], generation_seed: int) -> dict[str, Any]:
    """A failed prompt's next try: a sampling seed of its own per failure (the same seed would replay the
    same failure: generation is seeded)."""
    key = hashlib.sha256(f"{row['prompt_id']}:retry:{row['failures']}".encode()).hexdigest()
    return {**row, "seed": (int(key[:8], 16) ^ generation_seed) & 0x7FFFFFFF}


def _table(pa: Any, rows: list[dict[str, Any]]) -> Any:
    if rows:
        return pa.Table.from_pylist([{k: v for k, v in r.items() if k not in RETRY_COLUMNS} for r in rows])
    return pa.table({"prompt_id": pa.array([], pa.string())})

"""top_up: make the run publish ``documents`` documents -- no fewer when it can, never more.

After decontamination the run has K clean documents. K < documents: up to ``refresh.top_up_rounds`` rounds, each generating the next prompts of the
top-up reserve (``prompts/reserve.parquet``; as many as the deficit over the yield measured so far in this
run) in this task, then filtering them, deduplicating them exactly and by MinHash against the run and
every published document, and decontaminating them -- the same libraries as the stages before. Each round
is one more document shard, ``top_up/shard-N.parquet`` (N after the plan's shards), with its signatures
in ``top_up/shard-N/signatures.parquet`` for the published index; its generation is kept beside them. A shortfall that remains is explained:
reserve used up, budget spent, no rounds configured, or an engine that cannot run in this task. More than
``documents`` (over-provisioning, or the last round): the surplus -- the last documents in global shard/row
order -- is set aside (``top_up/surplus.parquet``; their prompts stay eligible for the next refresh).

Reads ``decontaminate``, ``prompts``, ``generate``, ``filter_shard``, ``minhash_signatures`` and
``history``; its shard list (``shards``) is what the stages after it (validate_shard) expand over.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from .. import storage
from .contract import RunContext, StageResult, result, results, shards

NAME = "top_up"
READS = ("decontaminate", "prompts", "generate", "filter_shard", "judge", "minhash_signatures", "history")
MAPPED = False
# Top-up rounds generate, filter, dedup and decontaminate: every section those stages use.
USES: tuple[str, ...] = ("documents", "refresh", "generation", "quality", "judge")
MIN_YIELD = 0.05  # never assume less when sizing a round (a run that publishes nothing stops by the reserve)

log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    spec = run.spec
    target = spec.documents
    documents = list(result(run, "decontaminate")["outputs"]["documents"])
    indexes = list(shards(run))
    kept = sum(storage.parquet_rows(u) for u in documents)
    generated = sum(m["stats"].get("rows", 0) - m["stats"].get("not_generated", 0) for m in results(run, "generate"))
    stopped_by_budget = any(m["stats"].get("stopped_by_budget") for m in results(run, "generate"))
    rounds: list[dict[str, Any]] = []
    surplus_uri = None
    reason = None
    if kept < target:
        reserve = storage.read_parquet(result(run, "prompts")["outputs"]["reserve"]).to_pylist()
        context = None  # what every round checks against: built once, on the first round
        while kept < target:
            why = _cannot_top_up(run, len(rounds), reserve, stopped_by_budget)
            if why:
                reason = why
                break
            measured = kept / generated if generated else spec.refresh.expected_yield
            n = min(len(reserve), math.ceil((target - kept) / max(measured, MIN_YIELD)))
            take, reserve = reserve[:n], reserve[n:]
            index = indexes[-1] + 1 if indexes else 0
            context = context or _RoundContext.of(run)
            done = _round(run, index, take, context)
            rounds.append(done)
            documents.append(done["documents"])
            indexes.append(index)
            kept += done["kept"]
            generated += done["generated"]
            stopped_by_budget = stopped_by_budget or done["stopped_by_budget"]
    if kept > target:  # never more than requested: the last documents in global order are set aside
        documents, surplus_uri = _trim(run, documents, indexes, target)
    published = min(kept, target)
    stats = {"requested": target, "documents": published, "generated": generated, "rounds": len(rounds),
             "round_stats": rounds, "surplus": max(0, kept - target), "shortfall": target - published,
             "shortfall_reason": reason if published < target else None, "stopped_by_budget": stopped_by_budget}
    if published < target:
        log.warning("top-up: %d of %d documents after %d round(s): %s", published, target, len(rounds), reason)
    else:
        log.info("top-up: %d documents as requested (%d round(s), %d surplus set aside)", target, len(rounds), stats["surplus"])
    outputs: dict[str, Any] = {"documents": documents}
    if surplus_uri:
        outputs["surplus"] = surplus_uri
    return StageResult(NAME, outputs, stats, shards=indexes)


def _cannot_top_up(run: RunContext, done: int, reserve: list[dict[str, Any]], stopped_by_budget: bool) -> str | None:
    gen = run.spec.generation
    if stopped_by_budget:
        return "stopped by budget (generation.budget)"
    if done >= run.spec.refresh.top_up_rounds:
        return (f"top-up rounds used up (refresh.top_up_rounds: {done})" if done
                else "no top-up rounds configured (refresh.top_up_rounds: 0)")
    if not reserve:
        return "the prompt reserve is used up (refresh.max_overprovision)"
    if run.engine is None and gen.runner == "kubernetes" and gen.engine == "vllm":
        return "top-up rounds generate in the Airflow task: engine vllm on runner kubernetes needs a GPU pod"
    return None


@dataclass
class _RoundContext:
    """What each round's documents are checked against, read once for all rounds: the normalized-text
    hashes of every document the run's filters kept (earlier rounds' added as they finish), the run's
    signature files (likewise), the published index and the benchmark n-gram index."""

    seen: set[str]
    signatures: list[str]
    published: Any
    ngrams: Any

    @classmethod
    def of(cls, run: RunContext) -> _RoundContext:
        from .decontaminate import reference_index
        from .history import published_index

        uris = [m["outputs"]["documents"] for m in results(run, "judge")]
        seen = {h for u in uris for b in storage.iter_batches(u, ["text_hash"], 65536) for h in b.column(0).to_pylist()}
        return cls(seen, [m["outputs"]["signatures"] for m in results(run, "minhash_signatures")], published_index(run),
                   reference_index(run)[1] if run.spec.quality.decontamination is not None else None)


def _round(run: RunContext, index: int, prompts: list[dict[str, Any]], context: _RoundContext) -> dict[str, Any]:
    """Generate, filter, judge (when on), dedup and decontaminate one round of top-up prompts as document shard ``index``.
    The round's generation is kept (``top_up/shard-N/generated.parquet`` + ``generation.json``): a retried
    task, or a re-run after a quality setting changed, generates only what is missing (resuming from its
    checkpoints) and filters, dedups and decontaminates again under the current spec."""
    import json

    import pyarrow as pa

    from ..generation import META_KEY, generate_shard
    from .plan_shards import unit_config

    layout = run.layout
    generated_uri = layout.shard_dir(NAME, index, "generated.parquet")
    gen_stats_uri = layout.shard_dir(NAME, index, "generation.json")
    table = storage.read_parquet(generated_uri) if storage.exists(gen_stats_uri) and storage.exists(generated_uri) else None
    if table is not None and table.column("prompt_id").to_pylist() == [p["prompt_id"] for p in prompts]:
        gen_stats = storage.read_json(gen_stats_uri)
    else:  # (a round sized differently on a re-run takes other prompts: generated anew)
        plan = pa.Table.from_pylist(prompts)
        plan = plan.replace_schema_metadata({META_KEY: json.dumps(unit_config(run)).encode()})
        plan_uri = layout.shard_dir(NAME, index, "plan.parquet")
        storage.write_parquet(plan_uri, plan)
        parts = layout.shard_dir(NAME, index, "parts")
        gen_stats = generate_shard(plan_uri, generated_uri, parts, engine=run.engine,
                                   budget_entry=layout.budget_entry(NAME, index))
        storage.write_json(gen_stats_uri, gen_stats)
        storage.delete(parts)
        table = storage.read_parquet(generated_uri)
    counts: dict[str, int] = {}
    kept, removed, filter_stats = _filter(run, table)
    counts["filtered"] = filter_stats["removed"]
    judge_stats = None
    if run.spec.judge.enabled and kept.num_rows:  # as the judge stage does for the plan's shards
        from .judge import judge_table

        kept, judge_stats = judge_table(run, kept, budget_entry=layout.budget_entry("top_up_judge", index),
                                        label=f"top-up round, shard {index}: judge")
    kept, dropped = _exact(kept, context)
    counts["exact_duplicates"] = len(dropped)
    removed += dropped
    kept, dropped, sig_uri = _near(run, kept, index, context)
    counts["near_duplicates"] = len(dropped)
    removed += dropped
    kept, dropped = _decontaminate(run, kept, context)
    counts["contaminated"] = len(dropped)
    removed += dropped
    out = layout.shard(NAME, index)
    storage.write_parquet(out, kept)
    if removed:
        storage.write_parquet(layout.removed(NAME, index), pa.Table.from_pylist(removed))
    log.info("top-up round, shard %d: %d prompts -> %d documents (%s)", index, len(prompts), kept.num_rows, counts)
    return {"shard": index, "prompts": len(prompts), "generated": gen_stats["rows"] - gen_stats.get("not_generated", 0),
            "kept": kept.num_rows, **counts, "filter_stats": filter_stats, "judge_stats": judge_stats,
            "generate": gen_stats, "documents": out,
            "generate_output": generated_uri,
            "signatures": sig_uri, "stopped_by_budget": bool(gen_stats.get("stopped_by_budget"))}


def _filter(run: RunContext, table: Any) -> tuple[Any, list[dict[str, Any]], dict[str, Any]]:
    from collections import Counter

    from ..quality.filters import filter_batch, reason_names, refusal_phrases

    quality = run.spec.quality
    confusion: dict[str, Counter[str]] = {}
    kept, removed, reasons = filter_batch(table, quality, refusal_phrases(quality), confusion)
    count = Counter(reasons)
    stats = {"input": table.num_rows, "kept": kept.num_rows, "removed": table.num_rows - kept.num_rows,
             "reasons": {r: count.get(r, 0) for r in reason_names(quality.heuristics)},
             "language_confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())}}
    return kept, removed.to_pylist(), stats


def _exact(table: Any, context: _RoundContext) -> tuple[Any, list[dict[str, Any]]]:
    """Drop exact copies of anything the run's filters kept (earlier rounds included) or that is published;
    the round's own hashes join ``context.seen``."""
    import pyarrow as pa

    hashes = table.column("text_hash").to_pylist() if table.num_rows else []
    published = context.published.exact_duplicates(sorted(set(hashes)))
    keep, dropped = [], []
    for row, h in zip(table.to_pylist(), hashes):
        if h in published:
            dropped.append({**row, "filter_reason": "published_duplicate", "duplicate_of": published[h]})
        elif h in context.seen:
            dropped.append({**row, "filter_reason": "exact_duplicate", "duplicate_of": None})
        else:
            context.seen.add(h)
            keep.append(True)
            continue
        keep.append(False)
    return table.filter(pa.array(keep, pa.bool_())) if table.num_rows else table, dropped


def _near(run: RunContext, table: Any, index: int, context: _RoundContext) -> tuple[Any, list[dict[str, Any]], str]:
    """Drop near-copies of the run's documents (earlier rounds included) and of published ones; the round's
    signature file joins ``context.signatures``."""
    from ..quality.minhash import MinHashParams, find_clusters, write_signatures
    from .near_dedup import drop_near_duplicates, published_near_duplicates

    nd = run.spec.quality.near_dedup
    params = MinHashParams.from_spec(nd)
    docs_uri = run.layout.shard_dir(NAME, index, "deduplicated.parquet")
    storage.write_parquet(docs_uri, table)
    sig_uri = run.layout.shard_dir(NAME, index, "signatures.parquet")
    write_signatures(docs_uri, sig_uri, index, params)
    storage.delete(docs_uri)
    context.signatures.append(sig_uri)
    if not nd.enabled or not table.num_rows:
        return table, [], sig_uri
    new_ids = set(table.column("prompt_id").to_pylist())
    dup_of = {d: k for k, dups in find_clusters(context.signatures, params) for d in dups if d in new_ids}
    published = published_near_duplicates(context.published, [sig_uri], params)
    kept, dropped = drop_near_duplicates(table, dup_of, published)
    return kept, dropped, sig_uri


def _decontaminate(run: RunContext, table: Any, context: _RoundContext) -> tuple[Any, list[dict[str, Any]]]:
    import pyarrow as pa

    from ..quality.decontam import decontaminate_shard

    if context.ngrams is None or not table.num_rows:
        return table, []
    kept, removed, _ = decontaminate_shard(table.to_pylist(), context.ngrams, run.spec.quality.decontamination.threshold)
    return (pa.Table.from_pylist(kept, schema=table.schema) if kept else table.slice(0, 0)), removed


def _trim(run: RunContext, documents: list[str], indexes: list[int], target: int) -> tuple[list[str], str]:
    """Keep the first ``target`` documents in global order; the rest is written to ``surplus.parquet``."""
    import pyarrow as pa

    out, surplus, left = [], [], target
    for index, uri in zip(indexes, documents):
        rows = storage.parquet_rows(uri)
        if rows <= left:
            out.append(uri)
            left -= rows
            continue
        table = storage.read_parquet(uri)
        trimmed = run.layout.shard(NAME, index)
        storage.write_parquet(trimmed, table.slice(0, left))
        surplus.append(table.slice(left))
        out.append(trimmed)
        left = 0
    uri = run.layout.output(NAME, "surplus")
    storage.write_parquet(uri, pa.concat_tables(surplus, promote_options="default"))
    return out, uri


def reserve_used(marker: dict[str, Any]) -> int:
    """How many reserve prompts a committed top-up's rounds took (always the first ones, in order)."""
    return sum(r["prompts"] for r in marker.get("stats", {}).get("round_stats", []))


def round_signatures(marker: dict[str, Any]) -> list[str]:
    """The signature files of a committed top-up's rounds (publish adds their documents to the index)."""
    return [r["signatures"] for r in marker.get("stats", {}).get("round_stats", [])]

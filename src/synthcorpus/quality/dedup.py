"""Exact dedup across the whole run by normalized-text hash: a cheap first pass before MinHash.

Streams shard by shard and holds only the hashes in memory; the first occurrence (in shard order,
then row order) is kept, so the result does not depend on task timing.
"""

from __future__ import annotations

from typing import Any

from .. import storage
from ..run import RunContext, StageResult


def dedup_exact(run: RunContext, filtered_uris: list[str]) -> StageResult:
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401  (pa.compute)

    seen: set[str] = set()
    outputs, removed_total, kept_total = [], 0, 0
    removed_rows: list[dict[str, Any]] = []
    for uri in sorted(filtered_uris):
        table = storage.read_parquet(uri)
        keep_mask = []
        for h in table.column("text_hash").to_pylist() if table.num_rows else []:
            keep_mask.append(h not in seen)
            seen.add(h)
        if table.num_rows:
            mask = pa.array(keep_mask, pa.bool_())
            removed = table.filter(pa.compute.invert(mask)).to_pylist()
            removed_rows.extend({**row, "filter_reason": "exact_duplicate"} for row in removed)
            table = table.filter(mask)
        out = run.run_uri("dedup", uri.rsplit("/", 1)[-1])
        storage.write_parquet(out, table)
        outputs.append(out)
        kept_total += table.num_rows
        removed_total += len(keep_mask) - table.num_rows
    if removed_rows:
        storage.write_parquet(run.run_uri("dedup", "removed-duplicates.parquet"), pa.Table.from_pylist(removed_rows))
    stats = {"input": kept_total + removed_total, "kept": kept_total, "removed": removed_total}
    return StageResult("dedup", {"documents": outputs}, stats).save(run)


def minhash_params(run: RunContext) -> Any:
    from .minhash import MinHashParams

    nd = run.spec.quality.near_dedup
    return MinHashParams(ngram=nd.ngram, bands=nd.bands, rows=nd.rows, seed=nd.seed, verify_threshold=nd.verify_threshold)


def signatures(run: RunContext, document_uri: str) -> str:
    """Per shard (mapped): MinHash signatures and band hashes of one exact-deduplicated shard."""
    from .minhash import signature_shard

    return signature_shard(run, document_uri, minhash_params(run))


def near_dedup(run: RunContext, document_uris: list[str], signature_uris: list[str]) -> StageResult:
    """Run level: cluster the signatures of every shard, keep the first document of each cluster
    (global shard/row order, so the result does not depend on how the run was sharded) and drop the rest."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .minhash import minhash_clusters

    if not run.spec.quality.near_dedup.enabled:
        return StageResult("near_dedup", {"documents": list(document_uris)}, {"skipped": True}).save(run)
    clusters = minhash_clusters(run, signature_uris, minhash_params(run))
    dup_table = storage.read_parquet(clusters.outputs["clusters"])
    keep_of = dict(zip(dup_table.column("dup_id").to_pylist(), dup_table.column("keep_id").to_pylist()))
    dups = pa.array(sorted(keep_of), pa.string())
    outputs, removed_rows, total = [], [], 0
    for uri in sorted(document_uris):
        table = storage.read_parquet(uri)
        total += table.num_rows
        if table.num_rows:
            is_dup = pc.is_in(table.column("prompt_id"), value_set=dups)
            removed_rows += [{**r, "filter_reason": "near_duplicate", "duplicate_of": keep_of[r["prompt_id"]]}
                             for r in table.filter(is_dup).to_pylist()]
            table = table.filter(pc.invert(is_dup))
        out = run.run_uri("near_dedup", uri.rsplit("/", 1)[-1])
        storage.write_parquet(out, table)
        outputs.append(out)
    if removed_rows:
        storage.write_parquet(run.run_uri("near_dedup", "removed-near-duplicates.parquet"), pa.Table.from_pylist(removed_rows))
    stats = {"input": total, "removed": len(removed_rows), "kept": total - len(removed_rows),
             "duplicate_rate": round(len(removed_rows) / total, 6) if total else 0.0, **clusters.stats}
    return StageResult("near_dedup", {"documents": outputs, "clusters": clusters.outputs["clusters"]}, stats).save(run)

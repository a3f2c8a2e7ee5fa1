"""near_dedup: MinHash near-dedup across the run -- cluster every shard's signatures (LSH bands, pairs
confirmed by estimated Jaccard, connected components) and keep the first document of each cluster in
global (shard, row) order, so the result does not depend on how the run was sharded.

Reads ``dedup`` shards and ``minhash_signatures``; writes ``near_dedup/shard-N.parquet``,
``near_dedup/clusters.parquet`` (``dup_id``, ``keep_id``) and ``near_dedup/removed.parquet``.
"""

from __future__ import annotations

from .. import storage
from .contract import RunContext, StageResult, result, results

NAME = "near_dedup"
READS = ("dedup", "minhash_signatures")
MAPPED = False


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..quality.minhash import MinHashParams, find_clusters

    documents = result(run, "dedup")["outputs"]["documents"]
    nd = run.spec.quality.near_dedup
    if not nd.enabled:  # the dedup shards pass through unchanged
        return StageResult(NAME, {"documents": list(documents)}, {"skipped": True})
    outputs = [run.layout.shard(NAME, i) for i in range(len(documents))]
    params = MinHashParams.from_spec(nd)
    clusters = find_clusters([m["outputs"]["signatures"] for m in results(run, "minhash_signatures")], params)
    keep_ids = [k for k, dups in clusters for _ in dups]
    dup_ids = [d for _, dups in clusters for d in dups]
    clusters_uri = run.layout.output(NAME, "clusters")
    storage.write_parquet(clusters_uri, pa.table({"dup_id": pa.array(dup_ids, pa.string()),
                                                  "keep_id": pa.array(keep_ids, pa.string())}))
    keep_of = dict(zip(dup_ids, keep_ids))
    dups = pa.array(sorted(keep_of), pa.string())
    removed_rows, total = [], 0
    for uri, out in zip(documents, outputs):
        table = storage.read_parquet(uri)
        total += table.num_rows
        if table.num_rows:
            is_dup = pc.is_in(table.column("prompt_id"), value_set=dups)
            removed_rows += [{**r, "filter_reason": "near_duplicate", "duplicate_of": keep_of[r["prompt_id"]]}
                             for r in table.filter(is_dup).to_pylist()]
            table = table.filter(pc.invert(is_dup))
        storage.write_parquet(out, table)
    if removed_rows:
        storage.write_parquet(run.layout.removed(NAME), pa.Table.from_pylist(removed_rows))
    stats = {"input": total, "removed": len(removed_rows), "kept": total - len(removed_rows),
             "duplicate_rate": round(len(removed_rows) / total, 6) if total else 0.0,
             "clusters": len(clusters), "duplicates": len(dup_ids), "threshold": round(params.threshold(), 4),
             "params": params.to_dict()}
    return StageResult(NAME, {"documents": outputs, "clusters": clusters_uri}, stats)

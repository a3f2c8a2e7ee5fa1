"""near_dedup: MinHash near-dedup across the run -- cluster every shard's signatures (LSH bands, pairs
confirmed by estimated Jaccard, connected components) and keep the first document of each cluster in
global (shard, row) order, so the result does not depend on how the run was sharded -- and against every
document the corpus already published (the base version's index, from ``history``): a near-copy of a
published document is removed whatever its place in the run.

Reads ``dedup`` shards, ``minhash_signatures`` and ``history``; writes ``near_dedup/shard-N.parquet``,
``near_dedup/clusters.parquet`` (``dup_id``, ``keep_id``) and ``near_dedup/removed.parquet``
(``near_duplicate`` within the run, ``near_duplicate_published`` with the published ``duplicate_of``).
"""

from __future__ import annotations

from .. import storage
from .contract import RunContext, StageResult, result, results

NAME = "near_dedup"
READS = ("dedup", "minhash_signatures", "history")
MAPPED = False
USES: tuple[str, ...] = ("quality.near_dedup",)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..quality.minhash import MinHashParams, find_clusters
    from .history import published_index

    documents = result(run, "dedup")["outputs"]["documents"]
    nd = run.spec.quality.near_dedup
    if not nd.enabled:  # the dedup shards pass through unchanged
        return StageResult(NAME, {"documents": list(documents)}, {"skipped": True})
    outputs = [run.layout.shard(NAME, i) for i in range(len(documents))]
    params = MinHashParams.from_spec(nd)
    signature_uris = [m["outputs"]["signatures"] for m in results(run, "minhash_signatures")]
    clusters = find_clusters(signature_uris, params)
    keep_ids = [k for k, dups in clusters for _ in dups]
    dup_ids = [d for _, dups in clusters for d in dups]
    clusters_uri = run.layout.output(NAME, "clusters")
    storage.write_parquet(clusters_uri, pa.table({"dup_id": pa.array(dup_ids, pa.string()),
                                                  "keep_id": pa.array(keep_ids, pa.string())}))
    keep_of = dict(zip(dup_ids, keep_ids))
    published = published_near_duplicates(published_index(run), signature_uris, params)
    published = {k: v for k, v in published.items() if k not in keep_of}
    removed_rows, total = [], 0
    for uri, out in zip(documents, outputs):
        table = storage.read_parquet(uri)
        total += table.num_rows
        if table.num_rows:
            table, removed = drop_near_duplicates(table, keep_of, published)
            removed_rows += removed
        storage.write_parquet(out, table)
    if removed_rows:
        storage.write_parquet(run.layout.removed(NAME), pa.Table.from_pylist(removed_rows))
    stats = {"input": total, "removed": len(removed_rows), "kept": total - len(removed_rows),
             "duplicate_rate": round(len(removed_rows) / total, 6) if total else 0.0,
             "clusters": len(clusters), "duplicates": len(dup_ids), "removed_published": len(published),
             "threshold": round(params.threshold(), 4), "params": params.to_dict()}
    return StageResult(NAME, {"documents": outputs, "clusters": clusters_uri}, stats)


def drop_near_duplicates(table, in_run: dict[str, str], published: dict[str, tuple[str, float]]):
    """(the rows of ``table`` that near-copy nothing, the removed rows with their reason): ``in_run`` maps a
    prompt id to the earlier document of the run it near-copies, ``published`` to the published one (and
    the estimated Jaccard)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    drop = sorted(set(in_run) | set(published))
    if not drop or not table.num_rows:
        return table, []
    is_dup = pc.is_in(table.column("prompt_id"), value_set=pa.array(drop, pa.string()))
    removed = []
    for r in table.filter(is_dup).to_pylist():
        if r["prompt_id"] in in_run:
            removed.append({**r, "filter_reason": "near_duplicate", "duplicate_of": in_run[r["prompt_id"]]})
        else:
            match, similarity = published[r["prompt_id"]]
            removed.append({**r, "filter_reason": "near_duplicate_published", "duplicate_of": match, "similarity": similarity})
    return table.filter(pc.invert(is_dup)), removed


QUERY_ROWS = 65_536  # new documents asked of the published index at a time (bounded memory)


def published_near_duplicates(index, signature_uris: list[str], params) -> dict[str, tuple[str, float]]:
    """prompt_id -> (published prompt_id it near-copies, estimated Jaccard) for the documents of the
    signature files, asked of the index in blocks of QUERY_ROWS documents."""
    import numpy as np
    import pyarrow.compute as pc

    from ..quality.minhash import band_columns

    out: dict[str, tuple[str, float]] = {}
    if not index.names:
        return out
    columns = ["prompt_id", "n_shingles", *band_columns(params), "sig"]
    block: list = []

    def ask() -> None:
        import pyarrow as pa

        t = pa.Table.from_batches(block)
        sig = pc.list_flatten(t.column("sig")).to_numpy().reshape(-1, params.num_perm)
        bands = np.stack([t.column(c).to_numpy() for c in band_columns(params)], axis=1)
        ids = t.column("prompt_id").to_pylist()
        for row, match, jaccard in index.near_duplicates(sig, bands, t.column("n_shingles").to_numpy()):
            out[ids[row]] = (match, round(float(jaccard), 4))
        block.clear()

    for uri in signature_uris:
        for batch in storage.iter_batches(uri, columns, 8192):
            block.append(batch)
            if sum(b.num_rows for b in block) >= QUERY_ROWS:
                ask()
    if block:
        ask()
    return out

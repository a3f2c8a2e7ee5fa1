"""dedup: exact dedup by normalized-text hash, a cheap first pass before MinHash -- across the whole run and
against every document the corpus already published (the base version's index, from ``history``).

Reads every ``judge`` shard (the filtered documents, scored and refined when the judge is on) and ``history``; writes ``dedup/shard-N.parquet`` (one per shard, same
indexes) and the dropped rows to ``dedup/removed.parquet`` (``exact_duplicate`` within the run,
``published_duplicate`` of an earlier version, with ``duplicate_of``). Streams shard by shard and holds only
the hashes in memory; the first occurrence (in shard order, then row order) is kept, so the result does
not depend on task timing (``quality.dedup``); the index is asked once for all the run's hashes.
"""

from __future__ import annotations

from typing import Any

from .. import storage
from .contract import RunContext, StageResult, result, shards

NAME = "dedup"
READS = ("judge", "history")
MAPPED = False
USES: tuple[str, ...] = ()  # the published index comes through history's marker


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa

    from ..quality.dedup import first_occurrences
    from .history import published_index

    documents = {i: result(run, "judge", i)["outputs"]["documents"] for i in shards(run)}
    # First pass: the hashes only (one column), so the index is asked once for the whole run.
    hashes = {i: [h for b in storage.iter_batches(u, ["text_hash"], 65536) for h in b.column(0).to_pylist()]
              for i, u in documents.items()}
    published = published_index(run).exact_duplicates(sorted({h for hs in hashes.values() for h in hs}))
    seen: set[str] = set()
    outputs, kept_total, removed_run, removed_published = [], 0, 0, 0
    removed_rows: list[dict[str, Any]] = []
    for index, uri in documents.items():
        table = storage.read_parquet(uri)
        first = first_occurrences(hashes[index], seen)
        old = [h in published for h in hashes[index]]
        dropped = [i for i, (f, o) in enumerate(zip(first, old)) if o or not f]
        for i, row in zip(dropped, table.take(pa.array(dropped, pa.int64())).to_pylist() if dropped else []):
            if old[i]:  # a document an earlier version published: name it
                removed_rows.append({**row, "filter_reason": "published_duplicate", "duplicate_of": published[row["text_hash"]]})
                removed_published += 1
            else:
                removed_rows.append({**row, "filter_reason": "exact_duplicate", "duplicate_of": None})
                removed_run += 1
        if dropped:
            table = table.filter(pa.array([f and not o for f, o in zip(first, old)], pa.bool_()))
        out = run.layout.shard(NAME, index)
        storage.write_parquet(out, table)
        outputs.append(out)
        kept_total += table.num_rows
    if removed_rows:
        storage.write_parquet(run.layout.removed(NAME), pa.Table.from_pylist(removed_rows))
    removed = removed_run + removed_published
    stats = {"input": kept_total + removed, "kept": kept_total, "removed": removed,
             "removed_in_run": removed_run, "removed_published": removed_published}
    return StageResult(NAME, {"documents": outputs}, stats)

"""dedup: exact dedup across the whole run by normalized-text hash, a cheap first pass before MinHash.

Reads every ``filter_shard`` shard; writes ``dedup/shard-N.parquet`` (one per shard, same indexes) and
the dropped rows to ``dedup/removed.parquet``. Streams shard by shard and holds only the hashes in
memory; the first occurrence (in shard order, then row order) is kept, so the result does not depend
on task timing (``quality.dedup``).
"""

from __future__ import annotations

from typing import Any

from .. import storage
from .contract import RunContext, StageResult, result, shards

NAME = "dedup"
READS = ("filter_shard",)
MAPPED = False


def run(run: RunContext, shard: int | None = None) -> StageResult:
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..quality.dedup import first_occurrences

    seen: set[str] = set()
    outputs, removed_total, kept_total = [], 0, 0
    removed_rows: list[dict[str, Any]] = []
    for index in shards(run):
        table = storage.read_parquet(result(run, "filter_shard", index)["outputs"]["documents"])
        keep_mask = first_occurrences(table.column("text_hash").to_pylist() if table.num_rows else [], seen)
        if table.num_rows:
            mask = pa.array(keep_mask, pa.bool_())
            removed = table.filter(pc.invert(mask)).to_pylist()
            removed_rows.extend({**row, "filter_reason": "exact_duplicate"} for row in removed)
            table = table.filter(mask)
        out = run.layout.shard(NAME, index)
        storage.write_parquet(out, table)
        outputs.append(out)
        kept_total += table.num_rows
        removed_total += len(keep_mask) - table.num_rows
    if removed_rows:
        storage.write_parquet(run.layout.removed(NAME), pa.Table.from_pylist(removed_rows))
    stats = {"input": kept_total + removed_total, "kept": kept_total, "removed": removed_total}
    return StageResult(NAME, {"documents": outputs}, stats)

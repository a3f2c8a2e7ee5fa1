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

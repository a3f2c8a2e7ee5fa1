"""Exact dedup by normalized-text hash (``quality.filters.text_hash``): the cheap pass before MinHash."""

from __future__ import annotations

from collections.abc import Iterable


def first_occurrences(hashes: Iterable[str], seen: set[str]) -> list[bool]:
    """The keep mask of ``hashes``: True where a hash appears for the first time, counting every hash in
    ``seen`` (which this updates) as earlier. Fed shard by shard, row by row, the first occurrence in
    that order is kept, whatever the timing of the tasks that wrote the shards."""
    keep = []
    for h in hashes:
        keep.append(h not in seen)
        seen.add(h)
    return keep

"""filter_shard (mapped): the heuristic filters on one generated shard, streamed as record batches.

Reads ``generate/shard-N.parquet``; writes kept rows (plus ``n_words``, ``n_chars``, ``text_hash``) to
``filter_shard/shard-N.parquet`` and removed rows with their ``filter_reason`` to
``filter_shard/removed/shard-N.parquet``. Stats: one count per reason and the language confusion counts.
The rules (length, truncation, refusals, Gopher quality + repetition, language id) live in
:mod:`synthcorpus.quality.filters`.
"""

from __future__ import annotations

from collections import Counter

from .. import storage
from .contract import RunContext, StageResult, result

NAME = "filter_shard"
READS = ("generate",)
MAPPED = True
USES: tuple[str, ...] = ("quality.min_words", "quality.max_words", "quality.drop_truncated", "quality.refusal_phrases",
                         "quality.heuristics")
BATCH_ROWS = 1024


def run(run: RunContext, shard: int | None, batch_size: int = BATCH_ROWS) -> StageResult:
    import pyarrow as pa

    from ..quality.filters import filter_batch, kept_schema, reason_names, refusal_phrases, removed_schema

    generated_uri = result(run, "generate", shard)["outputs"]["shard"]
    out_uri, removed_uri = run.layout.shard(NAME, shard), run.layout.removed(NAME, shard)
    quality = run.spec.quality
    phrases = refusal_phrases(quality)
    schema = storage.parquet_schema(generated_uri)
    n_input = n_kept = 0
    reasons: Counter[str] = Counter()
    confusion: dict[str, Counter[str]] = {}
    with storage.ParquetStreamWriter(out_uri, kept_schema(schema)) as kept_out, \
            storage.ParquetStreamWriter(removed_uri, removed_schema(schema)) as removed_out:
        for batch in storage.iter_batches(generated_uri, batch_size=batch_size):
            kept, removed, removed_reasons = filter_batch(pa.Table.from_batches([batch]), quality, phrases, confusion)
            kept_out.write(kept)
            removed_out.write(removed)
            n_input += batch.num_rows
            n_kept += kept.num_rows
            reasons.update(removed_reasons)
    stats = {
        "input": n_input,
        "kept": n_kept,
        "removed": n_input - n_kept,
        "reasons": {r: reasons.get(r, 0) for r in reason_names(quality.heuristics)},
        # requested language -> detected language -> documents (before filtering, failed rows excluded)
        "language_confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
    }
    return StageResult(NAME, {"documents": out_uri, "removed": removed_uri}, stats, shard=shard)

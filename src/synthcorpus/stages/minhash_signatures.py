"""minhash_signatures (mapped): MinHash signatures and LSH band hashes of one exact-deduplicated shard.

Reads ``dedup/shard-N.parquet``; writes ``minhash_signatures/shard-N.parquet`` (one row per document:
shard, row, prompt_id, shingle count, one column per band, the signature). Streamed, one record batch
of texts at a time. The algorithm lives in :mod:`synthcorpus.quality.minhash`.
"""

from __future__ import annotations

from .contract import RunContext, StageResult, result

NAME = "minhash_signatures"
READS = ("dedup",)
MAPPED = True
USES: tuple[str, ...] = ("quality.near_dedup.ngram", "quality.near_dedup.bands", "quality.near_dedup.rows",
                         "quality.near_dedup.seed")  # what the signatures depend on (MinHashParams.signature_key)


def run(run: RunContext, shard: int | None) -> StageResult:
    from ..quality.minhash import MinHashParams, write_signatures

    documents = result(run, "dedup")["outputs"]["documents"][shard]
    out_uri = run.layout.shard(NAME, shard)
    params = MinHashParams.from_spec(run.spec.quality.near_dedup)
    stats = write_signatures(documents, out_uri, shard, params)
    return StageResult(NAME, {"signatures": out_uri}, {**stats, "source": documents}, shard=shard)

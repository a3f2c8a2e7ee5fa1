"""Shard planning and per-shard generation (what ``python -m synthcorpus.worker generate`` runs).

A plan shard is a self-describing Parquet file: its rows are prompts, its schema metadata carries the
generation config, so a worker (in-process task or Kubernetes pod) needs nothing but the two URIs.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from . import storage
from .engines import Engine, EngineError, SamplingParams, load_engine
from .run import RunContext, StageResult

log = logging.getLogger(__name__)
META_KEY = b"synthcorpus.generation"


def plan_shards(run: RunContext, prompts_uri: str) -> StageResult:
    """Split the prompt set into shards of ``generation.shard_size`` prompts."""
    prompts = storage.read_parquet(prompts_uri)
    gen = run.spec.generation
    config = {**run.spec.canonical()["generation"], "base_dir": str(run.spec.spec_dir), "run_id": run.run_id}
    meta = {META_KEY: json.dumps(config).encode()}
    shards = []
    for index, start in enumerate(range(0, prompts.num_rows, gen.shard_size)):
        part = prompts.slice(start, gen.shard_size)
        part = part.replace_schema_metadata({**(part.schema.metadata or {}), **meta})
        name = f"shard-{index:05d}.parquet"
        in_uri = run.run_uri("plan", name)
        storage.write_parquet(in_uri, part)
        shards.append({"index": index, "input": in_uri, "output": run.run_uri("generate", name), "rows": part.num_rows})
    stats = {"shards": len(shards), "prompts": prompts.num_rows, "shard_size": gen.shard_size}
    return StageResult("plan", {"shards": shards}, stats).save(run)


class Progress:
    """Logs rows done, rate and ETA at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, label: str, total: int, every_s: float = 5.0):
        self.label, self.total, self.every_s = label, total, every_s
        self.done = self.tokens = 0
        self.started = self._last = time.perf_counter()

    def update(self, tokens: int) -> None:
        self.done += 1
        self.tokens += tokens
        now = time.perf_counter()
        if now - self._last >= self.every_s or self.done == self.total:
            self._last = now
            elapsed = max(now - self.started, 1e-9)
            rate = self.done / elapsed
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info(
                "%s: %d/%d rows, %.2f rows/s, %.1f tok/s, ETA %.0fs",
                self.label, self.done, self.total, rate, self.tokens / elapsed, eta,
            )


def generate_shard(input_uri: str, output_uri: str, engine: Engine | None = None) -> dict[str, Any]:
    """Generate every prompt of one plan shard; commit the output shard atomically.

    Re-running for a committed output returns its stats without loading the model.
    """
    import pyarrow as pa

    done = storage.committed(output_uri)
    if done is not None:
        log.info("%s is committed already (%s rows): skipping", output_uri, done.get("rows"))
        return {**done, "skipped": True}
    table = storage.read_parquet(input_uri)
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise EngineError(f"{input_uri}: expected a plan shard with '{META_KEY.decode()}' schema metadata")
    cfg = json.loads(raw)
    params = SamplingParams.from_config(cfg)
    own_engine = engine is None
    engine = engine or load_engine(cfg)
    try:
        info = engine.model_info()
        rows = table.to_pylist()
        progress = Progress(output_uri.rsplit("/", 1)[-1], len(rows))
        started = time.perf_counter()
        out = []
        for row in rows:
            try:
                c = engine.generate(row["prompt"], params, int(row["seed"]))
            except EngineError as exc:
                raise EngineError(f"{input_uri}: prompt {row['prompt_id']}: {exc}") from exc
            out.append(
                {
                    **row,
                    "text": c.text.strip(),
                    "finish_reason": c.finish_reason,
                    "prompt_tokens": c.prompt_tokens,
                    "completion_tokens": c.completion_tokens,
                    "latency_s": round(c.latency_s, 4),
                    "model": info["model"],
                    "run_id": cfg["run_id"],
                }
            )
            progress.update(c.completion_tokens)
        wall = time.perf_counter() - started
    finally:
        if own_engine:
            engine.close()
    completion_tokens = sum(r["completion_tokens"] for r in out)
    stats = {
        "rows": len(out),
        "prompt_tokens": sum(r["prompt_tokens"] for r in out),
        "completion_tokens": completion_tokens,
        "wall_s": round(wall, 3),
        "tokens_per_s": round(completion_tokens / wall, 2) if wall > 0 else None,
        "finish_reasons": dict(Counter(r["finish_reason"] for r in out)),
        "model": info,
        "sampling": {k: cfg[k] for k in ("max_tokens", "temperature", "top_p", "repeat_penalty", "seed")},
    }
    result = pa.Table.from_pylist(out) if out else table.slice(0, 0)
    storage.commit(output_uri, result, stats)
    log.info("%s committed: %d rows, %d completion tokens in %.1fs", output_uri, len(out), completion_tokens, wall)
    return stats

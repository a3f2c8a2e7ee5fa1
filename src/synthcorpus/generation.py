"""Per-shard generation: the algorithm behind the ``generate`` stage (``synthcorpus.stages.generate``).

A plan shard is a self-describing Parquet file: its rows are prompts, its schema metadata carries the
generation and validation config, so a worker (in-process task or Kubernetes pod) needs nothing but the
URIs of its work unit.

Generation of one shard is resumable and exactly-once:
- finished rows are appended to checkpoint parts in the unit's parts folder (each an atomic write) every ``checkpoint_rows`` rows or ``checkpoint_seconds`` seconds;
- a restarted worker reads the parts, skips their prompt ids and continues;
- at the end the parts are assembled into the output shard (atomic); the stage then commits its marker
  and deletes the parts.
Killing the worker at any moment loses at most the rows generated since the last part, and duplicates
nothing. Rows that fail validation (empty, truncated, refusal, too short, wrong language, engine error) are
regenerated with a new seed up to ``max_attempts``; rows that still fail are kept with ``status=failed``
so that the output holds every prompt id exactly once and nothing is silently lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Any

from . import storage
from .layout import part, part_number
from .engines import Completion, Engine, EngineError, Request, SamplingParams, load_engine

if TYPE_CHECKING:
    from .spec import GenerationSpec

log = logging.getLogger(__name__)
META_KEY = b"synthcorpus.generation"


class Progress:
    """Logs rows done, rate and ETA at most every ``every_s`` seconds (and at the end)."""

    def __init__(self, label: str, total: int, done: int = 0, every_s: float = 5.0):
        self.label, self.total, self.every_s = label, total, every_s
        self.done = self.start_done = done
        self.tokens = 0
        self.started = self._last = time.perf_counter()

    def update(self, rows: int, tokens: int) -> None:
        self.done += rows
        self.tokens += tokens
        now = time.perf_counter()
        if now - self._last >= self.every_s or self.done >= self.total:
            self._last = now
            elapsed = max(now - self.started, 1e-9)
            rate = (self.done - self.start_done) / elapsed
            eta = (self.total - self.done) / rate if rate else float("inf")
            log.info(
                "%s: %d/%d rows, %.2f rows/s, %.1f tok/s, ETA %.0fs",
                self.label, self.done, self.total, rate, self.tokens / elapsed, eta,
            )


def expected_load_share(rows: int, gen: GenerationSpec) -> tuple[float, float]:
    """(expected generation seconds of a shard, model load's share of its time). An upper bound on the
    generation time: every row runs to max_tokens; real runs stop earlier, so the true share is higher."""
    gen_s = rows * gen.max_tokens / gen.expected_tokens_per_s
    return gen_s, (gen.expected_load_s / (gen.expected_load_s + gen_s) if gen_s else 1.0)


def _attempt_seed(seed: int, attempt: int) -> int:
    if attempt == 1:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{seed}:{attempt}".encode()).digest()[:4], "big") & 0x7FFFFFFF


def _read_parts(parts_uri: str) -> tuple[list[Any], int]:
    """Committed checkpoint parts of a shard and the next part number."""
    numbered = sorted((n, u) for u in storage.list_files(parts_uri) if (n := part_number(u)) is not None)
    tables = [storage.read_parquet(u) for _, u in numbered]
    return tables, (numbered[-1][0] + 1 if numbered else 0)


class _Validator:
    def __init__(self, cfg: dict[str, Any]):
        from .quality.filters import refusal_phrases
        from .spec import QualitySpec

        self.quality = QualitySpec.model_validate(cfg["quality"]) if cfg.get("quality") else QualitySpec()
        self.phrases = refusal_phrases(self.quality)  # language -> phrases, built once per shard

    def reason(self, row: dict[str, Any], result: Completion | EngineError) -> str | None:
        from .quality.filters import reject_reason

        if isinstance(result, EngineError):
            return "engine_error"
        return reject_reason({"text": result.text, "finish_reason": result.finish_reason, "language": row.get("language")},
                             self.quality, self.phrases)


def generate_shard(input_uri: str, output_uri: str, parts_uri: str, engine: Engine | None = None) -> dict[str, Any]:
    """Generate every prompt of one plan shard, resuming from the checkpoint parts in ``parts_uri``;
    write the output shard atomically and return its stats. The caller commits the shard's marker (and
    then deletes the parts it supersedes): see ``synthcorpus.stages.generate``.
    """
    import pyarrow as pa

    started = time.perf_counter()
    table = storage.read_parquet(input_uri)
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise EngineError(f"{input_uri}: expected a plan shard with '{META_KEY.decode()}' schema metadata")
    cfg = json.loads(raw)
    params = SamplingParams.from_config(cfg)
    max_attempts = int(cfg.get("max_attempts", 1))
    every_rows = int(cfg.get("checkpoint_rows", 25))
    every_s = float(cfg.get("checkpoint_seconds", 60.0))
    validator = _Validator(cfg)

    parts, next_part = _read_parts(parts_uri)
    finished_ids = {pid for t in parts for pid in t.column("prompt_id").to_pylist()}
    rows = table.to_pylist()
    pending = [r for r in rows if r["prompt_id"] not in finished_ids]
    label = output_uri
    if finished_ids:
        log.info("%s: resuming: %d of %d rows finished in %d checkpoint parts", label, len(finished_ids), len(rows), len(parts))

    own_engine = engine is None
    load_started = time.perf_counter()
    engine = engine if engine is not None else (load_engine(cfg) if pending else None)
    load_s = time.perf_counter() - load_started if own_engine and pending else 0.0
    info = engine.model_info() if engine is not None else None
    batch = max(1, int(getattr(engine, "preferred_batch", 1) or 1))
    progress = Progress(label, len(rows), done=len(finished_ids))
    buffer: list[dict[str, Any]] = []
    last_flush = time.perf_counter()
    session_tokens = 0

    def flush() -> None:
        nonlocal next_part, last_flush, buffer
        if buffer:
            table_part = pa.Table.from_pylist(buffer)
            storage.write_parquet(part(parts_uri, next_part), table_part)
            parts.append(table_part)
            next_part += 1
            buffer = []
        last_flush = time.perf_counter()

    try:
        queue = deque((row, 1, [], 0, 0) for row in pending)  # row, attempt, reasons, prompt/completion tokens so far
        while queue:
            items = [queue.popleft() for _ in range(min(batch, len(queue)))]
            requests = [Request(r["prompt"], _attempt_seed(r["seed"], a)) for r, a, *_ in items]
            gen_started = time.perf_counter()
            results = engine.generate_batch(requests, params)
            gen_s = time.perf_counter() - gen_started
            for (row, attempt, reasons, p_tok, c_tok), req, result in zip(items, requests, results):
                ok = isinstance(result, Completion)
                p_tok += result.prompt_tokens if ok else 0
                c_tok += result.completion_tokens if ok else 0
                session_tokens += result.completion_tokens if ok else 0
                reason = validator.reason(row, result)
                if reason is not None and attempt < max_attempts:
                    queue.append((row, attempt + 1, [*reasons, reason], p_tok, c_tok))
                    continue
                buffer.append({
                    **row,
                    "text": result.text.strip() if ok else "",
                    "finish_reason": result.finish_reason if ok else "error",
                    "prompt_tokens": result.prompt_tokens if ok else 0,
                    "completion_tokens": result.completion_tokens if ok else 0,
                    "total_prompt_tokens": p_tok,
                    "total_completion_tokens": c_tok,
                    "latency_s": round(result.latency_s if ok else gen_s / len(items), 4),
                    "attempts": attempt,
                    "attempt_reasons": [*reasons, reason] if reason else reasons,
                    "status": "ok" if reason is None else "failed",
                    "error": None if ok else str(result)[:500],
                    "generation_seed": req.seed,
                    "model": info["model"],
                    "run_id": cfg["run_id"],
                })
                progress.update(1, result.completion_tokens if ok else 0)
            if len(buffer) >= every_rows or time.perf_counter() - last_flush >= every_s:
                flush()
        flush()
    finally:
        if own_engine and engine is not None:
            engine.close()

    combined = pa.concat_tables(parts, promote_options="default") if parts else table.slice(0, 0)
    out = _exactly_once(combined, [r["prompt_id"] for r in rows], output_uri)
    wall = time.perf_counter() - started
    stats = shard_stats(out.to_pylist(), cfg, wall_s=wall, load_s=load_s, info=info)
    stats["resumed_rows"] = len(finished_ids)  # rows an earlier, interrupted attempt had checkpointed
    storage.write_parquet(output_uri, out)
    log.info("%s written: %d rows (%d failed), %d completion tokens in %.1fs",
             output_uri, out.num_rows, stats["failed"], stats["completion_tokens"], wall)
    return stats


def _exactly_once(table: Any, prompt_ids: list[str], output_uri: str) -> Any:
    """Rows in plan order, one per prompt id; anything else is a bug worth stopping for."""
    import pyarrow as pa

    first: dict[str, int] = {}
    for i, pid in enumerate(table.column("prompt_id").to_pylist() if table.num_rows else []):
        first.setdefault(pid, i)
    missing = [p for p in prompt_ids if p not in first]
    if missing:
        raise EngineError(f"{output_uri}: {len(missing)} prompt ids missing after generation, e.g. {missing[:3]}")
    return table.take(pa.array([first[p] for p in prompt_ids], pa.int64()))


def shard_stats(rows: list[dict[str, Any]], cfg: dict[str, Any], *, wall_s: float, load_s: float, info: dict | None) -> dict[str, Any]:
    """Per-shard accounting: tokens (all attempts), throughput, wall and GPU time, estimated cost."""
    gpus = int(cfg.get("kubernetes", {}).get("gpus_per_pod", 0)) if cfg.get("runner") == "kubernetes" else 0
    completion = sum(r.get("total_completion_tokens", r["completion_tokens"]) for r in rows)
    gpu_seconds = gpus * wall_s
    return {
        "rows": len(rows),
        "ok": sum(r.get("status", "ok") == "ok" for r in rows),
        "failed": sum(r.get("status") == "failed" for r in rows),
        "regenerated": sum(r.get("attempts", 1) > 1 for r in rows),
        "attempt_reasons": dict(Counter(reason for r in rows for reason in r.get("attempt_reasons") or [])),
        "prompt_tokens": sum(r.get("total_prompt_tokens", r["prompt_tokens"]) for r in rows),
        "completion_tokens": completion,
        "kept_completion_tokens": sum(r["completion_tokens"] for r in rows if r.get("status", "ok") == "ok"),
        "wall_s": round(wall_s, 3),
        "load_s": round(load_s, 3),
        "tokens_per_s": round(completion / wall_s, 2) if wall_s > 0 else None,
        "gpus": gpus,
        "gpu_seconds": round(gpu_seconds, 1),
        "cost_usd": round(gpu_seconds / 3600 * float(cfg.get("cost_per_gpu_hour", 0.0)), 4),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        "model": info,
        "sampling": {k: cfg[k] for k in ("max_tokens", "temperature", "top_p", "repeat_penalty", "seed")},
    }

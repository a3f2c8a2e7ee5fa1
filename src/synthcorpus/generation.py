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
nothing. Rows that fail validation (empty, truncated, refusal, too short, wrong language, an engine error
about the prompt) are regenerated with a new seed up to ``max_attempts``; rows that still fail are kept with
``status=failed`` so that the output holds every prompt id exactly once and nothing is silently lost. A
*transient* engine failure (the server gave no reply, a 5xx or a malformed reply after the engine's own
retries: ``EngineError.transient``) is the server's, not the prompt's: it spends no attempt; the shard
checkpoints what is finished and fails uncommitted, and its retry resumes with the same seeds, so an
outage changes no generated text.

Run-wide budget (``generation.budget``): every shard keeps its running totals (tokens, GPU seconds, cost,
rows; all attempts, including those of earlier interrupted attempts) in its own small JSON entry in the
run's budget folder, written at start and at every checkpoint; after each write it lists the folder and
sums every entry. Once a limit is reached the shard issues no more requests: finished rows are kept, every
prompt not generated is written once with ``status=budget`` (empty text, finish_reason ``budget``), and
the stats say ``stopped_by_budget``. Between checkpoints the shard checks its own spending against the
run-wide total it saw last, so a running shard overshoots by at most one checkpoint of the others'.
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
from .quality.filters import BUDGET_STATUS
from .spec.vocabulary import BUDGET_TOTALS

if TYPE_CHECKING:
    from .spec import GenerationSpec

log = logging.getLogger(__name__)
META_KEY = b"synthcorpus.generation"
BUDGET_LIMITS = ("max_completion_tokens", "max_cost_usd", "max_gpu_hours")
_BUDGET_FLOATS = ("gpu_seconds", "cost_usd")
# Types of the columns the generator adds, for rows that never met the engine (budget rows of a shard
# without any generated row would otherwise have null-typed columns).
_GENERATED_COLUMNS = (
    ("text", "string"), ("finish_reason", "string"), ("prompt_tokens", "int64"), ("completion_tokens", "int64"),
    ("total_prompt_tokens", "int64"), ("total_completion_tokens", "int64"), ("latency_s", "float64"),
    ("attempts", "int64"), ("attempt_reasons", "list<string>"), ("status", "string"), ("error", "string"),
    ("generation_seed", "int64"), ("model", "string"), ("run_id", "string"),
)


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


def gpus_of(cfg: dict[str, Any]) -> int:
    """GPUs a shard holds while it runs: the pod's on the Kubernetes runner, none locally."""
    return int(cfg.get("kubernetes", {}).get("gpus_per_pod", 0)) if cfg.get("runner") == "kubernetes" else 0


def cost_usd(cfg: dict[str, Any], *, gpu_seconds: float, prompt_tokens: int, completion_tokens: int) -> float:
    """Estimated cost: GPU hours at ``cost_per_gpu_hour`` plus prompt + completion tokens at
    ``cost_per_million_tokens`` (token-billed servers). The one formula for stats, lineage and the budget."""
    return (gpu_seconds / 3600 * float(cfg.get("cost_per_gpu_hour", 0.0) or 0.0)
            + (prompt_tokens + completion_tokens) / 1e6 * float(cfg.get("cost_per_million_tokens", 0.0) or 0.0))


def budget_reached(limits: dict[str, Any], used: dict[str, float]) -> list[str]:
    """The limits (names from BUDGET_LIMITS) that the totals ``used`` have reached."""
    values = {"max_completion_tokens": used.get("completion_tokens", 0), "max_cost_usd": used.get("cost_usd", 0.0),
              "max_gpu_hours": used.get("gpu_seconds", 0.0) / 3600}
    return [k for k in BUDGET_LIMITS if limits.get(k) is not None and values[k] >= limits[k]]


def read_budget(budget_dir: str, skip: str | None = None) -> dict[str, float]:
    """The sum of every shard's entry in ``budget_dir`` (one listing, one small read per entry), leaving
    out the entry named like ``skip``. Only ``.json`` files are entries: an atomic write in progress is a
    temporary file beside its entry."""
    total: dict[str, float] = {k: 0.0 if k in _BUDGET_FLOATS else 0 for k in BUDGET_TOTALS}
    skip_name = skip.rsplit("/", 1)[-1] if skip else None
    for uri in storage.list_files(budget_dir):
        name = uri.rsplit("/", 1)[-1]
        if not name.endswith(".json") or name == skip_name:
            continue
        try:
            entry = storage.read_json(uri)
        except FileNotFoundError:  # listed, then replaced by its writer's rename: its next version counts next time
            continue
        for k in BUDGET_TOTALS:
            total[k] += float(entry.get(k) or 0) if k in _BUDGET_FLOATS else int(entry.get(k) or 0)
    return total


class _Budget:
    """One shard's running totals (all its attempts) in its budget entry, and the run-wide check."""

    def __init__(self, cfg: dict[str, Any], entry: str | None, budget_dir: str | None, limits: dict[str, Any] | None,
                 parts: list[Any], started: float, label: str):
        self.cfg, self.entry, self.dir, self.started = cfg, entry, budget_dir, started
        self.limits = {k: (limits or {}).get(k) for k in BUDGET_LIMITS}
        self.limited = any(v is not None for v in self.limits.values())
        self.gpus = gpus_of(cfg)
        prior = storage.read_json(entry) if entry and storage.exists(entry) else {}
        rows = [r for t in parts for r in t.select(
            [c for c in ("total_prompt_tokens", "total_completion_tokens") if c in t.column_names]).to_pylist()]
        # Rows in the parts were paid for by earlier attempts; their last entry may also hold tokens of
        # rows they had not checkpointed yet (spent all the same) and their GPU time.
        self.base = {
            "completion_tokens": max(int(prior.get("completion_tokens", 0)), sum(r.get("total_completion_tokens") or 0 for r in rows)),
            "prompt_tokens": max(int(prior.get("prompt_tokens", 0)), sum(r.get("total_prompt_tokens") or 0 for r in rows)),
            "gpu_seconds": float(prior.get("gpu_seconds", 0.0)),
        }
        self.completion = self.prompt = 0  # this attempt's
        self.rows = len(rows)
        self.others: dict[str, float] = {k: 0 for k in BUDGET_TOTALS}  # the other shards, as last read
        self.used: dict[str, float] | None = None  # run-wide totals at the last check
        self.reached: list[str] = []
        if self.limited and self.dir and not self.entry:
            log.warning("%s: no budget entry: the run-wide budget counts this shard's spending, other shards do not see it", label)

    def spend(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.prompt += prompt_tokens
        self.completion += completion_tokens

    def totals(self) -> dict[str, float]:
        c, p = self.base["completion_tokens"] + self.completion, self.base["prompt_tokens"] + self.prompt
        gpu = self.base["gpu_seconds"] + self.gpus * (time.perf_counter() - self.started)
        return {"completion_tokens": c, "prompt_tokens": p, "gpu_seconds": round(gpu, 3),
                "cost_usd": round(cost_usd(self.cfg, gpu_seconds=gpu, prompt_tokens=p, completion_tokens=c), 6),
                "rows": self.rows}

    def checkpoint(self, rows: int, done: bool = False) -> bool:
        """Write this shard's entry; unless ``done``, read the run's and check: True once a limit is reached."""
        self.rows = rows
        own = self.totals()
        if self.entry:
            storage.write_json(self.entry, {**own, "done": done, "limits": self.limits,
                                            "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if self.limited and not done:
            if self.dir:
                self.others = read_budget(self.dir, skip=self.entry)
            return self.check(own)
        return bool(self.reached)

    def check(self, own: dict[str, float] | None = None) -> bool:
        """Whether the run-wide totals (the others as last read, plus this shard now) reach a limit."""
        if not self.limited:
            return False
        own = own or self.totals()
        self.used = {k: (round(self.others[k] + own[k], 6) if k in _BUDGET_FLOATS else int(self.others[k] + own[k]))
                     for k in BUDGET_TOTALS}
        self.reached = budget_reached(self.limits, self.used)
        return bool(self.reached)


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


def generate_shard(input_uri: str, output_uri: str, parts_uri: str, engine: Engine | None = None, *,
                   budget_entry: str | None = None, budget_dir: str | None = None,
                   budget: dict[str, Any] | None = None) -> dict[str, Any]:
    """Generate every prompt of one plan shard, resuming from the checkpoint parts in ``parts_uri``;
    write the output shard atomically and return its stats. The caller commits the shard's marker (and
    then deletes the parts it supersedes): see ``synthcorpus.stages.generate``.

    Budget: ``budget_entry`` is this shard's running-totals file, ``budget_dir`` the folder of every
    entry of the run, ``budget`` the limits (``max_completion_tokens``, ``max_cost_usd``,
    ``max_gpu_hours``; None = unlimited). The last two default to the plan shard's config (``budget_dir``,
    ``budget``); without an entry the shard's spending is counted for itself only.
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

    tracker = _Budget(cfg, budget_entry, budget_dir if budget_dir is not None else cfg.get("budget_dir"),
                      budget if budget is not None else cfg.get("budget"), parts, started, label)
    # Before the first request (and before loading a model): a resumed shard, or one that starts after
    # the others spent the budget, generates nothing new.
    tracker.checkpoint(len(finished_ids))
    generating = bool(pending) and not tracker.reached

    own_engine = engine is None
    load_started = time.perf_counter()
    engine = engine if engine is not None else (load_engine(cfg) if generating else None)
    load_s = time.perf_counter() - load_started if own_engine and generating else 0.0
    info = engine.model_info() if engine is not None else None
    batch = max(1, int(getattr(engine, "preferred_batch", 1) or 1))
    progress = Progress(label, len(rows), done=len(finished_ids))
    buffer: list[dict[str, Any]] = []
    last_flush = time.perf_counter()
    session_tokens = 0

    def flush(done: bool = False) -> None:
        nonlocal next_part, last_flush, buffer
        if buffer:
            table_part = pa.Table.from_pylist(buffer)
            storage.write_parquet(part(parts_uri, next_part), table_part)
            parts.append(table_part)
            next_part += 1
            buffer = []
        tracker.checkpoint(sum(t.num_rows for t in parts), done=done)  # after the part: totals cover it
        last_flush = time.perf_counter()

    queue = deque((row, 1, [], 0, 0) for row in pending)  # row, attempt, reasons, prompt/completion tokens so far
    try:
        while queue and generating and not tracker.reached:
            items = [queue.popleft() for _ in range(min(batch, len(queue)))]
            requests = [Request(r["prompt"], _attempt_seed(r["seed"], a)) for r, a, *_ in items]
            gen_started = time.perf_counter()
            results = engine.generate_batch(requests, params)
            gen_s = time.perf_counter() - gen_started
            outage: list[EngineError] = []
            for (row, attempt, reasons, p_tok, c_tok), req, result in zip(items, requests, results):
                if isinstance(result, EngineError) and result.transient:
                    outage.append(result)  # the server's failure, not the prompt's: no attempt spent, see below
                    continue
                ok = isinstance(result, Completion)
                p_tok += result.prompt_tokens if ok else 0
                c_tok += result.completion_tokens if ok else 0
                session_tokens += result.completion_tokens if ok else 0
                if ok:
                    tracker.spend(result.prompt_tokens, result.completion_tokens)
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
            if outage:
                # Keep what is finished (a checkpoint part), then fail the shard without committing it: the task's
                # retry resumes with the same seeds, so a server outage changes no published text.
                flush()
                done_rows = sum(t.num_rows for t in parts)
                raise EngineError(
                    f"{label}: {len(outage)} request(s) failed after the engine's retries, e.g. {outage[0]}; "
                    f"{done_rows} of {len(rows)} rows are checkpointed in {parts_uri}: a retry resumes from them")
            # Own spending against the run-wide total last read: no I/O; the periodic flush reads again.
            if tracker.check() or len(buffer) >= every_rows or time.perf_counter() - last_flush >= every_s:
                flush()
        flush(done=True)
    finally:
        if own_engine and engine is not None:
            engine.close()

    # Whatever is still queued was not generated (budget): one row each, with what its attempts spent.
    not_generated = [_budget_row(row, attempt - 1, reasons, p_tok, c_tok, info, cfg) for row, attempt, reasons, p_tok, c_tok in queue]
    if not_generated:
        log.warning("%s: run budget reached (%s; run-wide %s): %d of %d prompts not generated", label,
                    ", ".join(f"{k}={tracker.limits[k]}" for k in tracker.reached), tracker.used, len(not_generated), len(rows))
        parts = [*parts, _budget_table(pa, table.schema, not_generated)]
    combined = pa.concat_tables(parts, promote_options="default") if parts else table.slice(0, 0)
    out = _exactly_once(combined, [r["prompt_id"] for r in rows], output_uri)
    wall = time.perf_counter() - started
    stats = shard_stats(out.to_pylist(), cfg, wall_s=wall, load_s=load_s, info=info)
    stats["resumed_rows"] = len(finished_ids)  # rows an earlier, interrupted attempt had checkpointed
    stats["stopped_by_budget"] = bool(not_generated)
    # limits; run-wide totals at the last check (at the stop, if it stopped); this shard's own totals
    stats["budget"] = {"limits": tracker.limits, "used": tracker.used, "spent": tracker.totals(), "reached": tracker.reached}
    storage.write_parquet(output_uri, out)
    log.info("%s written: %d rows (%d failed, %d not generated), %d completion tokens in %.1fs",
             output_uri, out.num_rows, stats["failed"], stats["not_generated"], stats["completion_tokens"], wall)
    return stats


def _budget_row(row: dict[str, Any], attempts: int, reasons: list[str], p_tok: int, c_tok: int,
                info: dict | None, cfg: dict[str, Any]) -> dict[str, Any]:
    """A prompt the budget left without a generation (attempts so far, e.g. ones that failed validation,
    keep their reasons and the tokens they spent)."""
    return {**row, "text": "", "finish_reason": BUDGET_STATUS, "prompt_tokens": 0, "completion_tokens": 0,
            "total_prompt_tokens": p_tok, "total_completion_tokens": c_tok, "latency_s": 0.0, "attempts": attempts,
            "attempt_reasons": reasons, "status": BUDGET_STATUS, "error": None, "generation_seed": None,
            "model": info["model"] if info else None, "run_id": cfg["run_id"]}


def _budget_table(pa: Any, input_schema: Any, rows: list[dict[str, Any]]) -> Any:
    schema = input_schema.remove_metadata()
    for name, typ in _GENERATED_COLUMNS:
        field = pa.field(name, pa.list_(pa.string()) if typ == "list<string>" else getattr(pa, typ)())
        i = schema.get_field_index(name)
        schema = schema.set(i, field) if i >= 0 else schema.append(field)
    return pa.Table.from_pylist(rows, schema=schema)


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
    """Per-shard accounting: tokens (all attempts), throughput, wall and GPU time (this attempt), estimated
    cost (:func:`cost_usd`)."""
    gpus = gpus_of(cfg)
    completion = sum(r.get("total_completion_tokens", r["completion_tokens"]) for r in rows)
    prompt = sum(r.get("total_prompt_tokens", r["prompt_tokens"]) for r in rows)
    gpu_seconds = gpus * wall_s
    return {
        "rows": len(rows),
        "ok": sum(r.get("status", "ok") == "ok" for r in rows),
        "failed": sum(r.get("status") == "failed" for r in rows),
        "not_generated": sum(r.get("status") == BUDGET_STATUS for r in rows),
        "regenerated": sum(r.get("attempts", 1) > 1 for r in rows),
        "attempt_reasons": dict(Counter(reason for r in rows for reason in r.get("attempt_reasons") or [])),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "kept_completion_tokens": sum(r["completion_tokens"] for r in rows if r.get("status", "ok") == "ok"),
        "wall_s": round(wall_s, 3),
        "load_s": round(load_s, 3),
        "tokens_per_s": round(completion / wall_s, 2) if wall_s > 0 else None,
        "gpus": gpus,
        "gpu_seconds": round(gpu_seconds, 1),
        "cost_usd": round(cost_usd(cfg, gpu_seconds=gpu_seconds, prompt_tokens=prompt, completion_tokens=completion), 4),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in rows)),
        "model": info,
        "sampling": {k: cfg[k] for k in ("max_tokens", "temperature", "top_p", "repeat_penalty", "seed")},
    }

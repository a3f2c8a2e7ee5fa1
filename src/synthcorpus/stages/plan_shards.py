"""plan_shards: split the prompt set into self-contained generation work units.

Reads ``prompts``; writes ``plan_shards/shard-00000.parquet``: prompts plus the generation and
validation config in the schema metadata, so a worker (in-process task or Kubernetes pod) needs nothing
but the URIs of its unit. Shards are sized so that generation time dwarfs model load time; every mapped
stage after this one has exactly these shards.
"""

from __future__ import annotations

import json
import logging

from .. import storage
from .contract import RunContext, StageResult, result
from .generate import work_unit

NAME = "plan_shards"
READS = ("prompts",)
MAPPED = False
# The work units embed these (the generation validator's part of quality: filters.reject_reason's rules).
USES: tuple[str, ...] = ("generation", "quality.min_words", "quality.max_words", "quality.drop_truncated",
                         "quality.refusal_phrases", "quality.heuristics")
LOAD_SHARE_WARNING = 0.05

log = logging.getLogger(__name__)


def run(run: RunContext, shard: int | None = None) -> StageResult:
    from ..airflow_adapter import max_map_length
    from ..generation import META_KEY, expected_load_share

    spec = run.spec
    gen = spec.generation
    prompts = storage.read_parquet(result(run, "prompts")["outputs"]["prompts"])
    n = prompts.num_rows
    map_limit = max_map_length()
    rows = gen.rows_per_shard(n, map_limit)
    warnings = []
    if rows > (wanted := gen.rows_per_shard(n, None)):
        warnings.append(
            f"{n} prompts in shards of {wanted} would need {-(-n // wanted)} shards, more than Airflow's "
            f"[core] max_map_length ({map_limit}): shards grew to {rows} prompts each")
        log.warning("plan: %s", warnings[-1])
    config = unit_config(run)
    meta = {META_KEY: json.dumps(config).encode()}
    units = []
    for index, start in enumerate(range(0, n, rows)):
        part = prompts.slice(start, rows)
        part = part.replace_schema_metadata({**(part.schema.metadata or {}), **meta})
        unit = work_unit(run.layout, index)
        storage.write_parquet(unit["input"], part)
        units.append({**unit, "rows": part.num_rows})
    gen_s, load_share = expected_load_share(rows, gen)
    stats = {
        "shards": len(units),
        "prompts": n,
        "rows_per_shard": rows,
        "expected_load_s": gen.expected_load_s,
        "expected_generation_s_per_shard": round(gen_s, 1),
        "expected_load_share": round(load_share, 4),
        "max_map_length": map_limit,
        "warnings": warnings,
    }
    if load_share > LOAD_SHARE_WARNING:
        warnings.append(
            f"model load would be {100 * load_share:.1f}% of each shard's time ({gen.expected_load_s:.0f}s load vs "
            f"{gen_s:.0f}s generation); raise generation.target_tokens_per_shard or shard_size")
        log.warning("plan: %s", warnings[-1])
    log.info("plan: %d shards of <= %d prompts; expected load/generation share %.1f%%", len(units), rows, 100 * load_share)
    return StageResult(NAME, {"shards": units}, stats, shards=[u["index"] for u in units])


def unit_config(run: RunContext) -> dict:
    """The generation config every work unit of the run carries in its schema metadata (plan shards here,
    top-up rounds in ``top_up``): a worker needs nothing else."""
    spec, gen = run.spec, run.spec.generation
    config = {
        **spec.canonical()["generation"],
        # Only what the generation validator checks (USES): gate or decontamination changes leave the plan as it is.
        "quality": {k: v for k, v in spec.canonical()["quality"].items() if f"quality.{k}" in USES},
        "base_dir": str(spec.spec_dir),
        "run_id": run.run_id,
        "budget": gen.budget.model_dump(),  # the run-wide limits (generation.budget)
        "budget_dir": run.layout.budget_dir,  # where every shard keeps its running totals
    }
    return config

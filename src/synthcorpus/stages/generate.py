"""generate (mapped, one task per plan shard): generate every prompt of one work unit with the engine.

Reads ``plan_shards/shard-N.parquet``; writes ``generate/shard-N.parquet`` (every prompt id exactly
once; rows that failed validation ``max_attempts`` times kept with ``status=failed``), checkpointing to
``generate/shard-N.parts/`` on the way, and its running totals to ``budget/generate-shard-N.json`` (the
run-wide budget: prompts not generated once it is spent are kept with ``status=budget``). The algorithm
(resume, refine loop, accounting, budget) lives in :mod:`synthcorpus.generation`.

The local runner calls :func:`run` in the Airflow task; the Kubernetes runner maps one pod per shard
that runs ``python -m synthcorpus.worker generate`` -- the same :func:`run_unit`, the same marker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .contract import RunContext, StageResult, commit_once

if TYPE_CHECKING:
    from ..engines import Engine
    from ..layout import RunLayout

NAME = "generate"
READS = ("plan_shards",)
MAPPED = True
# Through its plan shard: the config plan_shards embeds.
USES: tuple[str, ...] = ("generation", "quality.min_words", "quality.max_words", "quality.drop_truncated",
                         "quality.refusal_phrases", "quality.heuristics")


def work_unit(layout: RunLayout, index: int) -> dict[str, Any]:
    """Everything a worker needs for shard ``index``: JSON, so it travels through XCom and pod arguments."""
    return {"index": index, "input": layout.shard("plan_shards", index), "output": layout.shard(NAME, index),
            "parts": layout.parts(NAME, index), "marker": layout.marker(NAME, index),
            "budget_entry": layout.budget_entry(NAME, index)}


def produce(unit: dict[str, Any], engine: Engine | None = None) -> StageResult:
    from ..generation import generate_shard

    # The run's budget folder and limits come with the plan shard's config; the entry is this unit's own.
    stats = generate_shard(unit["input"], unit["output"], unit["parts"], engine=engine,
                           budget_entry=unit.get("budget_entry"))
    # The committed shard supersedes its checkpoint parts: deleted once the marker is written.
    return StageResult(NAME, {"shard": unit["output"]}, stats, shard=int(unit["index"]), temporary=[unit["parts"]])


def run_unit(unit: dict[str, Any], engine: Engine | None = None) -> dict[str, Any]:
    """Generate one work unit under the completion protocol (what the pod's worker command runs)."""
    return commit_once(unit["marker"], lambda: produce(unit, engine))


def run(run: RunContext, shard: int | None) -> StageResult:
    return produce(work_unit(run.layout, shard), run.engine)

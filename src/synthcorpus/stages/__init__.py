"""The stage table: every DAG task of a corpus, in order. The DAG factory (``dags/``), the in-process
runner (``synthcorpus run``, :mod:`synthcorpus.stages.runner`) and the pipeline tests all read it.

Adding a stage means one module in this package (see :mod:`synthcorpus.stages.contract` for what it
declares) and one row here. Light at import time: stage modules import their algorithms inside ``run``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Callable

from . import (
    decontaminate,
    dedup,
    filter_shard,
    generate,
    history,
    judge,
    minhash_signatures,
    near_dedup,
    plan_shards,
    prompts,
    publish,
    quality_gate,
    seeds,
    summary,
    top_up,
    topics,
    validate_shard,
)


@dataclass(frozen=True)
class Stage:
    module: ModuleType
    upstream: tuple[str, ...]  # the DAG tasks it runs after
    shards_from: str = "plan_shards"  # mapped stages: the stage whose committed ``shards`` it expands over

    @property
    def name(self) -> str:
        return self.module.NAME

    @property
    def mapped(self) -> bool:
        """One task per shard of the plan (``run(run, shard)``), else one task per run (``run(run, None)``)."""
        return self.module.MAPPED

    @property
    def reads(self) -> tuple[str, ...]:
        return self.module.READS

    @property
    def run(self) -> Callable:
        return self.module.run


TABLE: tuple[Stage, ...] = (
    Stage(history, ()),
    Stage(seeds, ()),
    Stage(topics, ("seeds",)),
    Stage(prompts, ("seeds", "topics", "history")),
    Stage(plan_shards, ("prompts",)),
    Stage(generate, ("plan_shards",)),
    Stage(filter_shard, ("generate",)),
    Stage(judge, ("filter_shard",)),
    Stage(dedup, ("judge",)),
    Stage(minhash_signatures, ("dedup",)),
    Stage(near_dedup, ("dedup", "minhash_signatures")),
    Stage(decontaminate, ("near_dedup",)),
    Stage(top_up, ("decontaminate",)),
    Stage(validate_shard, ("top_up",), shards_from="top_up"),
    Stage(quality_gate, ("top_up", "validate_shard")),
    Stage(publish, ("quality_gate",)),
    Stage(summary, ("publish",)),
)
STAGES: dict[str, Stage] = {s.name: s for s in TABLE}
# Mapped stages expand over the shards this stage defines (its result's ``shards``), unless their row says
# otherwise (``Stage.shards_from``).
SHARDS_FROM = "plan_shards"
SHARD_SOURCES = ("plan_shards", "top_up")

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
    minhash_signatures,
    near_dedup,
    plan_shards,
    prompts,
    publish,
    quality_gate,
    seeds,
    summary,
    topics,
    validate_shard,
)


@dataclass(frozen=True)
class Stage:
    module: ModuleType
    upstream: tuple[str, ...]  # the DAG tasks it runs after

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
    Stage(seeds, ()),
    Stage(topics, ("seeds",)),
    Stage(prompts, ("seeds", "topics")),
    Stage(plan_shards, ("prompts",)),
    Stage(generate, ("plan_shards",)),
    Stage(filter_shard, ("generate",)),
    Stage(dedup, ("filter_shard",)),
    Stage(minhash_signatures, ("dedup",)),
    Stage(near_dedup, ("dedup", "minhash_signatures")),
    Stage(decontaminate, ("near_dedup",)),
    Stage(validate_shard, ("decontaminate",)),
    Stage(quality_gate, ("decontaminate", "validate_shard")),
    Stage(publish, ("quality_gate",)),
    Stage(summary, ("publish",)),
)
STAGES: dict[str, Stage] = {s.name: s for s in TABLE}
# Mapped stages expand over the shards this stage defines (its result's ``shards``).
SHARDS_FROM = "plan_shards"

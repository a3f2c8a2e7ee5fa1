"""Helpers for tests that run one stage alone: commit the markers of the stages it reads, as the
stages before it would have."""

from __future__ import annotations

from typing import Any

from synthcorpus import storage
from synthcorpus.layout import RunLayout
from synthcorpus.stages.contract import RunContext, StageResult, commit_once, execute


def given(run: RunContext, stage: str, outputs: dict[str, Any], *, shard: int | None = None,
          stats: dict[str, Any] | None = None, shards: list[int] | None = None) -> dict[str, Any]:
    """Commit a marker for ``stage`` (or one shard of it) as if it had run and written ``outputs``."""
    return commit_once(run.layout.marker(stage, shard),
                       lambda: StageResult(stage, outputs, stats or {}, shard=shard, shards=shards))


def given_plan(run: RunContext, n: int) -> dict[str, Any]:
    """A committed plan of ``n`` shards (what every mapped stage expands over)."""
    return given(run, "plan_shards", {"shards": []}, stats={"shards": n}, shards=list(range(n)))


def given_history(run: RunContext) -> dict[str, Any]:
    """The run's base version, as ``history`` finds it in storage (none: a first version)."""
    return execute(run, "history")


def given_documents(run: RunContext, stage: str, uris: list[str]) -> dict[str, Any]:
    """An unmapped stage that produced these document shards (one per plan shard), with the plan and the
    run's base version."""
    given_history(run)
    given_plan(run, len(uris))
    return given(run, stage, {"documents": list(uris)})


def half_done_generate_shard(layout: RunLayout) -> dict[str, int] | None:
    """``{"map_index": i}`` of a generate shard with a committed checkpoint part and no marker yet (its task is
    running), or None. Storage only: cheap enough to poll ten times a second, where the API is not."""
    plan = layout.marker("plan_shards")
    if not storage.exists(plan):
        return None
    for i in storage.read_json(plan)["shards"]:
        if storage.list_files(layout.parts("generate", i)) and not storage.exists(layout.marker("generate", i)):
            return {"map_index": i}
    return None

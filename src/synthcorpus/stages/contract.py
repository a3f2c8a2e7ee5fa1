"""The stage contract: what every stage is, how it runs, how it says it is done.

Every stage is a module in this package named like its DAG task and its storage folder, with

    NAME: str                      the task id = module name = storage folder
    READS: tuple[str, ...]         the stages whose outputs it reads (through the run layout); the run's
                                   shard list (:func:`shards`, from ``plan_shards``) is open to every
                                   stage after the plan
    MAPPED: bool                   one task per shard of the plan, or one task per run
    def run(run: RunContext, shard: int | None) -> StageResult

Completion protocol (one for all stages): :func:`execute` runs a stage (or one shard of a mapped stage)
unless its marker is committed, then commits the marker -- ``{stage}/_stage.commit.json`` or
``{stage}/shard-00000.commit.json`` -- carrying its outputs and stats. Stage functions write their data
atomically and never write markers; re-running a committed stage or shard is a no-op that returns the
marker. Lineage, the summary and the gate read stage results through :func:`results`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .. import storage
from ..layout import RunLayout, sanitize_run_id

if TYPE_CHECKING:
    from ..engines import Engine
    from ..spec import CorpusSpec

log = logging.getLogger(__name__)


class StageError(RuntimeError):
    """A stage cannot run: an input it reads is missing or not committed."""


class SpecChangedError(StageError):
    """The spec file changed while a run was in progress: stages would disagree about the corpus."""


def retry_cannot_help(exc: BaseException) -> bool:
    """True for failures that a retry of the same task would only repeat: bad input of any kind (spec, seed
    file, template, topics: ValueErrors naming file and field), a missing upstream result, a failed quality
    gate, a refused publish. Engine, storage and connection errors are worth retrying."""
    from ..publish import PublishError
    from ..quality.gate import GateFailed

    return isinstance(exc, (ValueError, StageError, GateFailed, PublishError))


@dataclass(frozen=True)
class RunContext:
    """One run of one corpus: its spec, run id, layout, the DAG run's params and, for tests and
    previews only, an engine to use instead of the one the spec configures."""

    spec: CorpusSpec
    run_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    engine: Engine | None = None

    @classmethod
    def create(cls, spec: CorpusSpec, run_id: str, params: Mapping[str, Any] | None = None,
               engine: Engine | None = None) -> RunContext:
        return cls(spec=spec, run_id=sanitize_run_id(run_id), params=dict(params or {}), engine=engine)

    @property
    def layout(self) -> RunLayout:
        return RunLayout.of(self.spec, self.run_id)

    @property
    def version(self) -> str:
        return self.layout.version


@dataclass
class StageResult:
    """What a stage returns: its outputs (URIs), its stats, and the shard list when it defines the
    shards that mapped stages expand over. ``temporary``: URIs deleted once the marker is committed
    (e.g. checkpoint parts that the committed shard supersedes)."""

    stage: str
    outputs: dict[str, Any]
    stats: dict[str, Any] = field(default_factory=dict)
    shard: int | None = None
    shards: list[int] | None = None
    temporary: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {"stage": self.stage, "shard": self.shard, "outputs": self.outputs, "stats": self.stats}
        if self.shards is not None:
            out["shards"] = self.shards
        return out


def read_marker(uri: str) -> dict[str, Any] | None:
    """A committed marker, or None."""
    try:
        return storage.read_json(uri)
    except FileNotFoundError:
        return None


def commit_once(marker_uri: str, produce: Callable[[], StageResult]) -> dict[str, Any]:
    """The completion protocol: return the committed marker if there is one (and the outputs it names
    exist); else produce the result, commit its marker (last: until then the stage or shard does not
    exist), then delete its temporary files."""
    done = read_marker(marker_uri)
    if done is not None:
        missing = missing_outputs(done)
        if not missing:
            log.info("%s is committed already: skipping", marker_uri)
            return {**done, "skipped": True}
        log.warning("%s is committed but its outputs are gone (%s): running it again", marker_uri, ", ".join(missing[:3]))
    result = produce()
    marker = {**result.to_dict(), "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    storage.write_json(marker_uri, marker)
    for uri in result.temporary:
        storage.delete(uri)
    log.info("committed: %s %s", result.stage if result.shard is None else f"{result.stage}[{result.shard}]",
             _short(result.stats))
    return marker


def missing_outputs(marker: dict[str, Any]) -> list[str]:
    """The output URIs a marker names that do not exist (a marker without its data is not a commit)."""
    uris: list[str] = []
    for value in marker.get("outputs", {}).values():
        if isinstance(value, str):
            uris.append(value)
        elif isinstance(value, list):
            uris.extend(v for v in value if isinstance(v, str))
    return [u for u in uris if not storage.exists(u)]


def _short(stats: dict[str, Any]) -> str:
    keys = ("rows", "input", "kept", "removed", "prompts", "seeds", "topics", "shards", "passed")
    return ", ".join(f"{k}={stats[k]}" for k in keys if k in stats)


def result(run: RunContext, stage: str, shard: int | None = None, *, required: bool = True) -> dict[str, Any]:
    """The committed marker of a stage (or of one shard). Missing: StageError if ``required``, else {}."""
    uri = run.layout.marker(stage, shard)
    marker = read_marker(uri)
    if marker is None:
        if required:
            what = stage if shard is None else f"{stage} shard {shard}"
            raise StageError(f"{uri}: expected {what} to be committed before this stage runs")
        return {}
    return marker


def shards(run: RunContext) -> list[int]:
    """The shard indexes of the run, as the plan committed them: every mapped stage has these shards."""
    return list(result(run, "plan_shards")["shards"])


def results(run: RunContext, stage: str, *, required: bool = True) -> list[dict[str, Any]]:
    """Every committed marker of a stage: one for an unmapped stage, one per shard for a mapped stage
    (in shard order). What lineage, the summary and the gate's run metrics read."""
    from . import STAGES

    if not STAGES[stage].mapped:
        found = result(run, stage, required=required)
        return [found] if found else []
    if not required and not read_marker(run.layout.marker("plan_shards")):
        return []
    out = [result(run, stage, i, required=required) for i in shards(run)]
    return [m for m in out if m]


def stats(run: RunContext, stage: str) -> dict[str, Any]:
    """An unmapped stage's stats, {} if it has not committed."""
    return result(run, stage, required=False).get("stats", {})


def open_run(spec_path: str, run_id: str, params: Mapping[str, Any] | None = None,
             engine: Engine | None = None) -> RunContext:
    """Load the spec and pin it to the run: the first task records its hash, later ones must match."""
    from ..spec import load_spec

    spec = load_spec(spec_path)
    run = RunContext.create(spec, run_id, params, engine)
    snapshot = run.layout.spec_snapshot
    if storage.exists(snapshot):
        recorded = storage.read_json(snapshot)["sha256"]
        if recorded != spec.spec_hash():
            raise SpecChangedError(
                f"{spec_path}: changed since run {run.run_id} started (sha256 {recorded[:12]} -> "
                f"{spec.spec_hash()[:12]}); start a new run (new run id) to use the new spec"
            )
    else:
        storage.write_json(snapshot, {"sha256": spec.spec_hash(), "path": spec_path, "spec": spec.canonical()})
    return run


def execute(run: RunContext, stage: str, shard: int | None = None) -> dict[str, Any]:
    """Run one stage (or one shard of a mapped stage) under the completion protocol."""
    from . import STAGES

    entry = STAGES[stage]
    if entry.mapped != (shard is not None):
        raise ValueError(f"stage {stage}: expected {'a shard index' if entry.mapped else 'no shard index'}, got {shard!r}")
    return commit_once(run.layout.marker(stage, shard), lambda: entry.run(run, shard))

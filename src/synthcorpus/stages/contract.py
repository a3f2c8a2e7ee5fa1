"""The stage contract: what every stage is, how it runs, how it says it is done.

Every stage is a module in this package named like its DAG task and its storage folder, with

    NAME: str                      the task id = module name = storage folder
    READS: tuple[str, ...]         the stages whose outputs it reads (through the run layout); the run's
                                   shard list (:func:`shards`, from ``plan_shards``) is open to every
                                   stage after the plan
    MAPPED: bool                   one task per shard of the plan, or one task per run
    USES: tuple[str, ...]          the spec sections it reads, dotted paths into ``spec.canonical()``
                                   (``"quality.decontamination"``; ``"*"``: the whole spec)
    def run(run: RunContext, shard: int | None) -> StageResult
    def fingerprint_inputs(run, shard) -> dict[str, str | None]   optional: content hashes of the files
                                   the spec names that the stage reads (templates, seed, reference files)

Completion protocol (one for all stages): :func:`execute` runs a stage (or one shard of a mapped stage)
unless its marker is committed with the same :func:`fingerprint`, then commits the marker --
``{stage}/_stage.commit.json`` or ``{stage}/shard-00000.commit.json`` -- carrying its outputs, stats and
fingerprint. Stage functions write their data atomically and never write markers; re-running a committed
stage or shard is a no-op that returns the marker. A fingerprint hashes the spec sections the stage uses,
the fingerprints of the markers it reads and its files: when it changes, the stage runs again (and so,
through their inputs, every stage after it), unless that would redo committed work that must not be
redone (:data:`GUARDED`). Lineage, the summary and the gate read stage results through :func:`results`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .. import faults, storage
from ..layout import RunLayout, sanitize_run_id

if TYPE_CHECKING:
    from ..engines import Engine
    from ..spec import CorpusSpec

log = logging.getLogger(__name__)

# Committed work a changed input must not silently redo: the stage, and why. A change that would re-run
# one of these (or a stage before it) is refused; the run keeps its results and a new run id takes the change.
GUARDED: dict[str, str] = {
    "generate": "generate has committed shards that would be generated (and paid for) again",
    "publish": "the run is published and a published version never changes",
}
# Top-level spec sections that define which run this is and where it lives: never changed under a run id.
IDENTITY_SECTIONS = ("name", "storage")
ALL_SECTIONS = "*"  # in USES: the whole spec
# spec.json of a run opened by this contract says so: older runs keep refusing every spec change.
FINGERPRINTS_VERSION = 1


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


def commit_once(marker_uri: str, produce: Callable[[], StageResult],
                fingerprint: Callable[[], dict[str, Any]] | None = None, *,
                on_change: Callable[[list[str]], None] | None = None, run_id: str | None = None) -> dict[str, Any]:
    """The completion protocol: return the committed marker if there is one (and the outputs it names
    exist, and it was committed with the same fingerprint); else produce the result, commit its marker
    (last: until then the stage or shard does not exist), then delete its temporary files.

    ``fingerprint``: what the stage or shard is computed from (:func:`fingerprint`); called before the
    decision and again after ``produce`` for the marker (a stage may commit an input while it runs, as the
    gate commits validate_shard). None, or a committed marker without one (written before fingerprints, or
    by a Kubernetes pod, which has no run context): the commit alone decides, as it always did.
    ``on_change(changes)`` runs before a committed stage runs again for changed inputs; it may refuse (raise).
    ``run_id``: for the fault point ``<stage>:before_commit`` (work stored, marker not written; synthcorpus.faults).
    """
    current = fingerprint() if fingerprint is not None else None
    done = read_marker(marker_uri)
    if done is not None:
        missing = missing_outputs(done)
        recorded = done.get("fingerprint")
        if missing:
            log.warning("%s is committed but its outputs are gone (%s): running it again", marker_uri, ", ".join(missing[:3]))
        elif current is None or not recorded or recorded.get("sha256") == current["sha256"]:
            log.info("%s is committed already: skipping", marker_uri)
            return {**done, "skipped": True}
        else:
            changes = fingerprint_changes(recorded, current)
            log.warning("%s is committed with other inputs (changed: %s): running it again", marker_uri, "; ".join(changes))
            if on_change is not None:
                on_change(changes)
    result = produce()
    faults.point(f"{result.stage}:before_commit", run_id)
    marker = {**result.to_dict(), "committed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    if fingerprint is not None:
        marker["fingerprint"] = fingerprint()
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


def shards(run: RunContext, stage: str | None = None) -> list[int]:
    """The shard indexes a mapped stage expands over, as the stage that defines them committed them: the
    plan's (generate, filter_shard, minhash_signatures; the default), or top_up's, which adds the shards of
    its rounds (validate_shard)."""
    from . import SHARDS_FROM, STAGES

    return list(result(run, STAGES[stage].shards_from if stage else SHARDS_FROM)["shards"])


def results(run: RunContext, stage: str, *, required: bool = True) -> list[dict[str, Any]]:
    """Every committed marker of a stage: one for an unmapped stage, one per shard for a mapped stage
    (in shard order). What lineage, the summary and the gate's run metrics read."""
    from . import STAGES

    if not STAGES[stage].mapped:
        found = result(run, stage, required=required)
        return [found] if found else []
    if not required and not read_marker(run.layout.marker(STAGES[stage].shards_from)):
        return []
    out = [result(run, stage, i, required=required) for i in shards(run, stage)]
    return [m for m in out if m]


def stats(run: RunContext, stage: str) -> dict[str, Any]:
    """An unmapped stage's stats, {} if it has not committed."""
    return result(run, stage, required=False).get("stats", {})


def open_run(spec_path: str, run_id: str, params: Mapping[str, Any] | None = None,
             engine: Engine | None = None) -> RunContext:
    """Load the spec and pin it to the run (``spec.json``): the first task records it; a later task that
    finds it changed either refuses (:class:`SpecChangedError`: the change touches the run's identity or
    committed work in :data:`GUARDED`) or records the change in the snapshot's ``history`` and continues:
    the stages whose fingerprints it changes run again."""
    from ..spec import load_spec

    spec = load_spec(spec_path)
    run = RunContext.create(spec, run_id, params, engine)
    snapshot = run.layout.spec_snapshot
    if storage.exists(snapshot):
        recorded = storage.read_json(snapshot)
        if recorded["sha256"] != spec.spec_hash():
            _accept_spec_change(run, spec_path, recorded)
    else:
        storage.write_json(snapshot, {"sha256": spec.spec_hash(), "path": spec_path, "spec": spec.canonical(),
                                      "fingerprints": FINGERPRINTS_VERSION, "history": []})
    return run


def _accept_spec_change(run: RunContext, spec_path: str, recorded: dict[str, Any]) -> None:
    from . import TABLE

    new = run.spec.canonical()
    old = recorded.get("spec")
    changed = changed_paths(old, new) if isinstance(old, dict) else sorted(new)
    start = (f"{spec_path}: changed since run {run.run_id} started (sha256 {recorded['sha256'][:12]} -> "
             f"{run.spec.spec_hash()[:12]}): {', '.join(changed)}")
    advice = "start a new run (new run id) to regenerate with the new spec"
    if recorded.get("fingerprints") != FINGERPRINTS_VERSION:
        raise SpecChangedError(f"{start}; the run started before stage fingerprints, so no stage can tell what "
                               f"the change touches; {advice}")
    identity = [p for p in changed if p.split(".")[0] in IDENTITY_SECTIONS]
    if identity:
        raise SpecChangedError(f"{start}; {', '.join(identity)} define which run this is and where it is stored; {advice}")
    touched = stages_using(changed)
    for guarded, why in GUARDED.items():
        if guarded in downstream(touched) and committed(run, guarded):
            via = [s.name for s in TABLE if s.name in touched and guarded in downstream([s.name])]
            raise SpecChangedError(f"{start}; used by {', '.join(via)}: {why}; {advice}")
    entry = {"sha256": run.spec.spec_hash(), "previous": recorded["sha256"], "changed": changed,
             "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    storage.write_json(run.layout.spec_snapshot, {**recorded, "sha256": entry["sha256"], "path": spec_path, "spec": new,
                                                  "history": [*recorded.get("history", []), entry]})
    log.warning("%s; recorded in %s; committed stages using it run again: %s", start, run.layout.spec_snapshot,
                ", ".join(s.name for s in TABLE if s.name in touched) or "none")


def execute(run: RunContext, stage: str, shard: int | None = None) -> dict[str, Any]:
    """Run one stage (or one shard of a mapped stage) under the completion protocol."""
    from . import STAGES

    entry = STAGES[stage]
    if entry.mapped != (shard is not None):
        raise ValueError(f"stage {stage}: expected {'a shard index' if entry.mapped else 'no shard index'}, got {shard!r}")
    files = stage_files(run, stage, shard)  # hashed once: the marker's fingerprint reuses them
    return commit_once(run.layout.marker(stage, shard), lambda: entry.run(run, shard),
                       lambda: fingerprint(run, stage, shard, files=files),
                       on_change=lambda changes: _refuse_guarded(run, stage, shard, changes), run_id=run.run_id)


def _refuse_guarded(run: RunContext, stage: str, shard: int | None, changes: list[str]) -> None:
    """Before a committed stage runs again for changed inputs (the spec sections are checked by
    :func:`open_run`; this catches changed files): refuse if that would redo committed GUARDED work."""
    after = downstream([stage])
    for guarded, why in GUARDED.items():
        if guarded in after and committed(run, guarded):
            what = stage if shard is None else f"{stage} shard {shard}"
            raise SpecChangedError(
                f"{run.layout.marker(stage, shard)}: {what} was committed with other inputs (changed: "
                f"{'; '.join(changes)}); running it again would re-run {guarded}, and {why}; start a new run "
                f"(new run id) to use the changed inputs")


# ---------------------------------------------------------------------------------------------- fingerprints


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def uses(stage: str) -> tuple[str, ...]:
    """The spec sections a stage declares it reads; a module without ``USES`` depends on the whole spec."""
    from . import STAGES

    return tuple(getattr(STAGES[stage].module, "USES", (ALL_SECTIONS,)))


def section(canonical: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of the canonical spec; None where the path does not exist (an unset
    optional section such as ``quality.decontamination``)."""
    node: Any = canonical
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def changed_paths(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths whose values differ between two canonical specs, as deep as both are mappings."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.extend(changed_paths(a, b, f"{path}."))
        elif a != b:
            out.append(path)
    return out


def _overlaps(changed: str, used: str) -> bool:
    return used == ALL_SECTIONS or changed == used or changed.startswith(f"{used}.") or used.startswith(f"{changed}.")


def stages_using(changed: Iterable[str]) -> set[str]:
    """The stages whose USES overlap one of these dotted paths."""
    from . import STAGES

    changed = list(changed)
    return {name for name in STAGES if any(_overlaps(c, u) for c in changed for u in uses(name))}


def downstream(stages: Iterable[str]) -> set[str]:
    """These stages and every stage that reads them, directly or through others: what re-runs after them."""
    from . import TABLE

    out = set(stages)
    for stage in TABLE:  # table order: a stage's READS come before it
        if out & set(stage.reads):
            out.add(stage.name)
    return out


def committed(run: RunContext, stage: str) -> bool:
    """Whether a stage (any shard of a mapped stage) has a committed marker."""
    from . import SHARDS_FROM, STAGES

    if stage == "publish" and storage.exists(run.layout.manifest):
        return True  # the version exists even when its publish task stopped before the marker
    if not STAGES[stage].mapped:
        return read_marker(run.layout.marker(stage)) is not None
    plan = read_marker(run.layout.marker(getattr(STAGES[stage], "shards_from", SHARDS_FROM)))
    return bool(plan) and any(read_marker(run.layout.marker(stage, i)) is not None for i in plan.get("shards", []))


def _marker_id(run: RunContext, stage: str, shard: int | None) -> str | None:
    """What a committed marker stands for in the fingerprints of the stages that read it: its fingerprint's
    sha256 (its commit time for a marker without one); None when not committed."""
    marker = read_marker(run.layout.marker(stage, shard))
    if marker is None:
        return None
    return (marker.get("fingerprint") or {}).get("sha256") or f"committed_at:{marker.get('committed_at')}"


def stage_files(run: RunContext, stage: str, shard: int | None = None) -> dict[str, str | None]:
    """The stage's ``fingerprint_inputs(run, shard)``: content hashes of the files it reads, {} if it reads none."""
    from . import STAGES

    hook = getattr(STAGES[stage].module, "fingerprint_inputs", None)
    return dict(hook(run, shard)) if hook is not None else {}


def file_sha256(uri: str) -> str | None:
    """sha256 of a file the spec names, by content (a directory: of its files' hashes in path order); None
    if it does not exist (the stage, when it runs, says what it expected)."""
    try:
        files = storage.list_files(uri)
        if not files:
            return None
        if len(files) == 1:
            return storage.sha256(files[0])[1]
        return _digest([storage.sha256(f)[1] for f in files])
    except FileNotFoundError:
        return None


def fingerprint(run: RunContext, stage: str, shard: int | None = None, *,
                files: Mapping[str, str | None] | None = None) -> dict[str, Any]:
    """What a stage (or one shard of it) is computed from::

        {"sha256": ..., "sections": {path: sha256 of the canonical JSON of that spec section},
         "inputs": {stage[/shard]: fingerprint sha256 of each marker it reads}, "files": {name: sha256}}

    ``inputs``: one entry per stage in READS -- the same shard of a mapped stage read by a mapped stage, one
    combined hash of all shard markers of a mapped stage read by an unmapped one. Markers only (small JSON):
    data files are never re-hashed. ``files``: the stage's ``fingerprint_inputs`` (computed here if not given).
    """
    from . import SHARDS_FROM, STAGES

    entry = STAGES[stage]
    canonical = run.spec.canonical()
    paths: set[str] = set()
    for path in uses(stage):
        if path == ALL_SECTIONS:
            paths.update(canonical)
        elif path.split(".")[0] not in canonical:
            raise ValueError(f"synthcorpus/stages/{stage}.py: USES: expected dotted paths into the spec (sections "
                             f"{', '.join(sorted(canonical))}), got {path!r}")
        else:
            paths.add(path)
    sections = {p: _digest(section(canonical, p)) for p in sorted(paths)}
    inputs: dict[str, str | None] = {}
    for upstream in entry.reads:
        if upstream not in STAGES:
            raise StageError(f"synthcorpus/stages/{stage}.py: READS: expected stages of the table, got {upstream!r}")
        if not STAGES[upstream].mapped:
            inputs[upstream] = _marker_id(run, upstream, None)
        elif entry.mapped:
            inputs[f"{upstream}/{shard}"] = _marker_id(run, upstream, shard)
        else:
            plan = read_marker(run.layout.marker(getattr(STAGES[upstream], "shards_from", SHARDS_FROM))) or {}
            inputs[upstream] = _digest([_marker_id(run, upstream, i) for i in plan.get("shards", [])])
    body = {"sections": sections, "inputs": inputs,
            "files": dict(files) if files is not None else stage_files(run, stage, shard)}
    return {"sha256": _digest(body), **body}


def fingerprint_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two fingerprints, e.g. ``["sections quality.decontamination", "inputs near_dedup"]``."""
    out = []
    for kind in ("sections", "inputs", "files"):
        a, b = old.get(kind) or {}, new.get(kind) or {}
        out += [f"{kind} {k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return out

"""history: the published corpus this run builds on, pinned at the start of the run.

Reads ``latest.json``, the latest version's manifest and its published-documents index (nothing when the
corpus has no version yet, ``refresh.incremental`` is false, or the DAG param ``full_rebuild`` is set);
writes ``history/base.json``: the base version, its rows and data files, the index segments that hold
every published document, the plan cursor the next prompts start from, the yield measured so far and the
prompts to retry. First, the preflight (``stages.preflight``) checks the spec's files, templates, engines
and storage. Everything a refresh relies on is checked here, before any generation is paid for: a
corrupted manifest, a missing data file or an unreadable index stops the run with one error naming the
file. Committed once per run, so re-runs and retries keep the base they started from (``publish`` refuses
if ``latest`` moved meanwhile).
"""

from __future__ import annotations

import logging
from typing import Any

from .. import storage
from .contract import RunContext, StageResult

NAME = "history"
READS: tuple[str, ...] = ()
MAPPED = False
# No fingerprint_inputs on purpose: latest.json moves, the base a run started from must not.
USES: tuple[str, ...] = ("name", "refresh.incremental", "quality.near_dedup.ngram", "quality.near_dedup.bands",
                         "quality.near_dedup.rows", "quality.near_dedup.seed")

log = logging.getLogger(__name__)


class HistoryError(ValueError):
    """What the run would build on is not readable as what it claims to be."""


def full_rebuild(run: RunContext) -> bool:
    return bool(run.params.get("full_rebuild")) or not run.spec.refresh.incremental


def run(run: RunContext, shard: int | None = None) -> StageResult:
    from ..publish import check_files, read_manifest
    from .preflight import check

    check(run.spec)  # the run's first task: every file opened, every template rendered, before compute is spent
    layout = run.layout
    base: dict[str, Any] = {"version": None, "manifest": None, "rows": 0, "files": [], "segments": [],
                            "prompt_plan": None, "yield": None, "retry": None, "full_rebuild": full_rebuild(run)}
    if not base["full_rebuild"] and storage.exists(layout.latest):
        try:
            pointer = storage.read_json(layout.latest)
        except storage.StorageError as exc:
            raise HistoryError(f"{layout.latest}: expected JSON with the latest version ({exc})") from None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("version"), str):
            raise HistoryError(f"{layout.latest}: field 'version': expected the name of the latest version")
        manifest_uri = layout.manifest_of(pointer["version"])
        manifest = read_manifest(manifest_uri, run.spec.name)
        check_files(manifest_uri, manifest)
        refresh = manifest.get("refresh") or {}
        segments = (manifest.get("index") or {}).get("segments")
        if segments is None:
            raise HistoryError(f"{manifest_uri}: field 'index.segments': expected the index segments of the version "
                               "(a version published before incremental refreshes: run once with full_rebuild)")
        _open_index(run, segments)  # every segment readable, made with this spec's MinHash parameters
        retry = refresh.get("retry")
        if retry and not storage.exists(retry):
            raise HistoryError(f"{manifest_uri}: field 'refresh.retry': {retry} is missing")
        base.update(version=manifest["version"], manifest=manifest_uri, rows=manifest["rows"],
                    files=manifest["files"], segments=list(segments), prompt_plan=refresh.get("prompt_plan"),
                    retry=retry, **{"yield": refresh.get("yield")})
    uri = layout.output(NAME, "base")
    storage.write_json(uri, base)
    stats = {"base_version": base["version"], "published_rows": base["rows"], "segments": len(base["segments"]),
             "full_rebuild": base["full_rebuild"], "measured_yield": base["yield"]}
    log.info("history: %s", f"building on {base['version']} ({base['rows']} published rows)" if base["version"]
             else ("full rebuild" if base["full_rebuild"] else "first version"))
    return StageResult(NAME, {"base": uri}, stats)


def base(run: RunContext) -> dict[str, Any]:
    """The committed base of the run (what ``history`` wrote)."""
    from .contract import result

    return storage.read_json(result(run, NAME)["outputs"]["base"])


def _open_index(run: RunContext, segments: list[str]) -> Any:
    from ..quality.minhash import MinHashParams
    from ..quality.published_index import PublishedIndex

    return PublishedIndex.open(run.layout.index_root, segments, MinHashParams.from_spec(run.spec.quality.near_dedup))


def published_index(run: RunContext) -> Any:
    """The index of every document the base version holds (empty for a first version or a full rebuild)."""
    return _open_index(run, base(run)["segments"])

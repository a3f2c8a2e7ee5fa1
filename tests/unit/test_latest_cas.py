"""latest.json is switched with a compare-and-swap: the local primitive under real concurrency (processes
racing round after round), and two runs of one corpus publishing at once (in-process, local files)."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import queue
import threading
import time

import pytest

from synthcorpus import storage
from synthcorpus.layout import RunLayout
from synthcorpus.publish import PublishError
from synthcorpus.spec import load_spec
from synthcorpus.stages import publish
from synthcorpus.stages.contract import RunContext
from synthcorpus.stages.runner import run_pipeline
from tests.fakes import FakeEngine
from tests.unit.test_refresh import refresh, spec_path  # noqa: F401  (spec_path: the refresh tests' fixture)

WRITERS = 4
ROUNDS = 60


# ------------------------------------------------------------------------------------------ the primitive


def counter_worker(uri: str, rounds: int, barrier, results) -> None:
    """One of several processes: every round, all read the counter (after every write of the round before),
    then, once all have read, each tries to write counter + 1 conditioned on what it read: exactly one such
    write can succeed per round. Reports the counter values it wrote."""
    def work() -> list[int]:
        won = []
        for _ in range(rounds):
            barrier.wait()  # every write of the previous round is done
            data, token = storage.read_with_token(uri)
            n = 0 if data is None else json.loads(data)["n"]
            barrier.wait()  # everyone has read the same counter; nobody has written yet
            if storage.write_if(uri, json.dumps({"n": n + 1, "by": os.getpid()}).encode(), token):
                won.append(n + 1)
        return won

    _report(work, results)


def create_worker(prefix: str, rounds: int, barrier, results) -> None:
    """One of several processes: every round, all try to create the same new file ("must not exist yet");
    reports the rounds it won."""
    def work() -> list[int]:
        won = []
        for r in range(rounds):
            barrier.wait()
            if storage.write_if(f"{prefix}/{r:04d}.json", json.dumps({"by": os.getpid()}).encode(), None):
                won.append(r)
        return won

    _report(work, results)


def _report(work, results) -> None:
    try:
        results.put((os.getpid(), work(), None))
    except BaseException as exc:  # reported, so the parent fails with it instead of waiting
        results.put((os.getpid(), [], repr(exc)))


def race_processes(worker, uri: str, writers: int = WRITERS, rounds: int = ROUNDS, reader=None) -> dict[int, list[int]]:
    """Run ``writers`` processes of ``worker`` (:func:`counter_worker`, :func:`create_worker`) against
    ``uri``: what each process (by PID) won. ``reader`` (optional) is called repeatedly in this process
    while they race."""
    ctx = multiprocessing.get_context("fork")  # fsspec resets its loop and instance cache in a forked child
    barrier, results = ctx.Barrier(writers, timeout=60), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(uri, rounds, barrier, results)) for _ in range(writers)]
    for p in procs:
        p.start()
    reports = []
    try:
        deadline = time.monotonic() + 180
        while len(reports) < writers and time.monotonic() < deadline:
            if reader is not None:
                reader()
            try:
                reports.append(results.get(timeout=0.005 if reader else 1))
            except queue.Empty:
                pass
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()  # by PID: a process this test started
    errors = [e for _, _, e in reports if e]
    assert not errors and len(reports) == writers, (errors, len(reports))
    return {pid: won for pid, won, _ in reports}


def check_one_winner_per_round(uri: str, won: dict[int, list[int]], rounds: int = ROUNDS) -> None:
    """Every round all writers read the same counter: exactly one conditional write can match it, so the
    counter went 1, 2, ... rounds, each value written once, none lost."""
    values = sorted(n for w in won.values() for n in w)
    assert values == list(range(1, rounds + 1)), f"{len(values)} wins for {rounds} rounds: {values[:12]}..."
    assert json.loads(storage.read_bytes(uri))["n"] == rounds


def check_one_creator_per_file(prefix: str, won: dict[int, list[int]], rounds: int = ROUNDS) -> None:
    """Every file was created by exactly one writer, and holds that writer's content."""
    rounds_won = sorted(r for w in won.values() for r in w)
    assert rounds_won == list(range(rounds)), f"{len(rounds_won)} creations of {rounds} files: {rounds_won[:12]}..."
    for pid, w in won.items():
        for r in w:
            assert json.loads(storage.read_bytes(f"{prefix}/{r:04d}.json"))["by"] == pid


def test_local_cas_has_exactly_one_winner_per_round_under_concurrent_processes(tmp_path):
    uri = (tmp_path / "corpus" / "latest.json").as_uri()
    seen: list[int] = []

    def reader() -> None:  # a reader never sees a half-written file
        data, token = storage.read_with_token(uri)
        if data is not None:
            seen.append(json.loads(data)["n"])
            assert token == "sha256:" + hashlib.sha256(data).hexdigest()

    check_one_winner_per_round(uri, race_processes(counter_worker, uri, reader=reader))
    assert seen == sorted(seen)  # a reader never saw the counter go back
    assert sorted(os.listdir(tmp_path / "corpus")) == ["latest.json", "latest.json.lock"]  # no temp file left


def test_local_create_if_absent_has_exactly_one_winner_per_file(tmp_path):
    prefix = (tmp_path / "created").as_uri()
    check_one_creator_per_file(prefix, race_processes(create_worker, prefix))


def test_local_cas_semantics(tmp_path):
    uri = (tmp_path / "x" / "p.json").as_uri()
    assert storage.read_with_token(uri) == (None, None)
    assert storage.write_if(uri, b"one", None)  # None: only if it does not exist
    assert not storage.write_if(uri, b"two", None)
    data, token = storage.read_with_token(uri)
    assert data == b"one"
    assert storage.write_if(uri, b"two", token)
    assert not storage.write_if(uri, b"three", token)  # stale token: someone wrote since
    assert storage.read_bytes(uri) == b"two"
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(storage.StorageError, match="file/p.json: conditional write failed"):
        storage.write_if((blocker / "p.json").as_uri(), b"x", None)


def test_memory_store_cas_semantics():
    uri = "memory://cas-test/p.json"
    try:
        assert storage.write_if(uri, b"one", None) and not storage.write_if(uri, b"one", None)
        data, token = storage.read_with_token(uri)
        assert storage.write_if(uri, b"two", token) and not storage.write_if(uri, b"three", token)
    finally:
        storage.delete("memory://cas-test")


# ------------------------------------------------------------------------------------------ two runs publishing


def race_two_publishes(spec_path: str, monkeypatch) -> dict:
    """Runs a and b, both built on v1, publish at once: both write their version and manifest and read
    latest.json (-> v1) before either switches it, while a reader polls latest.json and opens the manifest
    it names. Returns what each run raised or returned, the winner, the loser and what the reader saw."""
    refresh(spec_path, "v1", FakeEngine())
    for run_id in ("a", "b"):
        run_pipeline(spec_path, run_id, engine=FakeEngine(), until="quality_gate")  # both built on v1
    layout = RunContext.create(load_spec(spec_path), "x").layout
    barrier = threading.Barrier(2, timeout=120)
    first_read = {"a", "b"}
    real_read = storage.read_with_token

    def read_with_token(uri):
        out = real_read(uri)
        name = threading.current_thread().name
        if uri == layout.latest and name in first_read:
            first_read.discard(name)
            barrier.wait()  # both runs have read latest -> v1; neither has written yet
        return out

    monkeypatch.setattr(storage, "read_with_token", read_with_token)
    outcome: dict[str, object] = {}
    seen: list[str] = []
    reader_errors: list[str] = []
    stop = threading.Event()

    def publish_run(run_id: str) -> None:
        try:
            outcome[run_id] = run_pipeline(spec_path, run_id, engine=FakeEngine(), until="publish")["publish"]
        except Exception as exc:
            outcome[run_id] = exc

    def reader() -> None:
        while not stop.is_set():
            try:
                pointer = storage.read_json(layout.latest)
                storage.read_json(pointer["manifest"])  # the version latest names is stored
                if not seen or seen[-1] != pointer["version"]:
                    seen.append(pointer["version"])
            except Exception as exc:
                reader_errors.append(repr(exc))
            time.sleep(0.002)

    threads = [threading.Thread(target=publish_run, args=(r,), name=r) for r in ("a", "b")]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    stop.set()
    watcher.join(timeout=10)
    monkeypatch.setattr(storage, "read_with_token", real_read)
    assert not any(t.is_alive() for t in threads)
    winners = [r for r in ("a", "b") if isinstance(outcome[r], dict)]
    assert len(winners) == 1, f"expected exactly one run to switch latest, got {({r: repr(o)[:300] for r, o in outcome.items()})}"
    winner = winners[0]
    loser = "b" if winner == "a" else "a"
    return {"outcome": outcome, "winner": winner, "loser": loser, "seen": seen, "reader_errors": reader_errors,
            "layout": layout}


def check_race(spec_path: str, race: dict) -> None:
    """What two runs publishing at once must leave: one version switched in, the other refused with the
    clear message; latest never moved back nor named a missing manifest; re-running the loser's publish
    (what a retry does) leaves latest as it is."""
    layout, winner, loser = race["layout"], race["winner"], race["loser"]
    error = race["outcome"][loser]
    assert isinstance(error, PublishError), error
    assert f"{layout.latest}: expected the latest version to be v1" in str(error) and f"found {winner}" in str(error)
    assert storage.read_json(layout.latest)["version"] == winner
    assert storage.exists(layout.manifest_of(loser))  # the loser's version is stored, latest does not name it
    assert not race["reader_errors"], race["reader_errors"][:3]
    assert race["seen"] == ["v1", winner]  # forward once, never back, never a version without its manifest
    try:
        again = run_pipeline(spec_path, loser, engine=FakeEngine(), until="publish")["publish"]
    except PublishError as exc:  # the winner's manifest is older than the loser's: it is not "published after"
        assert f"found {winner}" in str(exc)
    else:  # the winner's manifest is as new or newer: a re-run of an older publish leaves latest as it is
        assert again["stats"]["latest_kept"] == winner
    assert storage.read_json(layout.latest)["version"] == winner


def test_two_runs_publishing_at_once_switch_latest_once(spec_path, monkeypatch):  # noqa: F811
    check_race(spec_path, race_two_publishes(spec_path, monkeypatch))


# ------------------------------------------------------------------------------------------ the decision


def _manifests(storage_uri: str) -> RunLayout:
    """The layout of version "new" of a corpus holding versions old < base < new < later (by created_at)."""
    layout = RunLayout(storage_uri, "tiny", "new")
    versions = {"old": "2026-01-01T00:00:00+00:00", "base": "2026-01-02T00:00:00+00:00",
                "new": "2026-01-03T00:00:00+00:00", "later": "2026-01-04T00:00:00+00:00"}
    for v, at in versions.items():
        storage.write_json(layout.manifest_of(v), {"version": v, "created_at": at, "rows": 1})
    return layout


@pytest.mark.parametrize("latest, base, full_rebuild, resumed, expected", [
    (None, None, False, False, "switch"),  # a first version
    ("base", "base", False, False, "switch"),
    ("new", "base", False, False, "done"),  # an earlier attempt's write landed
    (None, "base", False, False, "refuse"),
    (None, "base", False, True, "switch"),  # resumed after latest.json was removed (as today)
    ("later", "base", False, False, "refuse"),  # lost the race: the winner is not this run's base
    ("later", "base", False, True, "keep"),  # a re-run of an old publish: a newer version holds latest
    ("old", "base", False, True, "refuse"),  # not the base and not newer: never on top of it
    ("old", None, True, False, "switch"),  # a full rebuild replaces an older version
    ("later", None, True, False, "refuse_rebuild"),
    ("later", None, True, True, "keep"),
])
def test_the_switch_decision(storage_uri, latest, base, full_rebuild, resumed, expected):
    layout = _manifests(storage_uri)
    manifest = storage.read_json(layout.manifest_of("new"))
    pointer = {"version": latest, "manifest": layout.manifest_of(latest)} if latest else None
    base_info = {"version": base, "full_rebuild": full_rebuild}
    if expected.startswith("refuse"):
        match = "published before new" if expected == "refuse_rebuild" else f"expected the latest version to be {base}"
        with pytest.raises(PublishError, match=match):
            publish._decide(layout, manifest, base_info, pointer, resumed)
    else:
        assert publish._decide(layout, manifest, base_info, pointer, resumed)[0] == expected


def test_latest_is_never_switched_to_a_version_without_its_manifest(storage_uri):
    layout = RunLayout(storage_uri, "tiny", "gone")
    with pytest.raises(PublishError, match="manifest.json: expected the manifest of version gone"):
        publish._switch_latest(layout, {"version": "gone", "rows": 1, "created_at": "x"},
                               {"version": None, "full_rebuild": False}, False)
    assert not storage.exists(layout.latest)


def test_the_switch_gives_up_after_bounded_lost_writes(storage_uri, monkeypatch):
    layout = _manifests(storage_uri)
    manifest = storage.read_json(layout.manifest_of("new"))
    calls = []
    monkeypatch.setattr(storage, "write_if", lambda *a: bool(calls.append(a)))
    with pytest.raises(PublishError, match="changed under each of 8 conditional writes"):
        publish._switch_latest(layout, manifest, {"version": None, "full_rebuild": False}, False)
    assert len(calls) == publish.SWITCH_ATTEMPTS and not storage.exists(layout.latest)

"""Faults under the real scheduler (synthcorpus.deploy.Stack: scheduler, dag-processor, triggerer, api-server
and a Celery worker on PostgreSQL + Redis). One DAG run of a small corpus, triggered through the REST API,
with a SIGKILL configured (synthcorpus.faults) at ``<stage>:before_commit`` of every stage the run executes
(its work stored, its marker not written), at ``publish:after_data`` (data files stored, no manifest) and at
``publish:after_manifest`` (manifest stored, ``latest.json`` not switched), plus one SIGKILL of the whole
Celery worker process tree while the generate shard is half-way. The run must end ``success`` through the
spec's retries. Throughout, a reader polls ``latest.json`` (and the version's manifest) and verifies every
version it is pointed at: it must never see a pointer to a missing or half-written version. Finally the
version the killed run published must be the one an uninterrupted run of the same spec, run id and params
publishes (in-process, ``run_pipeline``, into another storage root): the same data files (rows, bytes,
sha256) holding the same rows.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from synthcorpus import faults, storage
from synthcorpus.layout import RunLayout
from synthcorpus.publish import file_uri, read_manifest, verify_version
from synthcorpus.spec import CPU_THREADS_ENV, STORAGE_ENV, load_spec
from synthcorpus.stages import TABLE
from tests.airflow_api import AirflowAPI
from tests.conftest import ROOT, tiny_spec_dict
from tests.stagekit import half_done_generate_shard

CORPUS = "faults"
DAG_ID = f"synthcorpus_{CORPUS}"
RUN = "faults-1"
# The DAG run's params (its conf over the DAG's defaults): the uninterrupted reference run gets the same.
PARAMS = {"run_name": RUN, "full_rebuild": False, "override_gate_reason": None}
# Every stage of the table is a task of this corpus's DAG (no approval task): one kill before each stage's
# commit, then the two inside publish. A mapped stage's kill is taken by the first shard task that reaches it.
POINTS = [*(f"{s.name}:before_commit" for s in TABLE), "publish:after_data", "publish:after_manifest"]
# Deadlines for a busy machine (2 shared cores): generous, every wait polls a condition.
KILL_TIMEOUT_S, RUN_TIMEOUT_S = 1200, 2400
SLOW = pytest.mark.slow
TIMEOUT = pytest.mark.timeout(KILL_TIMEOUT_S + RUN_TIMEOUT_S + 900)  # the stack's start-up and the reference run too


def faults_spec() -> dict:
    # One shard of 4 rows of up to 48 tokens with a checkpoint after every row: the worker is killed while
    # the shard has committed parts and no marker. Retries: a task may be killed by its own fault and by the
    # worker kill, publish by three faults; retry_delay 1 s keeps the run short.
    return tiny_spec_dict(name=CORPUS, documents=4, **{
        "generation.shard_size": 4, "generation.checkpoint_rows": 1,
        "tasks.retries": 6, "tasks.retry_delay_s": 1,
    })


class Reader(threading.Thread):
    """A consumer of the corpus polling storage every ``every_s`` until stopped: if ``latest.json`` exists, it
    opens the manifest the pointer names, checks it field by field, re-hashes every data file against it
    (``verify_version``) and reads each file's row count; otherwise, if the version's manifest exists (a
    reader listing versions), it verifies that. Anything that fails is a problem, with what was read.
    ``seen`` counts what each observation found: ``latest.json``, ``manifest, no latest.json``, ``data files,
    no manifest`` (nothing references them: not a version yet) or ``nothing``."""

    def __init__(self, layout: RunLayout, every_s: float = 0.1):
        super().__init__(name="faults-reader", daemon=True)
        self.layout, self.every_s = layout, every_s
        self.halt = threading.Event()
        self.seen: Counter[str] = Counter()
        self.problems: list[str] = []

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.observe()
            except Exception as exc:  # noqa: BLE001 - a reader that dies would see nothing: that is a problem too
                self.problems.append(f"reader crashed: {type(exc).__name__}: {exc}")
            self.halt.wait(self.every_s)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=60)

    def observe(self) -> None:
        layout = self.layout
        try:
            raw = storage.read_bytes(layout.latest)
        except FileNotFoundError:
            raw = None
        if raw is not None:
            try:
                pointer = json.loads(raw)
                manifest = self.check(pointer["uri"])
                if (pointer["version"], pointer["rows"], pointer["manifest"]) != (
                        manifest["version"], manifest["rows"], f"{pointer['uri']}/manifest.json"):
                    raise AssertionError(f"the pointer does not match the manifest it names ({manifest['version']}, "
                                         f"{manifest['rows']} rows)")
                self.seen["latest.json"] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is what the test reports
                self.problems.append(f"{time.strftime('%H:%M:%S')} {layout.latest} = {raw[:300]!r}: "
                                     f"{type(exc).__name__}: {exc}")
            return
        if storage.exists(layout.manifest):
            try:
                self.check(layout.version_uri())
                self.seen["manifest, no latest.json"] += 1
            except Exception as exc:  # noqa: BLE001
                self.problems.append(f"{time.strftime('%H:%M:%S')} {layout.manifest}: {type(exc).__name__}: {exc}")
            return
        data = storage.list_files(layout.version_uri("data")) if storage.exists(layout.version_uri("data")) else []
        self.seen["data files, no manifest" if data else "nothing"] += 1

    def check(self, version_uri: str) -> dict:
        """The version's manifest if the version is whole: every field, every file's sha256 and rows."""
        manifest = read_manifest(f"{version_uri}/manifest.json", corpus=self.layout.corpus)
        verify_version(version_uri)  # re-hashes every file the manifest lists
        versions = version_uri.rsplit("/", 1)[0]
        for entry in manifest["files"]:
            rows = storage.parquet_rows(file_uri(versions, manifest, entry))
            if rows != entry["rows"]:
                raise AssertionError(f"{entry['path']}: {rows} rows, the manifest says {entry['rows']}")
        return manifest


@pytest.fixture(scope="module")
def reference(airflow_stack, tmp_path_factory):
    """The same spec file, run id and params run uninterrupted in this process into another storage root,
    with the worker's llama.cpp thread count; returns (its layout, its manifest)."""
    stack, corpora, _ = airflow_stack
    from synthcorpus.stages.runner import run_pipeline

    root = (tmp_path_factory.mktemp("faults-reference") / "storage").as_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STORAGE_ENV, root)
        mp.setenv(CPU_THREADS_ENV, stack.process_env()[CPU_THREADS_ENV])
        mp.delenv(faults.ENV, raising=False)
        run_pipeline(str(corpora / f"{CORPUS}.yaml"), RUN, PARAMS, until="publish")
    layout = RunLayout(root, CORPUS, RUN)
    return layout, storage.read_json(layout.manifest)


@pytest.fixture(scope="module")
def faulted_run(airflow_stack, reference):
    stack, corpora, _ = airflow_stack
    faults_file = stack.env[faults.ENV]
    api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
    api.wait_for_dag(DAG_ID, 300)
    spec = load_spec(corpora / f"{CORPUS}.yaml")
    layout = RunLayout(stack.env["SYNTHCORPUS_STORAGE_URI"], spec.name, RUN)
    assert not storage.exists(layout.corpus_uri), f"{layout.corpus_uri}: expected a corpus nothing has run yet"
    # The faults file before the run (written whole: a fault point reads it at any time).
    configured = [{"point": p, "run": RUN, "action": "kill"} for p in POINTS]
    tmp = f"{faults_file}.tmp"
    Path(tmp).write_text(json.dumps({"faults": configured}))
    os.replace(tmp, faults_file)
    generate_fault = Path(f"{faults_file}.fired") / str(POINTS.index("generate:before_commit"))

    reader = Reader(layout)
    reader.start()
    started = time.monotonic()
    try:
        api.unpause(DAG_ID)  # no schedule: unpausing only lets the triggered run execute
        run_id = api.trigger(DAG_ID, {"run_name": RUN})

        def half_done_shard():
            """Before generate's own fault: its first try is running on the worker."""
            assert not generate_fault.exists(), "generate reached its commit before the worker was killed mid-shard"
            return half_done_generate_shard(layout)

        victim = api.wait("a generate shard with a checkpoint and no marker", half_done_shard, KILL_TIMEOUT_S,
                          every_s=0.1)
        parts_before = len(storage.list_files(layout.parts("generate", victim["map_index"])))
        killed = stack.kill("celery-worker")
        worker_killed_at = time.monotonic() - started
        stack.start("celery-worker")
        run = api.wait_run(DAG_ID, run_id, RUN_TIMEOUT_S)
        wall_s = time.monotonic() - started
    finally:
        reader.stop()
    tis = api.task_instances(DAG_ID, run_id)
    tries = {(t["task_id"], t["map_index"]): api.tries(DAG_ID, run_id, t["task_id"], t["map_index"]) for t in tis}
    out = {"api": api, "stack": stack, "layout": layout, "reference": reference, "run_id": run_id, "run": run,
           "tis": tis, "tries": tries, "configured": configured, "fired": faults.fired(faults_file),
           "victim": victim, "parts_before": parts_before, "killed": killed, "reader": reader, "wall_s": wall_s,
           "worker_killed_at_s": worker_killed_at}
    _save_summary(out)
    return out


def _save_summary(r: dict) -> None:
    """What the run measured, for the README's fault table: .artifacts/faults-run.json (git-ignored)."""
    base = os.environ.get("SYNTHCORPUS_ARTIFACTS")
    path = (Path(base) if base else ROOT / ".artifacts") / "faults-run.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "run_state": r["run"]["state"], "wall_s": round(r["wall_s"], 1), "worker_killed_at_s": round(r["worker_killed_at_s"], 1),
        "worker_kill": {"processes": len(r["killed"]), "generate_shard": r["victim"]["map_index"],
                        "parts_before": r["parts_before"]},
        "fired": r["fired"], "reader_seen": dict(r["reader"].seen), "reader_problems": r["reader"].problems,
        # Per task: each try's state, start and end (a killed try's end to the next try's start: its recovery).
        "tries": {f"{task}[{i}]" if i >= 0 else task: [[t["state"], t["start_date"], t["end_date"]] for t in tries]
                  for (task, i), tries in r["tries"].items()},
    }, indent=2))


@SLOW
@TIMEOUT
def test_every_fault_fired_and_the_run_succeeded_through_retries(faulted_run):
    r = faulted_run
    assert r["run"]["state"] == "success", {(t["task_id"], t["map_index"]): t["state"] for t in r["tis"]}
    assert {t["state"] for t in r["tis"]} == {"success"}
    # The DAG's tasks are exactly the stage table: a fault was configured before every stage's commit.
    assert sorted({t["task_id"] for t in r["tis"]}) == sorted(s.name for s in TABLE)
    fired = r["fired"]
    assert [f["index"] for f in fired] == list(range(len(r["configured"]))), fired
    assert [(f["point"], f["run"]) for f in fired] == [(p, RUN) for p in POINTS]
    assert len({f["pid"] for f in fired}) == len(fired)  # each fault killed another task process
    assert len(r["killed"]) >= 2  # the worker and the task processes it started


@SLOW
@TIMEOUT
def test_every_killed_task_was_retried_until_it_committed(faulted_run):
    r = faulted_run
    for stage in TABLE:
        runs = {i: tries for (task, i), tries in r["tries"].items() if task == stage.name}
        assert runs and all(t[-1]["state"] == "success" for t in runs.values()), (stage.name, runs)
        # Killed once before its commit (the first shard that got there, for a mapped stage): one try more.
        assert max(len(t) for t in runs.values()) >= 2, (stage.name, runs)
        assert all(t[0]["state"] != "success" for t in runs.values() if len(t) > 1)
    # publish: before its commit, after its data files, after its manifest.
    assert len(r["tries"][("publish", -1)]) >= 4, r["tries"][("publish", -1)]
    # The generate shard: the worker kill half-way, then its own fault before the commit.
    assert len(r["tries"][("generate", r["victim"]["map_index"])]) >= 3, r["tries"][("generate", r["victim"]["map_index"])]
    # The worker died after the shard's first checkpoint and before its last row: the retries resumed from
    # the parts (the rows after them were generated by a fresh process, and still match the reference run).
    marker = storage.read_json(r["layout"].marker("generate", r["victim"]["map_index"]))
    assert 1 <= r["parts_before"] < marker["stats"]["rows"], (r["parts_before"], marker["stats"])
    assert marker["stats"]["resumed_rows"] >= r["parts_before"], marker["stats"]


@SLOW
@TIMEOUT
def test_no_reader_ever_saw_a_half_published_version(faulted_run):
    reader = faulted_run["reader"]
    assert reader.problems == [], reader.problems[:10]
    assert reader.seen["latest.json"] >= 1, reader.seen
    # The reader lived through both half-published states (the kills after the data files and after the
    # manifest) and saw a whole version or none.
    assert reader.seen["data files, no manifest"] >= 1 and reader.seen["manifest, no latest.json"] >= 1, reader.seen
    latest = storage.read_json(faulted_run["layout"].latest)
    assert latest["version"] == RUN and verify_version(latest["uri"])["rows"] == latest["rows"] > 0
    # Consumers of the corpus asset: one release event (from the try that committed), naming the whole version.
    api, run_id = faulted_run["api"], faulted_run["run_id"]
    events = api.asset_events(source_dag_id=DAG_ID, source_run_id=run_id)
    assert len(events) == 1, events
    assert (events[0]["extra"]["version"], events[0]["extra"]["rows"], events[0]["extra"]["manifest"]) == (
        RUN, latest["rows"], latest["manifest"])


@SLOW
@TIMEOUT
def test_the_killed_run_published_the_version_an_uninterrupted_run_publishes(faulted_run):
    layout, (ref_layout, ref) = faulted_run["layout"], faulted_run["reference"]
    got = storage.read_json(layout.manifest)
    assert got["files"] == ref["files"], (got["files"], ref["files"])  # paths, rows, bytes, sha256
    for key in ("corpus", "version", "run_id", "rows", "new_rows", "base_version", "schema", "spec_sha256", "gate", "index"):
        assert got[key] == ref[key], key
    for entry in got["files"]:
        a = pq.read_table(_path(layout.version_uri(entry["path"])))
        b = pq.read_table(_path(ref_layout.version_uri(entry["path"])))
        assert a.schema == b.schema and a.to_pylist() == b.to_pylist(), entry["path"]


def _path(uri: str) -> str:
    return uri.removeprefix("file://")


def test_reader_reports_a_pointer_to_a_missing_or_half_written_version(tmp_path):
    """The reader can fail: a whole version passes; a pointer to a version without its manifest, a torn
    pointer, a data file that differs from its manifest and one that is gone are each reported."""
    import pyarrow as pa

    layout = RunLayout((tmp_path / "storage").as_uri(), CORPUS, RUN)
    data = layout.version_uri("data/train-00000-of-00001.parquet")
    storage.write_parquet(data, pa.table({"text": ["a", "b"]}))
    size, digest = storage.sha256(data)
    manifest = {"corpus": CORPUS, "version": RUN, "rows": 2,
                "files": [{"path": "data/train-00000-of-00001.parquet", "rows": 2, "bytes": size, "sha256": digest}]}
    pointer = {"version": RUN, "manifest": layout.manifest, "uri": layout.version_uri(), "rows": 2}

    def observe() -> tuple[Counter, list[str]]:
        reader = Reader(layout)
        reader.observe()
        return reader.seen, reader.problems

    assert observe() == (Counter({"data files, no manifest": 1}), [])
    storage.write_json(layout.latest, pointer)
    seen, problems = observe()
    assert not seen and len(problems) == 1 and "manifest.json" in problems[0]  # the pointer came before the manifest
    storage.write_json(layout.manifest, manifest)
    assert observe() == (Counter({"latest.json": 1}), [])
    storage.write_bytes(layout.latest, json.dumps(pointer).encode()[:20])  # a torn pointer
    assert len(observe()[1]) == 1
    storage.write_json(layout.latest, pointer)
    storage.write_parquet(data, pa.table({"text": ["a", "c"]}))  # the file changed under the manifest
    assert "sha256" in observe()[1][0]
    storage.delete(data)
    assert len(observe()[1]) == 1

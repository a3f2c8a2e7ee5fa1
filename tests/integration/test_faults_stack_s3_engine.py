"""SeaweedFS outages and a misbehaving engine under the real scheduler: a deployment (synthcorpus.deploy.Stack:
scheduler, dag-processor, triggerer, api-server and a Celery worker on PostgreSQL + Redis) that stores its
corpora on S3 (a test-local, restartable SeaweedFS) and generates with the ``openai`` engine against
``tests.fakes.FakeOpenAIServer``. Each DAG run is triggered through the REST API and must end ``success``
through the retries of the spec (``tasks.retries``), publishing the version an uninterrupted in-process run
of the same spec, run id and params publishes (into another bucket): the same data files (rows, bytes,
sha256) holding the same rows. A reader polls the bucket throughout: it must never see a pointer to a
missing or half-written version.

* ``faults_s3``: SeaweedFS is SIGKILLed while ``generate`` writes its checkpoint parts (seen in the bucket)
  and brought back once a generate try has failed; then ``publish`` pauses between its data files and its
  manifest (fault point ``publish:after_data``, action ``pause``), SeaweedFS is SIGKILLed, publish goes on
  and fails storing its manifest, SeaweedFS is brought back once that try has failed.
* ``faults_engine``: the server answers every request with HTTP 500 during generate's first try, with
  garbage (HTML in a 200) during its second and nothing at all (the request hangs past the client's timeout)
  during its third, then heals.

The in-process variants of these faults (and more engine faults) are in test_faults_storage_engine.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from synthcorpus import faults, storage
from synthcorpus.layout import RunLayout
from synthcorpus.spec import STORAGE_ENV
from synthcorpus.stages.runner import run_pipeline
from tests.airflow_api import AirflowAPI, wait_until
from tests.conftest import ROOT, write_spec
from tests.fakes import FakeOpenAIServer
from tests.integration.conftest import running_stack
from tests.integration.test_faults_storage_engine import (
    ALWAYS, MODEL, URL_SUFFIX, S3Reader, SeaweedFS, assert_identical, engine_spec_dict, published,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

S3_CORPUS, ENGINE_CORPUS = "faults_s3", "faults_engine"
S3_RUN, ENGINE_RUN = "s3-outage-1", "engine-1"
RUN_TIMEOUT_S = 1800  # every wait polls a condition: generous deadlines for a busy machine
# The engine faults, one per generate try, in order; ALWAYS says what the failed try's error names.
ENGINE_FAULTS = [("500", "500 always"), ("not_json", "not_json always"), ("hang", "timeout always")]
ENDED = {"failed", "up_for_retry"}  # a try that ended without success (up_for_retry: the latest one)


def params(run: str) -> dict:
    """A DAG run's params: its conf over the DAG's defaults (the reference run gets the same)."""
    return {"run_name": run, "full_rebuild": False, "override_gate_reason": None}


def corpus_specs(base_url: str) -> list[dict]:
    # Retries every 5 s: the test switches the world (SeaweedFS back, the engine's next fault) after a try
    # failed and before the next one starts; 10 retries leave room for tries that meet SeaweedFS restarting.
    tasks = {"tasks.retries": 10, "tasks.retry_delay_s": 5}
    return [
        # Three generate shards (4, 4, 1 prompts), one request at a time, a checkpoint part after every row.
        engine_spec_dict(base_url, name=S3_CORPUS, **tasks, **{"generation.shard_size": 4, "generation.checkpoint_rows": 1,
                                                                "generation.openai.concurrency": 1}),
        engine_spec_dict(base_url, name=ENGINE_CORPUS, **tasks),
    ]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """SeaweedFS, the fake engine and a Stack storing at s3://<bucket>/synthcorpus; the test process reads the
    same SeaweedFS. Yields a dict; stops everything by PID afterwards."""
    import s3fs

    base = tmp_path_factory.mktemp("faults-s3-stack")
    (base / "weed").mkdir()
    weed = SeaweedFS(base / "weed")
    weed.start()
    server = FakeOpenAIServer(model=MODEL).start()
    mp = pytest.MonkeyPatch()
    try:
        for k, v in weed.env.items():
            mp.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        bucket, ref_bucket = weed.bucket("stack"), weed.bucket("reference")
        corpora = base / "corpora"
        corpora.mkdir()
        for spec in corpus_specs(server.base_url):
            write_spec(corpora, spec)
        faults_file = str(base / "faults.json")
        with running_stack(base, corpora, f"s3://{bucket}/synthcorpus",
                           {**weed.env, faults.ENV: faults_file}) as stack:
            api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
            yield {"weed": weed, "server": server, "stack": stack, "api": api, "corpora": corpora, "bucket": bucket,
                   "ref_bucket": ref_bucket, "faults_file": faults_file}
    finally:
        mp.undo()
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()
        weed.stop()


def reference(d: dict, corpus: str, run: str) -> tuple[list, list]:
    """The same spec file, run id and params run uninterrupted in this process into the reference bucket."""
    d["server"].heal()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(STORAGE_ENV, f"s3://{d['ref_bucket']}/synthcorpus")
        mp.delenv(faults.ENV, raising=False)
        marker = run_pipeline(str(d["corpora"] / f"{corpus}.yaml"), run, params(run), until="publish")["publish"]
    return published(marker["outputs"]["version"])


def ended_tries(api: AirflowAPI, dag_id: str, run_id: str, task_id: str) -> list[dict]:
    """Every try of ``task_id`` (any map index) that ended without success so far, once each (the tries
    endpoint may list the latest one both from the history and as the task instance)."""
    out: dict[tuple[int, int], dict] = {}
    for ti in api.task_instances(dag_id, run_id, task_id):
        for t in api.tries(dag_id, run_id, task_id, ti["map_index"]):
            if t["state"] in ENDED:
                out.setdefault((t["map_index"], t["try_number"]), t)
    return [out[k] for k in sorted(out)]


def try_errors(stack, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int) -> list[str]:
    """The exceptions a try's task log records ("<type>: <message>"), from the JSON lines the worker wrote
    under AIRFLOW_HOME/logs (the UI shows them as "Task failed with exception" with the traceback)."""
    task_dir = stack.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    path = (task_dir / f"map_index={map_index}" if map_index >= 0 else task_dir) / f"attempt={try_number}.log"
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        out += [f"{e['exc_type']}: {e['exc_value']}" for e in record.get("error_detail") or []]
    return out


def _save(name: str, summary: dict) -> None:
    """What a run measured, for the README's fault table: .artifacts/<name>.json (git-ignored)."""
    base = os.environ.get("SYNTHCORPUS_ARTIFACTS")
    path = (Path(base) if base else ROOT / ".artifacts") / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str))


# ============================================================================ SeaweedFS down, under the scheduler


@pytest.fixture(scope="module")
def s3_outage(deployment):
    d = deployment
    weed, server, stack, api, bucket = d["weed"], d["server"], d["stack"], d["api"], d["bucket"]
    ref = reference(d, S3_CORPUS, S3_RUN)
    dag_id = f"synthcorpus_{S3_CORPUS}"
    api.wait_for_dag(dag_id, 300)
    layout = RunLayout(f"s3://{bucket}/synthcorpus", S3_CORPUS, S3_RUN)
    runs = f"synthcorpus/{S3_CORPUS}/runs/{S3_RUN}"
    # The pause between publish's data files and its manifest (written whole before the run).
    tmp = f"{d['faults_file']}.tmp"
    Path(tmp).write_text(json.dumps({"faults": [{"point": "publish:after_data", "run": S3_RUN, "action": "pause"}]}))
    os.replace(tmp, d["faults_file"])

    reader = S3Reader(weed, bucket, corpus=S3_CORPUS)
    reader.start()
    started = time.monotonic()
    events: list[tuple[float, str]] = []

    def event(what: str) -> None:
        events.append((round(time.monotonic() - started, 1), what))

    try:
        server.delay_s = 0.3  # ~1.2 s per 4-row shard: generate is still writing parts when the kill lands
        api.unpause(dag_id)  # no schedule: unpausing only lets the triggered run execute
        run_id = api.trigger(dag_id, {"run_name": S3_RUN})
        # 1. SIGKILL SeaweedFS once generate stored its first checkpoint part.
        wait_until("a generate checkpoint part in the bucket",
                   lambda: any(".parts/part-" in k for k in weed.keys(bucket, f"{runs}/generate/")), RUN_TIMEOUT_S, 0.05)
        weed.kill()
        event("SeaweedFS killed during generate")
        generate_failed = wait_until("a generate try to fail while SeaweedFS is down",
                                     lambda: ended_tries(api, dag_id, run_id, "generate"), RUN_TIMEOUT_S, 0.2)
        event("a generate try failed")
        server.delay_s = 0.0
        weed.start()
        event("SeaweedFS back")
        # 2. publish pauses after its data files: SIGKILL SeaweedFS, let publish go on to its manifest.
        wait_until("publish to reach its pause after the data files", lambda: faults.fired(d["faults_file"]),
                   RUN_TIMEOUT_S, 0.1)
        data_files = weed.keys(bucket, f"synthcorpus/{S3_CORPUS}/versions/{S3_RUN}/")
        weed.kill()
        event("SeaweedFS killed in publish between data files and manifest")
        faults.release(d["faults_file"], 0)
        publish_failed = wait_until("the publish try to fail storing its manifest",
                                    lambda: ended_tries(api, dag_id, run_id, "publish"), RUN_TIMEOUT_S, 0.2)
        event("a publish try failed")
        weed.start()
        event("SeaweedFS back")
        run = api.wait_run(dag_id, run_id, RUN_TIMEOUT_S)
        event(f"run {run['state']}")
        seen = reader.seen["latest.json"]
        wait_until("the reader to check the published version", lambda: reader.seen["latest.json"] > seen, 120, 0.05)
    finally:
        server.delay_s = 0.0
        reader.stop()
        if not weed.up.is_set():
            weed.start()
    tis = api.task_instances(dag_id, run_id)
    out = {"stack": stack, "api": api, "dag_id": dag_id, "run_id": run_id, "run": run, "tis": tis, "layout": layout,
           "reference": ref, "reader": reader, "generate_failed": generate_failed, "publish_failed": publish_failed,
           "data_files": data_files, "events": events}
    _save("faults-s3-stack-run", {"run_state": run["state"], "events": events, "reader_seen": dict(reader.seen),
                                  "reader_problems": reader.problems,
                                  "tries": {t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""):
                                            t["try_number"] for t in tis}})
    return out


def test_s3_outage_run_succeeded_through_retries(s3_outage):
    r = s3_outage
    assert r["run"]["state"] == "success", {(t["task_id"], t["map_index"]): t["state"] for t in r["tis"]}
    assert {t["state"] for t in r["tis"]} == {"success"}
    for task in ("generate", "publish"):
        assert max(t["try_number"] for t in r["tis"] if t["task_id"] == task) >= 2, task


def test_each_failed_try_names_the_s3_object_it_could_not_store(s3_outage):
    """What an operator reads in the failed try's log: a StorageError naming the s3:// URI of the object it
    could not read or store, not a botocore traceback alone (publish, after its data files, reads the run's
    markers again before it writes the manifest: which object meets the outage first is publish's business)."""
    r = s3_outage
    corpus = re.escape(r["layout"].corpus_uri)
    for failed, pattern in ((r["generate_failed"][0], rf"StorageError: {corpus}/runs/{S3_RUN}/generate/"),
                            (r["publish_failed"][0], rf"StorageError: {corpus}/(runs/{S3_RUN}|versions/{S3_RUN})/")):
        errors = try_errors(r["stack"], r["dag_id"], r["run_id"], failed["task_id"], failed["map_index"], failed["try_number"])
        assert any(re.match(pattern, e) for e in errors), (failed["task_id"], failed["try_number"], errors)
    # The kill in publish came after its data files and before its manifest.
    assert r["data_files"] and all("/data/" in k for k in r["data_files"]), r["data_files"]


def test_no_reader_saw_a_half_published_version_during_the_s3_outages(s3_outage):
    reader = s3_outage["reader"]
    assert reader.problems == [], reader.problems[:10]
    assert reader.seen["latest.json"] >= 1 and reader.seen["versions listing"] >= 1, reader.seen
    latest = storage.read_json(s3_outage["layout"].latest)
    assert latest["version"] == S3_RUN and latest["manifest"] == s3_outage["layout"].manifest


def test_s3_outage_run_published_the_uninterrupted_version(s3_outage):
    assert_identical(published(s3_outage["layout"].version_uri()), s3_outage["reference"])


# ============================================================================ a misbehaving engine, under the scheduler


@pytest.fixture(scope="module")
def engine_faults(deployment):
    d = deployment
    server, stack, api, bucket = d["server"], d["stack"], d["api"], d["bucket"]
    ref = reference(d, ENGINE_CORPUS, ENGINE_RUN)
    dag_id = f"synthcorpus_{ENGINE_CORPUS}"
    api.wait_for_dag(dag_id, 300)
    layout = RunLayout(f"s3://{bucket}/synthcorpus", ENGINE_CORPUS, ENGINE_RUN)
    faults_before = server.faults.copy()
    failed: list[dict] = []
    try:
        server.fail_always(ENGINE_FAULTS[0][0])
        api.unpause(dag_id)
        run_id = api.trigger(dag_id, {"run_name": ENGINE_RUN})
        for n, (kind, _) in enumerate(ENGINE_FAULTS, 1):
            server.fail_always(kind)  # before the next try starts: retry_delay_s after the last one failed
            tries = wait_until(f"generate try {n} to fail ({kind})",
                               lambda: len(t := ended_tries(api, dag_id, run_id, "generate")) >= n and t, RUN_TIMEOUT_S, 0.2)
            failed = tries
        server.heal()
        run = api.wait_run(dag_id, run_id, RUN_TIMEOUT_S)
    finally:
        server.heal()
    tis = api.task_instances(dag_id, run_id)
    out = {"stack": stack, "api": api, "dag_id": dag_id, "run_id": run_id, "run": run, "tis": tis, "layout": layout,
           "reference": ref, "failed": sorted(failed, key=lambda t: t["try_number"]),
           "faults": server.faults - faults_before, "engine_url": server.base_url + URL_SUFFIX}
    _save("faults-engine-stack-run", {"run_state": run["state"], "faults": dict(out["faults"]),
                                      "failed_tries": [t["try_number"] for t in out["failed"]]})
    return out


def test_engine_fault_run_succeeded_after_three_failed_generate_tries(engine_faults):
    r = engine_faults
    assert r["run"]["state"] == "success", {(t["task_id"], t["map_index"]): t["state"] for t in r["tis"]}
    assert {t["state"] for t in r["tis"]} == {"success"}
    generate = [t for t in r["tis"] if t["task_id"] == "generate"]
    assert len(generate) == 1 and generate[0]["try_number"] == len(ENGINE_FAULTS) + 1, generate
    assert [t["try_number"] for t in r["failed"]] == [1, 2, 3]
    assert set(r["faults"]) == {kind for kind, _ in ENGINE_FAULTS}, r["faults"]


def test_each_failed_generate_try_names_the_engine_and_what_it_did(engine_faults):
    """The failed try's log (the UI's) names the engine URL and the fault: HTTP 500, a malformed reply, no reply."""
    r = engine_faults
    for failed, (_, scenario) in zip(r["failed"], ENGINE_FAULTS):
        errors = try_errors(r["stack"], r["dag_id"], r["run_id"], "generate", failed["map_index"], failed["try_number"])
        expected = ALWAYS[scenario].format(url=r["engine_url"])
        assert any(e.startswith("EngineError: ") and expected in e and "a retry resumes from them" in e for e in errors), (
            failed["try_number"], expected, errors)


def test_engine_fault_run_published_the_uninterrupted_version(engine_faults):
    latest = storage.read_json(engine_faults["layout"].latest)
    assert latest["version"] == ENGINE_RUN
    assert_identical(published(latest["uri"]), engine_faults["reference"])

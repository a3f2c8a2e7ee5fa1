"""The corpus DAG on a real deployment (synthcorpus.deploy.Stack, as `make up` starts it): scheduler,
dag-processor, triggerer, api-server and a Celery worker on PostgreSQL + Redis. One run is triggered
through the REST API; while a generate shard is half-way (a checkpoint committed, no marker), the worker
and every process it started are SIGKILLed and a new worker is started. The tests below then check what
that one run left: the published version, the killed shard resumed with every prompt id exactly once,
generation bounded by its pool, the asset event and the consumer DAG it triggered."""

from __future__ import annotations

import json
from collections import Counter

import pyarrow.parquet as pq
import pytest

from synthcorpus import storage
from synthcorpus.layout import RunLayout
from synthcorpus.publish import verify_version
from synthcorpus.spec import CPU_GENERATE_POOL, load_spec
from tests.airflow_api import AirflowAPI
from tests.conftest import tiny_spec_dict
from tests.stagekit import half_done_generate_shard

pytestmark = pytest.mark.slow
DAG_ID = "synthcorpus_stack"
RUN = "stack-1"


def stack_spec() -> dict:
    # Shards of 4 rows of up to 160 tokens, a checkpoint after every row: a window of several seconds in
    # which a shard has committed parts but no marker (where the worker is killed).
    return tiny_spec_dict(name="stack", documents=8, **{
        "generation.max_tokens": 160, "generation.shard_size": 4, "generation.checkpoint_rows": 1,
        "generation.max_attempts": 1, "tasks.retries": 2, "tasks.retry_delay_s": 1,
    })


@pytest.fixture(scope="module")
def killed_run(airflow_stack):
    stack, corpora, base = airflow_stack
    api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
    api.wait_for_dag(DAG_ID)
    api.wait_for_dag("synthcorpus_release_consumer")
    api.unpause("synthcorpus_release_consumer")
    api.unpause(DAG_ID)
    spec = load_spec(corpora / "stack.yaml")
    layout = RunLayout(stack.env["SYNTHCORPUS_STORAGE_URI"], spec.name, RUN)
    run_id = api.trigger(DAG_ID, {"run_name": RUN})
    victim = api.wait("a generate shard with a checkpoint and no marker", lambda: half_done_generate_shard(layout), 600,
                      every_s=0.1)
    parts_before = len(storage.list_files(layout.parts("generate", victim["map_index"])))
    killed = stack.kill("celery-worker")
    stack.start("celery-worker")
    run = api.wait_run(DAG_ID, run_id, 900)
    return {"api": api, "stack": stack, "spec": spec, "layout": layout, "run_id": run_id, "run": run,
            "victim": victim["map_index"], "parts_before": parts_before, "killed": killed}


def test_run_triggered_through_the_api_publishes_a_verified_version(killed_run):
    assert killed_run["run"]["state"] == "success", killed_run["api"].task_instances(DAG_ID, killed_run["run_id"])
    layout = killed_run["layout"]
    latest = storage.read_json(layout.latest)
    assert latest["version"] == RUN
    manifest = verify_version(latest["uri"])
    assert manifest["rows"] == latest["rows"] == pq.read_table(f"{layout.version_uri('data')}".removeprefix("file://")).num_rows > 0


def test_killed_generate_shard_resumes_from_its_checkpoints_with_every_prompt_once(killed_run):
    api, layout, i = killed_run["api"], killed_run["layout"], killed_run["victim"]
    assert len(killed_run["killed"]) >= 2  # the worker and the task processes it started
    tries = api.tries(DAG_ID, killed_run["run_id"], "generate", i)
    assert [t["state"] for t in tries][-1] == "success" and len(tries) >= 2, tries
    marker = storage.read_json(layout.marker("generate", i))
    # The retry started from the parts the killed attempt had committed: it generated only the rest.
    assert marker["stats"]["resumed_rows"] >= killed_run["parts_before"] >= 1, marker["stats"]
    planned = pq.read_table(layout.shard("plan_shards", i).removeprefix("file://")).column("prompt_id").to_pylist()
    generated = pq.read_table(layout.shard("generate", i).removeprefix("file://")).column("prompt_id").to_pylist()
    assert Counter(generated) == Counter(planned) and len(set(planned)) == len(planned)


def test_cpu_generation_is_bounded_by_its_pool(killed_run):
    api, run_id, stack = killed_run["api"], killed_run["run_id"], killed_run["stack"]
    pool = api.get(f"/pools/{CPU_GENERATE_POOL}")
    # One slot per 4 cores (at least one), the cores shared among the slots' llama.cpp threads.
    assert pool["slots"] == stack.slots == max(1, stack.cores // 4)
    assert stack.process_env()["SYNTHCORPUS_CPU_THREADS"] == str(stack.cores // stack.slots)
    tis = api.task_instances(DAG_ID, run_id, "generate")
    assert {t["pool"] for t in tis} == {CPU_GENERATE_POOL}
    # Never more generate attempts at once than the pool has slots.
    edges = sorted([(t["start_date"], 1) for t in tis] + [(t["end_date"], -1) for t in tis], key=lambda e: (e[0], e[1]))
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    assert peak <= pool["slots"], edges
    topics = api.task_instances(DAG_ID, run_id, "topics")[0]
    assert topics["pool"] == CPU_GENERATE_POOL  # the engine labels topic clusters in-process too


def test_tasks_carry_retries_and_timeouts_from_the_spec(killed_run):
    api, spec = killed_run["api"], killed_run["spec"]
    tasks = {t["task_id"]: t for t in api.get(f"/dags/{DAG_ID}/tasks")["tasks"]}
    assert tasks["generate"]["retries"] == spec.tasks.retries == 2
    seconds = _seconds(tasks["generate"]["execution_timeout"])
    assert seconds == spec.timeout_s("generate") >= 600
    assert _seconds(tasks["dedup"]["execution_timeout"]) == spec.tasks.timeout_s


def test_publish_emits_the_release_on_the_corpus_asset(killed_run):
    api, spec = killed_run["api"], killed_run["spec"]
    events = api.asset_events(source_dag_id=DAG_ID, source_run_id=killed_run["run_id"])
    assert len(events) == 1
    extra = events[0]["extra"]
    manifest = storage.read_json(killed_run["layout"].manifest)
    assert events[0]["name"] == spec.asset_name and events[0]["uri"] == spec.asset_uri
    assert {k: extra[k] for k in ("corpus", "run_id", "version", "rows", "gate", "manifest")} == {
        "corpus": "stack", "run_id": RUN, "version": RUN, "rows": manifest["rows"], "gate": "passed",
        "manifest": killed_run["layout"].manifest}


def test_consumer_dag_runs_on_the_release_and_verifies_its_manifest(killed_run):
    api = killed_run["api"]

    def verified_stack():
        """The entry for this corpus in the first finished consumer run that verified it (other corpora of the
        session's deployment, e.g. test_approval.py's, trigger the consumer too)."""
        for r in api.dag_runs("synthcorpus_release_consumer"):
            run = api.wait_run("synthcorpus_release_consumer", r["dag_run_id"], 300)
            assert run["state"] == "success" and run["run_type"] == "asset_triggered"
            xcom = api.get(f"/dags/synthcorpus_release_consumer/dagRuns/{run['dag_run_id']}/taskInstances/verify_releases/"
                           "xcomEntries/return_value")
            value = xcom["value"] if not isinstance(xcom["value"], str) else json.loads(xcom["value"])
            found = [v for v in value if v["corpus"] == "stack"]
            if found:
                return found
        return None

    value = api.wait("a consumer DAG run that verified the stack corpus", verified_stack, 300, every_s=2.0)
    manifest = storage.read_json(killed_run["layout"].manifest)
    assert value == [{"corpus": "stack", "version": RUN, "rows": manifest["rows"], "files": len(manifest["files"]), "gate": "passed"}]


def _seconds(timedelta_json) -> float:
    """A TimeDelta as the REST API serializes it ({"__type": "TimeDelta", "days", "seconds", ...})."""
    if isinstance(timedelta_json, dict):
        return timedelta_json.get("days", 0) * 86400 + timedelta_json.get("seconds", 0) + timedelta_json.get("microseconds", 0) / 1e6
    raise AssertionError(f"unexpected execution_timeout {timedelta_json!r}")

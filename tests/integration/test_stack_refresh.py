"""A scheduled corpus refreshing itself on the real deployment (the `airflow_stack` fixture: scheduler,
dag-processor, triggerer, api-server, Celery worker on PostgreSQL + Redis, the bundled llama.cpp model):
the scheduler starts two runs of a cron-scheduled corpus; the second publishes version 2 = version 1 +
only new documents, none of them a near-duplicate of a version-1 document, and both asset events carry
``new_rows``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from synthcorpus import storage
from synthcorpus.layout import RunLayout, sanitize_run_id
from synthcorpus.publish import file_uri, verify_version
from synthcorpus.quality.minhash import MinHashParams, signatures
from synthcorpus.spec import load_spec
from tests.airflow_api import AirflowAPI
from tests.conftest import tiny_spec_dict

pytestmark = pytest.mark.slow
DAG_ID = "synthcorpus_refresh"


def refresh_spec() -> dict:
    # Every minute: the scheduler (not the test) starts the runs; max_active_runs=1 queues the second.
    return tiny_spec_dict(name="refresh", documents=6, schedule="* * * * *", **{
        "topics.labeler": "keywords", "generation.max_tokens": 96, "generation.shard_size": 4,
        "generation.max_attempts": 1, "refresh.expected_yield": 0.9, "tasks.retry_delay_s": 1,
    })


@pytest.fixture(scope="module")
def two_refreshes(airflow_stack):
    stack, corpora, _ = airflow_stack
    api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
    api.wait_for_dag(DAG_ID)
    api.unpause(DAG_ID)
    runs = api.wait("two scheduled runs", lambda: (r := api.dag_runs(DAG_ID)) and len(r) >= 2 and r, 900)
    # (Pausing now would stop the second run too: a paused DAG's running runs get no more tasks scheduled.)
    done = [api.wait_run(DAG_ID, r["dag_run_id"], 1500) for r in sorted(runs, key=lambda r: r["logical_date"])[:2]]
    api.patch(f"/dags/{DAG_ID}", {"is_paused": True})  # a third run, if the scheduler started one, stays where it is
    spec = load_spec(corpora / "refresh.yaml")
    return {"api": api, "runs": done, "spec": spec, "storage": stack.env["SYNTHCORPUS_STORAGE_URI"]}


def _version(ctx, dag_run_id):
    layout = RunLayout(ctx["storage"], ctx["spec"].name, sanitize_run_id(dag_run_id))
    return layout, verify_version(layout.version_uri())  # every sha256, earlier versions' files included


def _rows(layout, manifest):
    versions = layout.version_uri().rsplit("/", 1)[0]
    return [r for f in manifest["files"] for r in storage.read_parquet(file_uri(versions, manifest, f)).to_pylist()]


def test_the_scheduler_runs_the_corpus_twice_and_both_publish(two_refreshes):
    runs = two_refreshes["runs"]
    assert [r["state"] for r in runs] == ["success", "success"], [two_refreshes["api"].task_instances(DAG_ID, r["dag_run_id"]) for r in runs]
    assert {r["run_type"] for r in runs} == {"scheduled"}


def test_version_2_is_version_1_plus_only_new_documents(two_refreshes):
    (l1, m1), (l2, m2) = (_version(two_refreshes, r["dag_run_id"]) for r in two_refreshes["runs"])
    assert m1["base_version"] is None and m2["base_version"] == m1["version"]
    assert m2["rows"] == m1["rows"] + m2["new_rows"] and m2["new_rows"] > 0
    assert m2["files"][: len(m1["files"])] == [{**f, "version": m1["version"]} for f in m1["files"]]  # referenced
    v1, v2 = _rows(l1, m1), _rows(l2, m2)
    assert v2[: len(v1)] == v1
    new = v2[len(v1):]
    assert not {r["prompt_id"] for r in v1} & {r["prompt_id"] for r in new}
    assert len({r["prompt_id"] for r in v2}) == len(v2)
    # No new document is a near-duplicate of a version-1 one: every pair's estimated Jaccard is below the
    # threshold at which near_dedup confirms a candidate (checked here pair by pair, not through the index).
    params = MinHashParams.from_spec(two_refreshes["spec"].quality.near_dedup)
    s1, s2 = signatures([r["text"] for r in v1], params), signatures([r["text"] for r in new], params)
    worst = max(float(np.mean(a == b)) for a, b in itertools.product(s1, s2))
    assert worst < params.verify_threshold, worst
    assert latest_is(two_refreshes, m2["version"])


def latest_is(ctx, version):
    return storage.read_json(RunLayout(ctx["storage"], ctx["spec"].name, "x").latest)["version"] == version


def test_asset_events_carry_the_new_rows(two_refreshes):
    api = two_refreshes["api"]
    extras = []
    for run in two_refreshes["runs"]:
        events = api.asset_events(source_dag_id=DAG_ID, source_run_id=run["dag_run_id"])
        assert len(events) == 1
        extras.append(events[0]["extra"])
    (_, m1), (_, m2) = (_version(two_refreshes, r["dag_run_id"]) for r in two_refreshes["runs"])
    assert [(e["version"], e["rows"], e["new_rows"], e["base_version"]) for e in extras] == [
        (m1["version"], m1["rows"], m1["new_rows"], None), (m2["version"], m2["rows"], m2["new_rows"], m1["version"])]

"""scheduler_throughput: completion tok/s of ``generate`` on the real deployment (synthcorpus.deploy.Stack:
scheduler, dag-processor, triggerer, api-server, a Celery worker on PostgreSQL + Redis, the run triggered
through the REST API) next to ``airflow dags test`` (one process, SQLite), same spec, same machine, one
after the other in this process. Goal: scheduler / dags test >= 0.9.

Measured per mode from the run itself: the generate markers' completion tokens (all attempts) over
(a) the sum of the shards' wall times (throughput while a shard generates: what oversubscribed cores
destroy) and (b) the generate phase's wall time, first generate start to last generate end (what a user
waits for: adds per-task start-up and the time between shards).

    .venv/bin/python benchmarks/run.py scheduler_throughput            # the demo spec (30 documents)
    .venv/bin/python benchmarks/scheduler_bench.py include/corpora/demo.yaml
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


def _markers(storage_uri: str, spec, run_id: str) -> list[dict]:
    from synthcorpus import storage
    from synthcorpus.layout import RunLayout

    layout = RunLayout(storage_uri, spec.name, run_id)
    shards = storage.read_json(layout.marker("plan_shards"))["shards"]
    return [storage.read_json(layout.marker("generate", i)) for i in shards]


def _iso(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _figures(markers: list[dict], spans: list[tuple[float, float]], total_s: float) -> dict:
    tokens = sum(m["stats"]["completion_tokens"] for m in markers)
    shard_s = sum(m["stats"]["wall_s"] for m in markers)
    phase_s = max(e for _, e in spans) - min(s for s, _ in spans)
    return {"tokens": tokens, "shards": len(markers), "shard_s": shard_s, "phase_s": phase_s, "total_s": total_s,
            "shard_tok_s": tokens / shard_s, "phase_tok_s": tokens / phase_s}


def dags_test(spec_path: Path, base: Path) -> dict:
    from synthcorpus.spec import load_spec

    home = base / "dags-test"
    storage_uri = (base / "storage-dags-test").as_uri()
    env = {**os.environ, "AIRFLOW_HOME": str(home), "PROJECT_DIR": str(ROOT), "SYNTHCORPUS_STORAGE_URI": storage_uri,
           "SYNTHCORPUS_CORPORA_DIR": str(spec_path.parent), "GX_ANALYTICS_ENABLED": "false", "HF_HUB_OFFLINE": "1"}
    (home / "openlineage").mkdir(parents=True)
    subprocess.run([BIN / "synthcorpus", "render-config", ROOT / "airflow.cfg.template", home / "airflow.cfg"], env=env,
                   check=True, capture_output=True)
    subprocess.run([BIN / "airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    spec = load_spec(spec_path)
    run_id = "bench-dags-test"
    started = time.perf_counter()
    with open(base / "dags-test.log", "wb") as log:
        subprocess.run([BIN / "airflow", "dags", "test", spec.dag_id, "--conf", json.dumps({"run_name": run_id})],
                       env=env, check=True, stdout=log, stderr=subprocess.STDOUT)
    total = time.perf_counter() - started
    with sqlite3.connect(home / "airflow.db") as db:
        spans = [(_iso(s), _iso(e)) for s, e in db.execute(
            "select start_date, end_date from task_instance where task_id = 'generate' and dag_id = ?", (spec.dag_id,))]
    return _figures(_markers(storage_uri, spec, run_id), spans, total)


def scheduler(spec_path: Path, base: Path) -> dict:
    from synthcorpus.deploy import Stack, drop_database
    from synthcorpus.spec import load_spec
    from tests.airflow_api import AirflowAPI
    from tests.integration.conftest import _ports

    tag = f"{os.getpid()}_{random.randint(0, 999_999)}"
    api_port, worker_log, trigger_log = _ports(3)
    storage_uri = (base / "storage-scheduler").as_uri()
    stack = Stack(home=base / "scheduler", project_dir=ROOT, api_port=api_port, worker_log_port=worker_log,
                  trigger_log_port=trigger_log, queue=f"bench_{tag}",
                  sql_alchemy_conn=f"postgresql+psycopg2://postgres@127.0.0.1:5432/synthcorpus_bench_{tag}",
                  env={"SYNTHCORPUS_CORPORA_DIR": str(spec_path.parent), "SYNTHCORPUS_STORAGE_URI": storage_uri})
    spec = load_spec(spec_path)
    run_id = "bench-scheduler"
    try:
        stack.up(say=lambda *_: None)
        api = AirflowAPI(stack.base_url, "admin", stack.admin_password())
        api.wait_for_dag(spec.dag_id)
        api.unpause(spec.dag_id)
        started = time.perf_counter()
        dag_run = api.trigger(spec.dag_id, {"run_name": run_id})
        state = api.wait_run(spec.dag_id, dag_run, 7200)["state"]
        total = time.perf_counter() - started
        if state != "success":
            raise RuntimeError(f"the scheduler run ended {state}; logs in {stack.home}")
        tis = api.task_instances(spec.dag_id, dag_run, "generate")
        spans = [(_iso(t["start_date"]), _iso(t["end_date"])) for t in tis]
        return {**_figures(_markers(storage_uri, spec, run_id), spans, total), "slots": stack.slots, "threads": stack.threads}
    finally:
        stack.down(say=lambda *_: None)
        drop_database(stack.sql_alchemy_conn)


def scheduler_throughput(spec: str | None = None) -> None:
    spec_path = Path(spec or ROOT / "include" / "corpora" / "demo.yaml").resolve()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        a = dags_test(spec_path, base)
        b = scheduler(spec_path, base)
    for name, f in (("airflow dags test", a), ("scheduler + Celery", b)):
        print(f"scheduler_throughput: {name:18} {f['tokens']} completion tokens in {f['shards']} shards: "
              f"{f['shard_tok_s']:.1f} tok/s while generating ({f['shard_s']:.0f} s of shard time), "
              f"{f['phase_tok_s']:.1f} tok/s over the generate phase ({f['phase_s']:.0f} s); whole run {f['total_s']:.0f} s")
    print(f"scheduler_throughput: ratio scheduler / dags test = {b['shard_tok_s'] / a['shard_tok_s']:.3f} while generating, "
          f"{b['phase_tok_s'] / a['phase_tok_s']:.3f} over the generate phase (goal >= 0.9; CPU pool "
          f"{b['slots']} slot(s), {b['threads']} threads per llama.cpp process; {spec_path.name})")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scheduler_throughput(*sys.argv[1:2])

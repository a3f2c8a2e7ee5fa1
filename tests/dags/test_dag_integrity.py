"""DAG integrity: every DAG file imports without errors or cycles, fast, with nothing heavy at parse time;
a broken spec surfaces as one import error naming file and field while the other corpora still load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from synthcorpus.stages import TABLE
from tests.conftest import ROOT, tiny_spec_dict, write_spec

HEAVY = ["great_expectations", "llama_cpp", "torch", "vllm", "sentence_transformers", "pandas", "datasets", "sklearn"]

PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
t_airflow = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t_parse = time.perf_counter() - t_airflow
heavy = sorted(m for m in %r if m in sys.modules)
def schedule_assets(dag):
    cond = getattr(dag.timetable, "asset_condition", None)
    if cond is None:
        return []
    return sorted([cond.uri] if hasattr(cond, "uri") else [a.uri for a in cond.objects])
def timeout(t):
    return t.execution_timeout.total_seconds() if t.execution_timeout else None
dags = {d: {"tasks": sorted(t.task_id for t in bag.dags[d].tasks),
            "settings": {t.task_id: {"pool": t.pool, "retries": t.retries, "retry_delay": t.retry_delay.total_seconds(),
                                     "timeout": timeout(t), "outlets": [o.uri for o in t.outlets], "type": type(t).__name__,
                                     "upstream": sorted(t.upstream_task_ids),
                                     "hitl": {"defaults": t.defaults, "assigned_users": t.assigned_users,
                                              "response_timeout": t.response_timeout.total_seconds(),
                                              "options": t.options} if hasattr(t, "response_timeout") else None}
                         for t in bag.dags[d].tasks},
            "schedule_assets": schedule_assets(bag.dags[d])}
        for d in bag.dags}
print(json.dumps({"parse_s": t_parse, "heavy": heavy, "dags": dags, "errors": bag.import_errors}))
""" % (HEAVY,)


def parse_dags(tmp_path: Path, corpora: Path) -> dict:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow-home"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "SYNTHCORPUS_CORPORA_DIR": str(corpora),
    }
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_shipped_specs_parse_fast_without_heavy_imports(tmp_path):
    result = parse_dags(tmp_path, ROOT / "include" / "corpora")
    assert result["errors"] == {}
    assert "synthcorpus_demo" in result["dags"]
    tasks = result["dags"]["synthcorpus_demo"]["tasks"]
    # One task per row of the stage table, nothing else.
    assert tasks == sorted(["history", "seeds", "topics", "prompts", "plan_shards", "generate", "filter_shard", "judge", "dedup",
                            "minhash_signatures", "near_dedup", "decontaminate", "top_up",
                            "validate_shard", "quality_gate", "publish", "summary"])
    assert tasks == sorted(s.name for s in TABLE)
    # What makes parsing slow is importing something heavy; its time (well under 1 s, ARCHITECTURE principle 7)
    # is measured by `python benchmarks/run.py dag_parse`, not asserted here: a busy machine would fail it.
    assert result["heavy"] == [], f"imported at parse time: {result['heavy']}"


def test_broken_spec_is_one_import_error_and_others_still_load(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write_spec(corpora, tiny_spec_dict(name="good_one"))
    write_spec(corpora, tiny_spec_dict(name="bad_one", **{"generation.temperature": 9}))
    result = parse_dags(tmp_path, corpora)
    assert sorted(result["dags"]) == ["synthcorpus_good_one", "synthcorpus_release_consumer"]
    assert len(result["errors"]) == 1
    (path, message), = result["errors"].items()
    assert path.endswith("synthcorpus_spec_errors.py")
    assert f"{corpora / 'bad_one.yaml'}: generation.temperature: expected less than or equal to 2" in message
    assert "good_one" not in message


def test_an_invalid_schedule_is_an_import_error_naming_the_spec_file_and_the_field(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write_spec(corpora, tiny_spec_dict(name="weekly", schedule="0 3 * * 1"))
    write_spec(corpora, tiny_spec_dict(name="typo", schedule="0 3 * * 8"))
    result = parse_dags(tmp_path, corpora)
    assert sorted(result["dags"]) == ["synthcorpus_release_consumer", "synthcorpus_weekly"]
    (message,) = result["errors"].values()
    assert f"{corpora / 'typo.yaml'}: schedule: expected a cron expression of 5 fields" in message
    assert "day of week '8' is out of range 0-7" in message


def test_duplicate_corpus_names_are_reported(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write_spec(corpora, tiny_spec_dict(name="same"), "a.yaml")
    write_spec(corpora, tiny_spec_dict(name="same"), "b.yaml")
    result = parse_dags(tmp_path, corpora)
    assert sorted(result["dags"]) == ["synthcorpus_release_consumer", "synthcorpus_same"]
    (message,) = result["errors"].values()
    assert "b.yaml: name: expected a unique corpus name" in message


def test_kubernetes_runner_maps_one_pod_per_shard(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write_spec(corpora, tiny_spec_dict(name="gpu", **{
        "generation.engine": "vllm", "generation.runner": "kubernetes", "generation.model": "HuggingFaceTB/SmolLM2-1.7B-Instruct",
        "generation.kubernetes": {"gpus_per_pod": 1, "secrets": ["hf-token"]}}))
    result = parse_dags(tmp_path, corpora)
    assert result["errors"] == {}
    tasks = result["dags"]["synthcorpus_gpu"]["tasks"]
    assert "pod_kwargs" in tasks and "generate" in tasks and "filter_shard" in tasks
    settings = result["dags"]["synthcorpus_gpu"]["settings"]
    assert settings["generate"]["pool"] == "synthcorpus_gpu_generate"  # GPU pods: their own pool
    assert settings["topics"]["pool"] == "default_pool"  # the vllm engine does not run on the Airflow worker's CPU
    # Waiting for a GPU node counts: the pod start-up timeout is added to the shard's execution_timeout.
    assert settings["generate"]["timeout"] == 600.0 + 900


def test_tasks_get_pools_retries_and_timeouts_from_the_spec(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write_spec(corpora, tiny_spec_dict(name="cpu", **{"tasks": {"retries": 3, "retry_delay_s": 5, "timeout_s": 900}}))
    write_spec(corpora, tiny_spec_dict(name="keywords", **{"topics.labeler": "keywords", "tasks.generate_timeout_s": 7200}))
    dags = parse_dags(tmp_path, corpora)["dags"]
    cpu = dags["synthcorpus_cpu"]["settings"]
    # The tasks that run llama.cpp in-process: generate, topic labels, top-up rounds.
    assert cpu["generate"]["pool"] == cpu["topics"]["pool"] == cpu["top_up"]["pool"] == "synthcorpus_cpu_generate"
    assert {cpu[t]["pool"] for t in cpu if t not in ("generate", "topics", "top_up")} == {"default_pool"}
    assert {(v["retries"], v["retry_delay"]) for v in cpu.values()} == {(3, 5.0)}
    assert {v["timeout"] for t, v in cpu.items() if t != "generate"} == {900.0}  # top_up: 9 rows need less
    assert cpu["generate"]["timeout"] == 600.0  # 4 rows x 48 tokens: the 10-minute floor
    assert cpu["publish"]["outlets"] == ["synthcorpus://cpu/latest"]
    keywords = dags["synthcorpus_keywords"]["settings"]
    assert keywords["topics"]["pool"] == "default_pool"  # c-TF-IDF labels: no engine, no generation slot
    assert keywords["generate"]["timeout"] == 7200.0


def test_release_consumer_is_scheduled_on_every_corpus_asset(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    for name in ("one", "two"):
        write_spec(corpora, tiny_spec_dict(name=name))
    dags = parse_dags(tmp_path, corpora)["dags"]
    assert dags["synthcorpus_release_consumer"]["tasks"] == ["verify_releases"]
    assert dags["synthcorpus_release_consumer"]["schedule_assets"] == ["synthcorpus://one/latest", "synthcorpus://two/latest"]


def test_approval_sits_between_the_gate_and_publish_when_the_spec_requires_it(tmp_path):
    corpora = tmp_path / "corpora"
    corpora.mkdir()
    write_spec(corpora, tiny_spec_dict(name="governed", **{"publish.approval": {
        "required": True, "assigned_users": ["alice", "bob"], "timeout": "36h"}}))
    write_spec(corpora, tiny_spec_dict(name="ungoverned"))
    result = parse_dags(tmp_path, corpora)
    assert result["errors"] == {}
    governed = result["dags"]["synthcorpus_governed"]["settings"]
    approval = governed["approval"]
    assert approval["type"] == "ReleaseApproval" and approval["upstream"] == ["quality_gate"]
    assert governed["publish"]["upstream"] == ["approval"]  # only through the approval
    assert approval["hitl"] == {"defaults": ["Reject"], "options": ["Approve", "Reject"], "response_timeout": 36 * 3600.0,
                                "assigned_users": [{"id": "alice", "name": "alice"}, {"id": "bob", "name": "bob"}]}
    ungoverned = result["dags"]["synthcorpus_ungoverned"]["settings"]
    assert "approval" not in ungoverned and ungoverned["publish"]["upstream"] == ["quality_gate"]
    assert result["heavy"] == []

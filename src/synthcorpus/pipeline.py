"""The whole pipeline in-process, stage after stage, with no Airflow: what the DAG does, for the CLI,
tests and debugging. It calls the same task functions the DAG's tasks call, in the same order."""

from __future__ import annotations

from typing import Any

from . import tasks


def run_pipeline(spec_path: str, run_id: str) -> dict[str, Any]:
    seeds = tasks.seeds(spec_path, run_id)
    topics = tasks.topics(spec_path, run_id, seeds["outputs"]["seeds"])
    prompts = tasks.prompts(spec_path, run_id, seeds["outputs"]["seeds"], topics)
    shards = tasks.plan(spec_path, run_id, prompts["outputs"]["prompts"])
    generated = [tasks.generate(shard) for shard in shards]
    filtered = [tasks.filter_shard(spec_path, run_id, g["output"])["outputs"]["kept"] for g in generated]
    dedup = tasks.dedup(spec_path, run_id, filtered)
    docs = dedup["outputs"]["documents"]
    sigs = [tasks.signatures(spec_path, run_id, uri) for uri in docs]
    near = tasks.near_dedup(spec_path, run_id, docs, sigs)
    clean = tasks.decontaminate(spec_path, run_id, near["outputs"]["documents"])
    for uri in clean["outputs"]["documents"]:
        tasks.validate_shard(spec_path, run_id, uri)
    tasks.gate(spec_path, run_id, clean["outputs"]["documents"])
    return tasks.publish(spec_path, run_id)

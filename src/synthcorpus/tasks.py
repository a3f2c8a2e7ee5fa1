"""What each DAG task calls: open the run for a spec file and a run id, then call one stage.

Kept here, not in ``dags/``, so the DAG file stays thin and every task body is plain, testable Python.
"""

from __future__ import annotations

from typing import Any

from . import storage
from .run import RunContext
from .spec import load_spec


class SpecChangedError(RuntimeError):
    """The spec file changed while a run was in progress: stages would disagree about the corpus."""


def open_run(spec_path: str, run_id: str) -> RunContext:
    """Load the spec and pin it to the run: the first task records its hash, later ones must match."""
    spec = load_spec(spec_path)
    run = RunContext.create(spec, run_id)
    snapshot = run.run_uri("spec.json")
    if storage.exists(snapshot):
        recorded = storage.read_json(snapshot)["sha256"]
        if recorded != spec.spec_hash():
            raise SpecChangedError(
                f"{spec_path}: changed since run {run.run_id} started (sha256 {recorded[:12]} -> "
                f"{spec.spec_hash()[:12]}); start a new run (new run id) to use the new spec"
            )
    else:
        storage.write_json(snapshot, {"sha256": spec.spec_hash(), "path": spec_path, "spec": spec.canonical()})
    return run


def seeds(spec_path: str, run_id: str) -> dict[str, Any]:
    from .seeds import load_seeds

    return load_seeds(open_run(spec_path, run_id)).to_dict()


def topics(spec_path: str, run_id: str, seeds_uri: str) -> dict[str, Any]:
    from .topics import extract_topics

    return extract_topics(open_run(spec_path, run_id), seeds_uri).to_dict()


def prompts(spec_path: str, run_id: str, seeds_uri: str, topics_result: dict[str, Any]) -> dict[str, Any]:
    from .prompts import build_prompts

    out = topics_result["outputs"]
    return build_prompts(open_run(spec_path, run_id), seeds_uri, out["topics"], out["assignments"]).to_dict()


def plan(spec_path: str, run_id: str, prompts_uri: str) -> list[dict[str, Any]]:
    from .generation import plan_shards

    return plan_shards(open_run(spec_path, run_id), prompts_uri).outputs["shards"]


def generate(shard: dict[str, Any]) -> dict[str, Any]:
    """The local runner: the worker entrypoint, called in-process."""
    from .worker import main

    stats = main(["generate", "--input", shard["input"], "--output", shard["output"]])
    return {"output": shard["output"], "index": shard["index"], **stats}


def filter_shard(spec_path: str, run_id: str, generated_uri: str) -> dict[str, Any]:
    from .quality.filters import filter_shard as stage

    return stage(open_run(spec_path, run_id), generated_uri).to_dict()


def dedup(spec_path: str, run_id: str, filtered_uris: list[str]) -> dict[str, Any]:
    from .quality.dedup import dedup_exact

    return dedup_exact(open_run(spec_path, run_id), filtered_uris).to_dict()


def signatures(spec_path: str, run_id: str, document_uri: str) -> str:
    from .quality.dedup import signatures as stage

    return stage(open_run(spec_path, run_id), document_uri)


def near_dedup(spec_path: str, run_id: str, document_uris: list[str], signature_uris: list[str]) -> dict[str, Any]:
    from .quality.dedup import near_dedup as stage

    return stage(open_run(spec_path, run_id), document_uris, signature_uris).to_dict()


def decontaminate(spec_path: str, run_id: str, document_uris: list[str]) -> dict[str, Any]:
    from .quality.decontam import decontaminate as stage

    return stage(open_run(spec_path, run_id), document_uris).to_dict()


def validate_shard(spec_path: str, run_id: str, document_uri: str) -> dict[str, Any]:
    from .gate_stage import validate_shard as stage

    result = stage(open_run(spec_path, run_id), document_uri)
    return {k: result[k] for k in ("shard", "source", "rows", "passed")}  # the profile stays in storage


def gate(spec_path: str, run_id: str, document_uris: list[str], override_reason: str | None = None) -> dict[str, Any]:
    from .gate_stage import quality_gate

    return quality_gate(open_run(spec_path, run_id), document_uris, override_reason).to_dict()


def publish(spec_path: str, run_id: str) -> dict[str, Any]:
    from .publish import publish as stage

    return stage(open_run(spec_path, run_id)).to_dict()


def summary(spec_path: str, run_id: str) -> str:
    from .summary import run_summary

    run = open_run(spec_path, run_id)
    return run_summary(run.spec, run.run_id)

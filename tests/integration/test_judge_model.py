"""The judge on the real bundled model (SmolLM2-135M through llama.cpp), in-process: every filtered document
is judged once and comes out exactly once; each is either scored (scores 0-5, a critique) or unscored with the
reason quoting the reply; the judge's tokens are counted apart from generation's and reach the summary. What the
135M model can judge is measured in benchmarks/judge_eval.py (README "LLM judge")."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from synthcorpus import storage
from synthcorpus.stages.contract import open_run, results
from synthcorpus.stages.runner import run_pipeline
from synthcorpus.summary import run_summary
from tests.conftest import tiny_spec_dict, write_spec

pytestmark = pytest.mark.slow


def test_the_bundled_model_judges_every_document_once_and_honestly(tmp_path, storage_uri):
    path = str(write_spec(tmp_path, tiny_spec_dict(name="judged_real", documents=3, **{
        "generation.max_tokens": 40, "generation.shard_size": 3, "refresh.top_up_rounds": 0,
        "judge": {"enabled": True, "max_tokens": 32, "max_retries": 1, "max_rounds": 1, "rewrite_max_tokens": 40}})))
    run_pipeline(path, "real-1", until="quality_gate")
    run = open_run(path, "real-1")
    filtered = [p for m in results(run, "filter_shard")
                for p in pq.read_table(m["outputs"]["documents"].removeprefix("file://")).column("prompt_id").to_pylist()]
    rows = [r for m in results(run, "judge") for r in pq.read_table(m["outputs"]["documents"].removeprefix("file://")).to_pylist()]
    assert [r["prompt_id"] for r in rows] == filtered and filtered
    for r in rows:
        rounds = json.loads(r["judge_rounds"])
        assert rounds[0]["attempts"] == 2 or rounds[0]["status"] == "scored"
        if r["judge_status"] == "scored":
            assert all(0 <= r[f"score_{d}"] <= 5 for d in ("educational_value", "coherence", "faithfulness", "audience_fit"))
            assert r["judge_critique"]
        else:
            assert r["judge_error"].startswith("malformed reply: ") and r["score_overall"] is None
    lineage = storage.read_json(run.layout.lineage)
    judge = lineage["judge"]
    assert judge["input"] == len(rows) == judge["scored"] + judge["unscored"]
    assert judge["judge_completion_tokens"] > 0 and judge["model"] == "smollm2-135m-instruct"
    assert judge["model_info"]["model_sha256"] == lineage["model"]["model_sha256"]  # the generator's own GGUF
    generation = sum(m["stats"]["completion_tokens"] for m in results(run, "generate"))
    assert lineage["counts"]["completion_tokens"] == generation
    summary = run_summary(run.spec, "real-1")
    assert f"judge       smollm2-135m-instruct: {judge['scored']}/{judge['input']} scored" in summary


def test_the_judge_can_be_another_engine_an_openai_compatible_server(tmp_path, storage_uri):
    """Generation in-process (llamacpp), judging through the openai engine against llama.cpp's
    OpenAI-compatible server: the judge's engine, model and tokens are its own."""
    from tests.integration.test_openai_server import ALIAS, free_port, start_server, stop_server

    port = free_port()
    proc = start_server(port, tmp_path / "server.log")
    try:
        path = str(write_spec(tmp_path, tiny_spec_dict(name="judged_openai", documents=2, **{
            "generation.max_tokens": 40, "generation.shard_size": 2, "refresh.top_up_rounds": 0,
            "judge": {"enabled": True, "engine": "openai", "model": ALIAS, "base_url": f"http://127.0.0.1:{port}/v1",
                      "max_tokens": 24, "max_retries": 0, "max_rounds": 0}})))
        run_pipeline(path, "real-openai", until="quality_gate")
    finally:
        stop_server(proc)
    run = open_run(path, "real-openai")
    lineage = storage.read_json(run.layout.lineage)
    judge = lineage["judge"]
    assert (judge["engine"], judge["model"]) == ("openai", ALIAS)
    assert judge["input"] == judge["scored"] + judge["unscored"] > 0
    assert judge["judge_completion_tokens"] > 0 and judge["rewrite_completion_tokens"] == 0
    # what the engine itself reported: the server it asked, no model file (the generator's is a local GGUF)
    assert judge["model_info"]["base_url"] == f"http://127.0.0.1:{port}/v1" and judge["model_info"]["model_sha256"] is None
    assert lineage["model"]["model_sha256"]

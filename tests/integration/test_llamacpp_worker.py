"""The llamacpp engine and the worker entrypoint on the real bundled model (small max_tokens)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.engines import EngineError, SamplingParams, load_engine
from synthcorpus.engines.llamacpp import bundled_model_path
from synthcorpus.generation import META_KEY
from synthcorpus.stages.contract import read_marker
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec


@pytest.fixture(scope="module")
def engine():
    eng = load_engine({"engine": "llamacpp", "model": "smollm2-135m-instruct", "n_ctx": 1024})
    yield eng
    eng.close()


def test_bundled_model_is_found_offline():
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_engine_generates_with_usage_and_finish_reason(engine):
    params = SamplingParams(max_tokens=12, temperature=0.0, top_p=1.0)
    c = engine.generate("Name three colors of the rainbow.", params, seed=1)
    assert c.text.strip()
    assert c.finish_reason in ("stop", "length")
    assert 0 < c.completion_tokens <= 12
    assert c.prompt_tokens > 5
    again = engine.generate("Name three colors of the rainbow.", params, seed=1)
    assert again.text == c.text  # greedy + fixed seed: reproducible
    info = engine.model_info()
    assert info["model_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf" and len(info["model_sha256"]) == 64


def test_max_tokens_truncation_is_reported_as_length(engine):
    c = engine.generate("Write a long essay about the history of bridges.", SamplingParams(16, 0.0, 1.0), seed=2)
    assert c.finish_reason == "length" and c.completion_tokens == 16


def test_missing_model_file_is_one_clear_error(tmp_path):
    with pytest.raises(EngineError, match=r"generation.model: expected 'smollm2-135m-instruct' or an existing .gguf file"):
        load_engine({"engine": "llamacpp", "model": str(tmp_path / "nope.gguf")})


def test_worker_entrypoint_processes_one_shard(tmp_path, storage_uri):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=3, **{"generation.max_tokens": 24, "generation.shard_size": 3})))
    (shard,) = run_pipeline(spec_path, "w1", until="plan_shards")["plan_shards"]["outputs"]["shards"]
    cmd = [sys.executable, "-m", "synthcorpus.worker", "generate", "--input", shard["input"], "--output", shard["output"],
           "--parts", shard["parts"], "--marker", shard["marker"], "--shard", str(shard["index"])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "3/3 rows" in res.stderr and "ETA" in res.stderr  # progress with rate and ETA
    stats = json.loads(res.stdout.strip().splitlines()[-1])["stats"]  # the worker prints the shard's marker
    rows = storage.read_parquet(shard["output"]).to_pylist()
    assert stats["rows"] == len(rows) == 3
    assert {r["prompt_id"] for r in rows} == {r["prompt_id"] for r in storage.read_parquet(shard["input"]).to_pylist()}
    for r in rows:
        assert r["text"] and r["finish_reason"] in ("stop", "length")
        assert 0 < r["completion_tokens"] <= 24 and r["prompt_tokens"] > 0
        assert r["run_id"] == "w1" and r["model"] == "smollm2-135m-instruct"
    assert stats["completion_tokens"] == sum(r["completion_tokens"] for r in rows)
    # Second run: committed output, no model load, same answer.
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "committed already" in again.stderr
    assert "loaded SmolLM2" not in again.stderr


def test_worker_rejects_a_file_that_is_not_a_plan_shard(tmp_path, storage_uri):
    bad = (tmp_path / "x.parquet").as_uri()
    storage.write_parquet(bad, pa.table({"prompt": ["hi"]}))
    out = (tmp_path / "out.parquet").as_uri()
    parts, marker = (tmp_path / "out.parts").as_uri(), (tmp_path / "out.commit.json").as_uri()
    res = subprocess.run([sys.executable, "-m", "synthcorpus.worker", "generate", "--input", bad, "--output", out,
                          "--parts", parts, "--marker", marker, "--shard", "0"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    assert f"{bad}: expected a plan shard with '{META_KEY.decode()}' schema metadata" in res.stderr
    assert not storage.exists(out)
    assert read_marker(marker) is None

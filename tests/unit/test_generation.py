"""Worker behaviour with fake engines: refine loop, checkpoints and resume, accounting, shard plan."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.engines import Completion, EngineError
from synthcorpus.generation import META_KEY, generate_shard
from synthcorpus.layout import RunLayout
from synthcorpus.spec import parse_spec
from synthcorpus.stages import filter_shard, plan_shards
from synthcorpus.stages.contract import RunContext, read_marker
from synthcorpus.stages.generate import run_unit, work_unit
from tests.conftest import tiny_spec_dict
from tests.fakes import FakeEngine
from tests.stagekit import given

GOOD = FakeEngine().generate("x", None, 0).text


class ScriptedEngine(FakeEngine):
    """Replies from a script per prompt (then good text); can crash after a number of calls."""

    def __init__(self, script=None, crash_after=None):
        super().__init__()
        self.script = {k: list(v) for k, v in (script or {}).items()}
        self.crash_after = crash_after
        self.seeds: list[tuple[str, int]] = []

    def generate(self, prompt, params, seed):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise RuntimeError("worker killed")
        self.seeds.append((prompt, seed))
        queued = self.script.get(prompt)
        if queued:
            reply = queued.pop(0)
            self.calls.append(prompt)
            if isinstance(reply, Exception):
                raise reply
            return reply
        return super().generate(prompt, params, seed)


def make_shard(tmp_path, n=6, **cfg):
    """A plan shard at the input of work unit 0 of run ``r`` of ``tiny`` (the layout of the
    ``storage_uri`` fixture); returns the work unit (input, output, parts, marker)."""
    config = {"engine": "fake", "model": "fake-model", "max_tokens": 64, "temperature": 0.5, "top_p": 1.0,
              "repeat_penalty": 1.0, "seed": 0, "run_id": "r", "max_attempts": 3, "checkpoint_rows": 2,
              "checkpoint_seconds": 3600, "quality": {"min_words": 5}, **cfg}
    rows = [{"prompt_id": f"p{i}", "prompt": f"prompt {i}", "seed": 100 + i, "language": "en"} for i in range(n)]
    table = pa.Table.from_pylist(rows).replace_schema_metadata({META_KEY: json.dumps(config).encode()})
    unit = work_unit(RunLayout((tmp_path / "storage").as_uri(), "tiny", "r"), 0)
    storage.write_parquet(unit["input"], table)
    return unit


def test_failed_validation_is_regenerated_with_a_new_seed(tmp_path):
    refusal = Completion("As an AI language model I cannot write this text for you today.", "stop", 5, 12, 0.01)
    truncated = Completion(GOOD, "length", 5, 64, 0.01)
    engine = ScriptedEngine({"prompt 1": [refusal, truncated]})
    unit = make_shard(tmp_path)
    stats = generate_shard(unit["input"], unit["output"], unit["parts"], engine=engine)
    rows = {r["prompt_id"]: r for r in storage.read_parquet(unit["output"]).to_pylist()}
    assert rows["p1"]["attempts"] == 3 and rows["p1"]["attempt_reasons"] == ["refusal", "truncated"]
    assert rows["p1"]["status"] == "ok"
    assert len({s for p, s in engine.seeds if p == "prompt 1"}) == 3  # a new seed every attempt
    assert rows["p1"]["total_completion_tokens"] == 12 + 64 + rows["p1"]["completion_tokens"]
    assert stats["regenerated"] == 1 and stats["attempt_reasons"] == {"refusal": 1, "truncated": 1}
    assert stats["completion_tokens"] == sum(r["total_completion_tokens"] for r in rows.values())


def test_rows_that_keep_failing_are_kept_out_but_not_lost(tmp_path, storage_uri):
    bad = Completion("Too short.", "stop", 5, 2, 0.01)
    engine = ScriptedEngine({"prompt 2": [bad, EngineError("HTTP 500"), bad]})
    unit = make_shard(tmp_path)
    stats = generate_shard(unit["input"], unit["output"], unit["parts"], engine=engine)
    rows = {r["prompt_id"]: r for r in storage.read_parquet(unit["output"]).to_pylist()}
    assert len(rows) == 6  # every prompt id exactly once
    assert rows["p2"]["status"] == "failed"
    assert rows["p2"]["attempt_reasons"] == ["too_short", "engine_error", "too_short"]
    assert stats["failed"] == 1 and stats["ok"] == 5
    run = RunContext.create(parse_spec(tiny_spec_dict()), "r")
    given(run, "generate", {"shard": unit["output"]}, shard=0, stats=stats)
    result = filter_shard.run(run, 0)
    assert result.stats["reasons"]["generation_failed"] == 1


def _outage(message="openai: no reply from http://llm/v1/chat/completions after 3 attempts: ConnectError"):
    err = EngineError(message)
    err.transient = True
    return err


def test_a_server_outage_spends_no_attempt_and_the_retry_resumes_with_the_same_seeds(tmp_path):
    """A transient engine failure (after the engine's own retries) is the server's: the shard keeps its finished
    rows, fails without an output or a marker, and the retry generates the rest with the seeds an uninterrupted
    run uses, so the rows are the same."""
    reference_unit = make_shard(tmp_path / "reference", n=5)
    generate_shard(reference_unit["input"], reference_unit["output"], reference_unit["parts"], engine=ScriptedEngine())
    reference = storage.read_parquet(reference_unit["output"]).to_pylist()

    unit = make_shard(tmp_path, n=5)
    down = ScriptedEngine({"prompt 3": [_outage()]})
    with pytest.raises(EngineError, match=r"1 request\(s\) failed after the engine's retries, e\.g\. openai: no reply .*"
                                          r"3 of 5 rows are checkpointed"):
        generate_shard(unit["input"], unit["output"], unit["parts"], engine=down)
    assert not storage.exists(unit["output"])
    again = ScriptedEngine()
    generate_shard(unit["input"], unit["output"], unit["parts"], engine=again)
    assert again.calls == ["prompt 3", "prompt 4"]  # the checkpointed rows are not asked again
    rows = storage.read_parquet(unit["output"]).to_pylist()
    key = ("prompt_id", "text", "generation_seed", "attempts", "status")
    assert sorted(tuple(r[k] for k in key) for r in rows) == sorted(tuple(r[k] for k in key) for r in reference)


def test_crash_then_resume_generates_each_row_once(tmp_path):
    # Through the generate stage's work unit (what the worker runs): the marker is its commit.
    unit = make_shard(tmp_path, n=7)
    crashing = ScriptedEngine(crash_after=5)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_unit(unit, engine=crashing)
    parts = [u for u in storage.list_files(unit["parts"]) if u.endswith(".parquet")]
    assert len(parts) == 2  # rows 0-3 checkpointed in two parts; row 4 was lost with the crash
    assert read_marker(unit["marker"]) is None  # not committed
    fresh = ScriptedEngine()
    run_unit(unit, engine=fresh)
    assert sorted(fresh.calls) == ["prompt 4", "prompt 5", "prompt 6"]  # finished rows not regenerated
    out = storage.read_parquet(unit["output"]).to_pylist()
    assert [r["prompt_id"] for r in out] == [f"p{i}" for i in range(7)]
    assert not storage.list_files(unit["parts"])  # checkpoints removed after the commit
    again = ScriptedEngine()
    assert run_unit(unit, engine=again)["skipped"] is True and again.calls == []


def test_time_based_checkpoints(tmp_path):
    unit = make_shard(tmp_path, n=3, checkpoint_rows=1000, checkpoint_seconds=1e-9)
    with pytest.raises(RuntimeError):
        generate_shard(unit["input"], unit["output"], unit["parts"], engine=ScriptedEngine(crash_after=2))
    assert len([u for u in storage.list_files(unit["parts"]) if u.endswith(".parquet")]) == 2


def test_accounting_counts_gpu_time_and_cost(tmp_path):
    unit = make_shard(tmp_path, runner="kubernetes", kubernetes={"gpus_per_pod": 2}, cost_per_gpu_hour=3.6)
    stats = generate_shard(unit["input"], unit["output"], unit["parts"], engine=FakeEngine())
    assert stats["gpus"] == 2
    assert stats["gpu_seconds"] == pytest.approx(2 * stats["wall_s"], abs=0.1)
    assert stats["cost_usd"] == pytest.approx(stats["gpu_seconds"] / 3600 * 3.6, abs=1e-4)


def test_plan_sizes_shards_by_tokens_and_warns_about_load(storage_uri, caplog):
    spec = parse_spec(tiny_spec_dict(documents=10, **{
        "generation.max_tokens": 100, "generation.target_tokens_per_shard": 300,
        "generation.expected_load_s": 60, "generation.expected_tokens_per_s": 100}))
    run = RunContext.create(spec, "r")
    prompts = run.layout.output("prompts", "prompts")
    storage.write_parquet(prompts, pa.table({"prompt_id": [f"p{i}" for i in range(10)], "prompt": ["x"] * 10}))
    given(run, "prompts", {"prompts": prompts})
    with caplog.at_level(logging.WARNING):
        result = plan_shards.run(run, None)
    assert [s["rows"] for s in result.outputs["shards"]] == [3, 3, 3, 1]
    assert result.stats["expected_load_share"] == pytest.approx(60 / 63, abs=1e-3)
    assert "model load would be" in caplog.text
    capped = spec.model_copy(update={"generation": spec.generation.model_copy(update={"max_shards": 2})})
    capped_run = RunContext.create(capped, "r2")
    given(capped_run, "prompts", {"prompts": prompts})
    result = plan_shards.run(capped_run, None)
    assert [s["rows"] for s in result.outputs["shards"]] == [5, 5]


def test_plan_never_exceeds_max_map_length_shards_grow_instead(storage_uri, caplog, monkeypatch):
    # 10 000 prompts in shards of 1 would be 10 000 map indexes: Airflow fails the upstream task beyond
    # [core] max_map_length (1024 by default), so the plan grows the shards and says so.
    spec = parse_spec(tiny_spec_dict(documents=10_000, **{"generation.shard_size": 1}))
    run = RunContext.create(spec, "big")
    prompts = run.layout.output("prompts", "prompts")
    n = 10_000
    storage.write_parquet(prompts, pa.table({"prompt_id": [f"p{i:05d}" for i in range(n)], "prompt": ["x"] * n}))
    given(run, "prompts", {"prompts": prompts})
    with caplog.at_level(logging.WARNING):
        result = plan_shards.run(run, None)
    shards = result.outputs["shards"]
    assert result.stats["max_map_length"] == 1024
    assert len(shards) == result.stats["shards"] == 1000 <= 1024
    assert {s["rows"] for s in shards} == {10} and sum(s["rows"] for s in shards) == n
    (warning,) = [w for w in result.stats["warnings"] if "max_map_length" in w]
    assert warning == ("10000 prompts in shards of 1 would need 10000 shards, more than Airflow's [core] "
                       "max_map_length (1024): shards grew to 10 prompts each")
    assert warning in caplog.text
    # A deployment with a lower limit gets fewer, larger shards.
    monkeypatch.setattr("synthcorpus.airflow_adapter.max_map_length", lambda: 300)
    smaller = plan_shards.run(RunContext.create(spec, "big"), None)
    assert smaller.stats["shards"] == 295 and smaller.stats["rows_per_shard"] == 34


def test_shard_sizing_caps_at_max_shards_and_the_map_limit():
    gen = parse_spec(tiny_spec_dict(**{"generation.shard_size": 4})).generation
    assert gen.rows_per_shard(100) == 4
    assert gen.rows_per_shard(100, map_limit=10) == 10
    assert gen.rows_per_shard(100, map_limit=None) == 4
    capped = gen.model_copy(update={"max_shards": 5})
    assert capped.rows_per_shard(100, map_limit=10) == 20 and capped.rows_per_shard(100, map_limit=2) == 50

"""The run-wide generation budget: shards share running totals under ``runs/{run}/budget/`` and stop
issuing requests once a limit is reached; prompts not generated are kept once with ``status=budget``,
removed by the filters with their own reason and left out of the gate's filtered shares."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.generation import META_KEY, generate_shard, read_budget
from synthcorpus.lineage import build_lineage
from synthcorpus.quality.filters import BUDGET_REASON, not_generated_rows
from synthcorpus.quality.release import run_metrics
from synthcorpus.spec import SpecError, load_spec, parse_spec
from synthcorpus.stages import filter_shard, plan_shards
from synthcorpus.stages.contract import RunContext
from synthcorpus.stages.generate import run_unit, work_unit
from synthcorpus.summary import format_summary
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine
from tests.stagekit import given

TOKENS = 80  # FakeEngine(words=80): completion tokens of every reply
CHECKPOINT_ROWS = 2
PROMPTS = 6


class CountingEngine(FakeEngine):
    """FakeEngine that can crash after a number of calls, or run something (another shard) before one."""

    def __init__(self, crash_after=None, before_call=None):
        super().__init__(words=TOKENS)
        self.crash_after, self.before_call = crash_after, before_call or {}

    def generate(self, prompt, params, seed):
        if self.crash_after is not None and len(self.calls) >= self.crash_after:
            raise RuntimeError("worker killed")
        if (hook := self.before_call.pop(len(self.calls), None)) is not None:
            hook()
        return super().generate(prompt, params, seed)


def budget_run(storage_uri, shards=3, overrides=None, **budget):
    """A run of ``tiny`` with ``shards`` plan shards of PROMPTS prompts each, every shard's config carrying
    the budget the way plan_shards embeds it; returns (run, work units)."""
    spec = parse_spec(tiny_spec_dict(**{f"generation.budget.{k}": v for k, v in budget.items()}, **(overrides or {})))
    run = RunContext.create(spec, "r")
    config = {"engine": "fake", "model": "fake-model", "max_tokens": 64, "temperature": 0.5, "top_p": 1.0,
              "repeat_penalty": 1.0, "seed": 0, "run_id": "r", "max_attempts": 2, "checkpoint_rows": CHECKPOINT_ROWS,
              "checkpoint_seconds": 3600, "quality": {"min_words": 5},
              "cost_per_million_tokens": spec.generation.cost_per_million_tokens,
              "budget": spec.generation.budget.model_dump(), "budget_dir": run.layout.budget_dir}
    units = []
    for s in range(shards):
        rows = [{"prompt_id": f"s{s}p{i}", "prompt": f"prompt {s} {i}", "seed": 100 + i, "language": "en"}
                for i in range(PROMPTS)]
        unit = work_unit(run.layout, s)
        storage.write_parquet(unit["input"], pa.Table.from_pylist(rows).replace_schema_metadata(
            {META_KEY: json.dumps(config).encode()}))
        units.append(unit)
    return run, units


def output(unit):
    return storage.read_parquet(unit["output"]).to_pylist()


def generated_tokens(rows):
    return sum(r["total_completion_tokens"] for r in rows)


def assert_each_prompt_once(unit, rows):
    plan = storage.read_parquet(unit["input"]).column("prompt_id").to_pylist()
    assert [r["prompt_id"] for r in rows] == plan, f"{unit['output']}: expected every prompt id once, in plan order"


def test_shards_one_after_another_stop_at_the_run_limit(storage_uri, monkeypatch):
    limit = 8 * TOKENS  # shard 0 generates all 6 prompts, shard 1 two more, shard 2 nothing
    run, units = budget_run(storage_uri, max_completion_tokens=limit)
    listings = []
    real_list = storage.list_files
    monkeypatch.setattr(storage, "list_files", lambda uri: listings.append(uri) or real_list(uri))
    engines = [CountingEngine() for _ in units]
    stats = [run_unit(u, engine=e)["stats"] for u, e in zip(units, engines)]
    outs = [output(u) for u in units]
    for unit, rows in zip(units, outs):
        assert_each_prompt_once(unit, rows)

    total = sum(generated_tokens(rows) for rows in outs)
    assert limit <= total <= limit + CHECKPOINT_ROWS * TOKENS
    assert [len(e.calls) for e in engines] == [6, 2, 0]  # the last shard never sent a request
    assert [s["stopped_by_budget"] for s in stats] == [False, True, True]
    assert [s["not_generated"] for s in stats] == [0, 4, 6]
    budget_rows = [r for rows in outs for r in rows if r["status"] == "budget"]
    assert len(budget_rows) == 10
    assert all(r["text"] == "" and r["finish_reason"] == "budget" and r["completion_tokens"] == 0 for r in budget_rows)
    assert stats[1]["budget"]["limits"]["max_completion_tokens"] == limit
    assert stats[1]["budget"]["reached"] == ["max_completion_tokens"]
    assert stats[1]["budget"]["used"]["completion_tokens"] == 8 * TOKENS  # run-wide, at the stop
    assert stats[2]["budget"]["used"]["completion_tokens"] == 8 * TOKENS
    # Every shard's entry holds its own totals; together, what the run spent.
    entries = [storage.read_json(u["budget_entry"]) for u in units]
    assert [e["completion_tokens"] for e in entries] == [6 * TOKENS, 2 * TOKENS, 0]
    assert all(e["done"] for e in entries) and [e["rows"] for e in entries] == [6, 2, 0]
    # Cheap: one listing of the budget folder at start and per checkpoint (shard 0: start + 3 parts;
    # shard 1: start + the part at the stop; shard 2: start), none at the final write.
    assert [u for u in listings if u.startswith(run.layout.budget_dir)] == [run.layout.budget_dir] * 7
    assert read_budget(run.layout.budget_dir)["completion_tokens"] == total


def test_interleaved_shard_sees_the_other_at_its_next_checkpoint(storage_uri):
    limit = 8 * TOKENS
    run, (first, second) = budget_run(storage_uri, shards=2, max_completion_tokens=limit)
    inner = CountingEngine()
    # Before its 3rd request (its first part, 2 rows, is committed), shard 0 pauses while shard 1 runs.
    outer = CountingEngine(before_call={2: lambda: run_unit(second, engine=inner)})
    stats0 = run_unit(first, engine=outer)["stats"]
    stats1 = storage.read_json(second["marker"])["stats"]
    rows0, rows1 = output(first), output(second)
    assert_each_prompt_once(first, rows0)
    assert_each_prompt_once(second, rows1)
    # Shard 1 saw shard 0's 2 rows and stopped at the limit; shard 0 learnt of shard 1 at its next
    # checkpoint: at most one checkpoint over the limit.
    assert len(inner.calls) == 6 and not stats1["stopped_by_budget"]
    assert len(outer.calls) == 4 and stats0["stopped_by_budget"] and stats0["not_generated"] == 2
    total = generated_tokens(rows0) + generated_tokens(rows1)
    assert limit <= total <= limit + CHECKPOINT_ROWS * TOKENS
    assert stats0["budget"]["used"]["completion_tokens"] == total


def test_resumed_shard_keeps_its_rows_and_generates_nothing_once_spent(storage_uri):
    limit = 7 * TOKENS
    run, (first, second) = budget_run(storage_uri, shards=2, max_completion_tokens=limit)
    with pytest.raises(RuntimeError, match="worker killed"):
        run_unit(first, engine=CountingEngine(crash_after=3))  # rows 0-1 checkpointed, row 2 lost
    assert storage.read_json(first["budget_entry"])["completion_tokens"] == 2 * TOKENS
    stats1 = run_unit(second, engine=(engine1 := CountingEngine()))["stats"]
    assert len(engine1.calls) == 5 and stats1["not_generated"] == 1  # 2 + 5 rows reach the limit

    resumed = CountingEngine()
    stats0 = run_unit(first, engine=resumed)["stats"]
    assert resumed.calls == []  # the budget was spent before its first request
    rows = output(first)
    assert_each_prompt_once(first, rows)
    assert [r["status"] for r in rows] == ["ok", "ok"] + ["budget"] * 4  # checkpointed rows are kept
    assert stats0["resumed_rows"] == 2 and stats0["stopped_by_budget"] and stats0["not_generated"] == 4
    assert stats0["budget"]["spent"]["completion_tokens"] == 2 * TOKENS  # the earlier attempt's, carried over
    assert stats0["budget"]["used"]["completion_tokens"] == limit


def test_rows_waiting_for_a_retry_keep_what_they_spent(tmp_path):
    """A row that failed validation and waits for its next attempt when the budget stops the shard is
    a budget row that still accounts for its tokens."""
    bad = FakeEngine(words=2)  # "Too short" replies: every row fails validation (min_words 5)
    cfg = {"engine": "fake", "model": "fake-model", "max_tokens": 64, "temperature": 0.5, "top_p": 1.0,
           "repeat_penalty": 1.0, "seed": 0, "run_id": "r", "max_attempts": 3, "checkpoint_rows": 100,
           "checkpoint_seconds": 3600, "quality": {"min_words": 5}}
    uri = (tmp_path / "plan.parquet").as_uri()
    storage.write_parquet(uri, pa.Table.from_pylist([{"prompt_id": f"p{i}", "prompt": f"x {i}", "seed": i} for i in range(3)])
                          .replace_schema_metadata({META_KEY: json.dumps(cfg).encode()}))
    stats = generate_shard(uri, (tmp_path / "out.parquet").as_uri(), (tmp_path / "parts").as_uri(), engine=bad,
                           budget={"max_completion_tokens": 5})
    rows = storage.read_parquet((tmp_path / "out.parquet").as_uri()).to_pylist()
    assert len(bad.calls) == 3 and stats["not_generated"] == 3  # 3 x 2 tokens >= 5: no second attempts
    assert [r["attempt_reasons"] for r in rows] == [["too_short"]] * 3
    assert [r["total_completion_tokens"] for r in rows] == [2, 2, 2] and stats["completion_tokens"] == 6


def test_cost_limit_with_token_prices(storage_uri):
    # a row: 3 prompt + 80 completion tokens = $0.083
    run, (unit,) = budget_run(storage_uri, shards=1, overrides={"generation.cost_per_million_tokens": 1000.0},
                              max_cost_usd=0.3)
    stats = run_unit(unit, engine=(engine := CountingEngine()))["stats"]
    assert len(engine.calls) == 4 and stats["not_generated"] == 2  # 4 rows: $0.332 >= $0.30
    assert stats["budget"]["reached"] == ["max_cost_usd"]
    tokens = stats["prompt_tokens"] + stats["completion_tokens"]
    assert tokens == 4 * (3 + TOKENS)
    assert stats["cost_usd"] == pytest.approx(tokens * 1000 / 1e6, abs=1e-4)  # shard_stats: the same formula
    assert stats["budget"]["spent"]["cost_usd"] == pytest.approx(stats["cost_usd"], abs=1e-4)


def test_budget_rows_are_removed_but_not_counted_as_filtered(storage_uri):
    run, units = budget_run(storage_uri, max_completion_tokens=8 * TOKENS)
    gen_stats = [run_unit(u, engine=CountingEngine())["stats"] for u in units]
    filtered = [filter_shard.run(run, i) for i in range(len(units))]
    removed = storage.read_parquet(filtered[1].outputs["removed"]).to_pylist()
    assert [r["filter_reason"] for r in removed] == [BUDGET_REASON] * 4
    assert [not_generated_rows(f.stats) for f in filtered] == [0, 4, 6]
    assert sum(f.stats["kept"] for f in filtered) == 8

    stage_stats = {"filter_shard": [f.stats for f in filtered], "dedup": {"removed": 0}, "near_dedup": {"removed": 0},
                   "decontaminate": {"removed": 0}}
    profiles = [{"rows": 8, "counts": {}, "n_words": {"80": 8}, "openings": {}}]
    metrics, _ = run_metrics(run.spec, stage_stats, [], profiles)
    assert metrics["generated"] == 8 and metrics["not_generated"] == 10
    assert metrics["filtered_share"] == 0.0  # every generated row passed: the 10 never generated are no loss
    assert all(v == 0 for k, v in metrics.items() if k.startswith("filtered_share_"))

    lineage = build_lineage(run.spec, run.run_id, {"generate": [{"stats": s} for s in gen_stats],
                                                    "filter_shard": [{"stats": f.stats} for f in filtered]}, None, None)
    budget = lineage["budget"]
    assert budget["stopped_by_budget"] is True and budget["not_generated"] == 10
    assert budget["limits"] == {"max_completion_tokens": 8 * TOKENS, "max_cost_usd": None, "max_gpu_hours": None}
    assert budget["used"]["completion_tokens"] == 8 * TOKENS and budget["reached"] == ["max_completion_tokens"]
    assert lineage["counts"]["generated"] == 8 and lineage["counts"]["not_generated"] == 10
    summary = format_summary(lineage, None)
    (line,) = [x for x in summary.splitlines() if x.startswith("budget")]
    assert "stopped by budget: 10 prompts not generated" in line and "max_completion_tokens" in line
    assert "filters     pass 8/8 (100.0%)" in summary


def test_without_limits_nothing_stops_and_the_summary_says_unlimited(storage_uri):
    run, units = budget_run(storage_uri, shards=2)
    stats = [run_unit(u, engine=CountingEngine())["stats"] for u in units]
    assert [s["not_generated"] for s in stats] == [0, 0] and not any(s["stopped_by_budget"] for s in stats)
    assert read_budget(run.layout.budget_dir)["completion_tokens"] == 2 * PROMPTS * TOKENS  # totals still kept
    lineage = build_lineage(run.spec, run.run_id, {"generate": [{"stats": s} for s in stats]}, None, None)
    assert lineage["budget"]["stopped_by_budget"] is False
    assert "budget      unlimited; used 960 completion tokens" in format_summary(lineage, None)


def test_plan_shards_embed_the_budget_and_its_folder(storage_uri):
    spec = parse_spec(tiny_spec_dict(documents=4, **{"generation.budget.max_completion_tokens": 1000}))
    run = RunContext.create(spec, "r")
    prompts = run.layout.output("prompts", "prompts")
    storage.write_parquet(prompts, pa.table({"prompt_id": [f"p{i}" for i in range(4)], "prompt": ["x"] * 4}))
    given(run, "prompts", {"prompts": prompts})
    unit = plan_shards.run(run, None).outputs["shards"][0]
    cfg = json.loads(storage.read_parquet(unit["input"]).schema.metadata[META_KEY])
    assert cfg["budget"] == {"max_completion_tokens": 1000, "max_cost_usd": None, "max_gpu_hours": None}
    assert cfg["budget_dir"] == run.layout.budget_dir
    assert unit["budget_entry"] == run.layout.budget_entry("generate", 0)


@pytest.mark.parametrize("overrides,field,expected", [
    ({"generation.budget.max_completion_tokens": -5}, "generation.budget.max_completion_tokens", "greater than 0"),
    ({"generation.budget.max_completion_tokens": 0}, "generation.budget.max_completion_tokens", "greater than 0"),
    ({"generation.budget.max_cost_usd": -1.0}, "generation.budget.max_cost_usd", "greater than 0"),
    ({"generation.budget.max_gpu_hours": -0.5}, "generation.budget.max_gpu_hours", "greater than 0"),
    ({"generation.budget.max_tokens": 5}, "generation.budget.max_tokens", "unknown field"),
    ({"generation.cost_per_million_tokens": -1}, "generation.cost_per_million_tokens", "greater than or equal to 0"),
    ({"generation.budget.max_cost_usd": 10.0}, "generation",
     "budget.max_cost_usd: expected cost_per_gpu_hour or cost_per_million_tokens > 0"),
    ({"generation.budget.max_gpu_hours": 2.0}, "generation",
     "budget.max_gpu_hours: expected runner 'kubernetes' with kubernetes.gpus_per_pod > 0"),
])
def test_bad_budget_names_the_field(tmp_path, overrides, field, expected):
    path = write_spec(tmp_path, tiny_spec_dict(**overrides), "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert any(p.field == field and expected in p.expected and p.file == str(path) for p in problems), problems


def test_good_budget_parses():
    gen = parse_spec(tiny_spec_dict(**{"generation.budget.max_cost_usd": 5.0, "generation.cost_per_million_tokens": 0.2,
                                       "generation.budget.max_completion_tokens": 10_000})).generation
    assert gen.budget.max_cost_usd == 5.0 and gen.budget.max_completion_tokens == 10_000 and gen.budget.limited
    assert not parse_spec(tiny_spec_dict()).generation.budget.limited

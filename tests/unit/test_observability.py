"""The StatsD metrics each stage's marker gives (synthcorpus.observability), from a real in-process run
(fake engine): totals equal lineage.json's counts, names are valid StatsD/Airflow names, and every name
maps to a Prometheus metric through include/statsd/mapping.yml. Sending them through Airflow's stats
client to a UDP receiver is tested end to end in tests/e2e/test_airflow_dags_test.py."""

from __future__ import annotations

import re

import yaml

from synthcorpus import storage
from synthcorpus.observability import gate_failed, metric_name, stage_metrics
from synthcorpus.stages import TABLE
from synthcorpus.stages.contract import RunContext, results
from synthcorpus.stages.runner import run_pipeline
from synthcorpus.spec import load_spec
from tests.conftest import INCLUDE, tiny_spec_dict, write_spec
from tests.fakes import FakeEngine

AIRFLOW_NAME = re.compile(r"[A-Za-z0-9_.-]{1,250}")


def _glob(pattern: str) -> re.Pattern:
    """statsd_exporter's glob matching: `*` is one dot-free component."""
    return re.compile("^" + r"\.".join("([^.]+)" if p == "*" else re.escape(p) for p in pattern.split(".")) + "$")


def mapped(name: str) -> str | None:
    """The Prometheus metric name the shipped mapping gives a StatsD name (first matching rule), or None."""
    for rule in yaml.safe_load((INCLUDE / "statsd" / "mapping.yml").read_text())["mappings"]:
        m = _glob(rule["match"]).match(name)
        if m:
            out = rule["name"]
            for i, g in enumerate(m.groups(), 1):
                out = out.replace(f"${{{i}}}", g).replace(f"${i}", g)
            return out
    return None


def test_metrics_of_a_run_add_up_to_its_lineage(tmp_path, storage_uri):
    path = write_spec(tmp_path, tiny_spec_dict(documents=8, **{"generation.shard_size": 3}))
    run_pipeline(str(path), "m1", {}, engine=FakeEngine(), until="publish")
    run = RunContext.create(load_spec(path), "m1")
    metrics = [m for stage in TABLE for marker in results(run, stage.name, required=False)
               for m in stage_metrics("tiny", stage.name, marker)]
    total = lambda n: sum(v for kind, name, v in metrics if name == f"synthcorpus.tiny.{n}")  # noqa: E731
    counts = storage.read_json(run.layout.lineage)["counts"]
    assert total("generate.completion_tokens") == counts["completion_tokens"] > 0
    assert total("generate.documents") == counts["generated"] == 8
    assert total("filter_shard.documents") == counts["after_filters"]
    assert total("dedup.documents") == counts["after_dedup"]
    assert total("gate.passed") == 1 and total("publish.rows") == 8 and total("top_up.documents") == 8
    assert {kind for kind, name, _ in metrics if name == "synthcorpus.tiny.generate.cost_usd"} == {"delta"}
    for kind, name, value in metrics:
        assert AIRFLOW_NAME.fullmatch("airflow." + name), name
        assert mapped("airflow." + name), name


def test_removed_documents_are_counted_per_reason_and_names_stay_valid():
    marker = {"stats": {"kept": 3, "reasons": {"too_short": 2, "wrong_language": 1, "refusal": 0}}}
    assert stage_metrics("de mo!", "filter_shard", marker) == [
        ("incr", "synthcorpus.de_mo.filter_shard.documents", 3),
        ("incr", "synthcorpus.de_mo.filter_shard.removed.too_short", 2),
        ("incr", "synthcorpus.de_mo.filter_shard.removed.wrong_language", 1)]
    assert mapped("airflow.synthcorpus.demo.filter_shard.removed.too_short") == "synthcorpus_filter_removed"
    assert mapped("airflow.synthcorpus.demo.gate.failed") == "synthcorpus_gate_failed"
    assert gate_failed("demo") == [("incr", "synthcorpus.demo.gate.failed", 1)]
    assert len(metric_name("x" * 300, "generate", "documents")) == 250


def test_release_decisions_are_counted_with_their_wait():
    from synthcorpus.observability import approval_metrics

    assert approval_metrics("demo", {"status": "approved", "wait_s": 12.5}) == [
        ("incr", "synthcorpus.demo.approval.approved", 1), ("gauge", "synthcorpus.demo.approval.wait_s", 12.5)]
    assert approval_metrics("demo", {"status": "timed_out", "wait_s": None}) == [
        ("incr", "synthcorpus.demo.approval.timed_out", 1)]
    assert mapped("airflow.synthcorpus.demo.approval.wait_s") == "synthcorpus_approval_wait_s"
    assert mapped("airflow.synthcorpus.demo.approval.rejected") == "synthcorpus_approval_rejected"

"""The decontamination stage in the pipeline: benchmark near-copies and planted canaries are removed,
counted per benchmark, and a missed canary fails the gate."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from synthcorpus import storage
from synthcorpus.quality.gate import GateFailed
from synthcorpus.spec import load_spec
from synthcorpus.stages.contract import RunContext
from tests.conftest import INCLUDE, tiny_spec_dict, write_spec
from tests.fakes import FakeEngine
from tests.unit.test_pipeline import run_all

DECONTAM = {
    "references": [{"path": str(INCLUDE / "seeds" / "demo_benchmark.jsonl"), "text_columns": ["question", "choices"],
                    "id_column": "id", "benchmark_column": "benchmark"}],
    "canaries": str(INCLUDE / "seeds" / "demo_canaries.jsonl"),
}


def test_canaries_are_caught_and_never_published(tmp_path, storage_uri):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=8, **{"quality.decontamination": DECONTAM})))
    version = run_all(spec_path, "d1", FakeEngine())["outputs"]["version"].removeprefix("file://")
    run = RunContext.create(load_spec(spec_path), "d1")
    stats = storage.read_json(run.layout.marker("decontaminate"))["stats"]
    planted = [json.loads(line) for line in (INCLUDE / "seeds" / "demo_canaries.jsonl").read_text().splitlines()]
    assert stats["canaries_planted"] == stats["canaries_caught"] == len(planted) == 6
    assert stats["canaries_missed"] == []
    assert stats["benchmarks"]["demo_arc"]["unique_items_hit"] == 2
    assert stats["benchmarks"]["demo_mmlu"]["unique_items_hit"] == 1
    assert stats["input"] == 8 and stats["removed"] == 0  # the generated documents themselves are clean
    published = pq.read_table(f"{version}/data").to_pylist()
    assert len(published) == 8 and not any(r["prompt_id"].startswith("canary-") for r in published)
    lineage = json.load(open(f"{version}/lineage.json"))
    assert lineage["decontamination"]["canaries_caught"] == 6


def test_a_missed_canary_fails_the_gate(tmp_path, storage_uri):
    canaries = tmp_path / "canaries.jsonl"
    canaries.write_text((INCLUDE / "seeds" / "demo_canaries.jsonl").read_text())
    strict = {**DECONTAM, "canaries": str(canaries), "threshold": 0.95}  # edited copies fall below 0.95
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=4, **{"quality.decontamination": strict})))
    with pytest.raises(GateFailed, match="canaries_missed"):
        run_all(spec_path, "d2", FakeEngine())
    run = RunContext.create(load_spec(spec_path), "d2")
    assert not storage.exists(run.layout.version_uri())


def test_bad_canary_files_name_file_field_and_line(tmp_path):
    from synthcorpus.quality.decontam import DecontamError, read_canaries

    bad = tmp_path / "c.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\n{"id": 2}\n')
    with pytest.raises(DecontamError, match=r"c.jsonl: quality.decontamination.canaries: line 2: expected an object with 'id' and 'text'"):
        read_canaries(bad.as_uri())
    bad.write_text('{"id": 1, "text": "ok"}\nnot json\n')
    with pytest.raises(DecontamError, match=r"quality.decontamination.canaries.path: line 2: expected one JSON object per line"):
        read_canaries(bad.as_uri())
    with pytest.raises(DecontamError, match="expected an existing JSONL file"):
        read_canaries((tmp_path / "missing.jsonl").as_uri())

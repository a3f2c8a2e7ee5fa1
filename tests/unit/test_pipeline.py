"""The stages chained in-process with a fake engine: publish layout, gate failure, idempotence."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest
import yaml

from synthcorpus import storage
from synthcorpus.publish import PublishError, verify_version
from synthcorpus.quality.gate import GateFailed
from synthcorpus.spec import load_spec
from synthcorpus.stages import publish
from synthcorpus.stages.contract import RunContext, SpecChangedError, execute
from synthcorpus.stages.runner import run_pipeline
from synthcorpus.summary import run_summary
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine


def run_all(spec_path, run_id, engine):
    """The in-process runner over the stage table, with the engine injected; publish's marker."""
    return run_pipeline(spec_path, run_id, engine=engine, until="publish")["publish"]


@pytest.fixture
def spec_path(tmp_path, storage_uri):
    return str(write_spec(tmp_path, tiny_spec_dict(documents=10, **{"publish.rows_per_file": 4})))


def test_publish_layout_manifest_card_and_lineage(spec_path):
    engine = FakeEngine()
    result = run_all(spec_path, "manual__2026-01-01T00:00:00+00:00", engine)
    run = RunContext.create(load_spec(spec_path), "manual__2026-01-01T00:00:00+00:00")
    assert run.run_id == "manual__2026-01-01T00-00-00-00-00"
    version = result["outputs"]["version"]
    manifest = verify_version(version)  # every sha256 re-checked
    assert manifest["rows"] == 10
    assert [f["path"] for f in manifest["files"]] == [f"data/train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert [f["rows"] for f in manifest["files"]] == [4, 4, 2]
    local = version.removeprefix("file://")
    table = pq.read_table(f"{local}/data")
    assert table.num_rows == 10
    for col in ("text", "run_id", "prompt_id", "topic", "format", "audience", "language", "model", "template", "template_version"):
        assert col in table.column_names, col
    assert set(table.column("run_id").to_pylist()) == {run.run_id}
    card = (open(f"{local}/README.md").read())
    header = yaml.safe_load(card.split("---")[1])
    assert header["configs"][0]["data_files"][0]["path"] == "data/train-*.parquet"
    assert header["language"] == ["en"]
    lineage = json.load(open(f"{local}/lineage.json"))
    assert lineage["counts"]["generated"] == 10 and lineage["counts"]["after_dedup"] == 10
    assert lineage["spec"]["sha256"] == load_spec(spec_path).spec_hash()
    assert lineage["gate"]["passed"] is True
    assert set(lineage["templates"]) == {"en/textbook", "en/blog_post", "en/story"}
    assert lineage["model"]["model"] == "fake-model"
    latest = storage.read_json(run.layout.latest)
    assert latest["version"] == run.version and latest["rows"] == 10
    assert "PASSED" in run_summary(run.spec, run.run_id)


def test_hf_datasets_reads_the_published_version(spec_path):
    from datasets import load_dataset

    version = run_all(spec_path, "r1", FakeEngine())["outputs"]["version"].removeprefix("file://")
    ds = load_dataset("parquet", data_files=f"{version}/data/train-*.parquet", split="train")
    assert ds.num_rows == 10
    assert {"text", "prompt_id", "format", "audience"} <= set(ds.column_names)


def test_gate_failure_publishes_nothing_and_keeps_latest(spec_path, tmp_path):
    run_all(spec_path, "good", FakeEngine())
    spec = load_spec(spec_path)
    good = RunContext.create(spec, "good")
    latest_before = storage.read_json(good.layout.latest)
    # Every generated text identical: exact dedup leaves 1 document, below min_documents=5.
    strict = write_spec(tmp_path, tiny_spec_dict(documents=10, **{"quality.min_documents": 5}), "strict.yaml")
    with pytest.raises(GateFailed) as info:
        run_all(str(strict), "bad", FakeEngine(same_text=True))
    assert "documents" in str(info.value) and ">= 5" in str(info.value)
    bad = RunContext.create(spec, "bad")
    assert not storage.exists(bad.layout.version_uri())  # not a single file under the version
    assert storage.read_json(bad.layout.latest) == latest_before
    report = storage.read_json(bad.layout.output("quality_gate", "report"))
    assert report["passed"] is False and report["metrics"]["documents"] == 1
    assert storage.exists(storage.join(bad.layout.output("quality_gate", "data_docs"), "index.html"))
    assert storage.read_json(bad.layout.lineage)["gate"]["passed"] is False
    with pytest.raises(PublishError, match="quality gate failed; nothing is published"):
        publish.run(bad)
    assert "FAILED" in run_summary(spec, "bad")


def test_rerun_same_run_id_skips_committed_shards_and_new_run_moves_latest(spec_path):
    engine = FakeEngine()
    first = run_all(spec_path, "r1", engine)
    assert len(engine.calls) == 10
    again = run_all(spec_path, "r1", engine)
    assert len(engine.calls) == 10  # nothing regenerated
    assert again["outputs"]["version"] == first["outputs"]["version"]
    run_all(spec_path, "r2", engine)
    spec = load_spec(spec_path)
    assert storage.read_json(RunContext.create(spec, "x").layout.latest)["version"] == "r2"
    # Re-running the older run does not move latest back.
    run_all(spec_path, "r1", engine)
    assert storage.read_json(RunContext.create(spec, "x").layout.latest)["version"] == "r2"
    # Nor does an attempt of r1 that stopped after its manifest (publish's marker not committed yet).
    storage.delete(RunContext.create(spec, "r1").layout.marker("publish"))
    assert run_all(spec_path, "r1", engine)["stats"]["latest_kept"] == "r2"
    assert storage.read_json(RunContext.create(spec, "x").layout.latest)["version"] == "r2"


def test_publish_resumed_after_its_manifest_switches_latest_unless_a_newer_version_holds_it(spec_path):
    spec = load_spec(spec_path)
    run_all(spec_path, "r1", FakeEngine())
    r1 = RunContext.create(spec, "r1")
    manifest_r1 = storage.read_json(r1.layout.manifest)
    run_all(spec_path, "r2", FakeEngine())
    r2 = RunContext.create(spec, "r2")
    # r2 stopped between its manifest and latest.json: latest still points at the older r1.
    manifest_r2 = storage.read_json(r2.layout.manifest)
    assert manifest_r2["created_at"] >= manifest_r1["created_at"]
    storage.write_json(r1.layout.manifest, {**manifest_r1, "created_at": "2000-01-01T00:00:00+00:00"})
    storage.write_json(r1.layout.latest, {"version": "r1", "manifest": r1.layout.manifest, "uri": r1.layout.version_uri(),
                                          "rows": manifest_r1["rows"]})
    storage.delete(r2.layout.marker("publish"))
    resumed = run_all(spec_path, "r2", FakeEngine())
    assert "latest_kept" not in resumed["stats"]
    assert storage.read_json(r2.layout.latest)["version"] == "r2"
    # A run whose first attempt stopped before latest.json existed at all.
    storage.delete(r2.layout.latest)
    storage.delete(r2.layout.marker("publish"))
    run_all(spec_path, "r2", FakeEngine())
    assert storage.read_json(r2.layout.latest)["version"] == "r2"


def test_partial_shard_without_marker_is_regenerated(spec_path):
    engine = FakeEngine()
    run_all(spec_path, "r1", engine)
    run = RunContext.create(load_spec(spec_path), "r1")
    storage.delete(run.layout.marker("generate", 0))  # as if the task died between data and marker
    execute(RunContext.create(run.spec, "r1", engine=engine), "generate", 0)
    assert len(engine.calls) == 14  # shard 0 (4 rows) generated again, others untouched


def test_a_generation_change_after_generation_is_refused(spec_path):
    # Before generation, a changed spec re-plans (stage fingerprints); once shards are generated (paid for),
    # changing what they used needs a new run id.
    run_pipeline(spec_path, "r1", until="generate", engine=FakeEngine())
    data = yaml.safe_load(open(spec_path))
    data["generation"]["temperature"] = 0.1
    open(spec_path, "w").write(yaml.safe_dump(data))
    with pytest.raises(SpecChangedError, match="changed since run r1 started.*generation"):
        run_pipeline(spec_path, "r1", until="topics")


def test_checksums_detect_tampering(spec_path):
    version = run_all(spec_path, "r1", FakeEngine())["outputs"]["version"]
    path = version.removeprefix("file://") + "/data/train-00000-of-00003.parquet"
    data = open(path, "rb").read()
    assert hashlib.sha256(data).hexdigest() == storage.read_json(version + "/manifest.json")["files"][0]["sha256"]
    open(path, "wb").write(data[:-1] + b"\0")
    with pytest.raises(PublishError, match="sha256 does not match"):
        verify_version(version)


def test_object_store_path_without_local_files(tmp_path, monkeypatch):
    """The non-local code path (single PUT per object, as on s3://) through fsspec's memory filesystem."""
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", "memory://synthcorpus-test")
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6)))
    version = run_all(spec_path, "mem1", FakeEngine())["outputs"]["version"]
    assert version.startswith("memory://synthcorpus-test/tiny/versions/mem1")
    manifest = verify_version(version)
    assert manifest["rows"] == 6
    run = RunContext.create(load_spec(spec_path), "mem1")
    assert storage.read_json(run.layout.latest)["version"] == "mem1"
    assert storage.exists(run.layout.marker("generate", 0)) and storage.exists(run.layout.shard("generate", 0))


def test_gate_override_publishes_with_an_audited_reason(tmp_path, storage_uri):
    strict = str(write_spec(tmp_path, tiny_spec_dict(documents=4, **{"quality.min_documents": 50}), "strict.yaml"))
    with pytest.raises(GateFailed):
        run_all(strict, "r1", FakeEngine())
    spec = load_spec(strict)
    run = RunContext.create(spec, "r1")
    assert storage.read_json(run.layout.quarantine)["passed"] is False
    assert not storage.exists(run.layout.latest)

    # The same failing run, its gate re-run with an override reason: published, the reason on record.
    published = run_pipeline(strict, "r1", {"override_gate_reason": "release for ablation study, ticket DATA-42"},
                             engine=FakeEngine(), until="publish")["publish"]
    version = published["outputs"]["version"].removeprefix("file://")
    lineage = json.load(open(f"{version}/lineage.json"))
    assert lineage["gate"]["passed"] is False
    assert lineage["gate"]["override"]["reason"] == "release for ablation study, ticket DATA-42"
    assert lineage["gate"]["override"]["failed_expectations"] == ["expect_column_values_to_be_between (documents)"]
    assert "published by override: release for ablation study" in open(f"{version}/README.md").read()
    assert storage.read_json(run.layout.latest)["version"] == "r1"


def test_user_expectations_from_the_spec_gate_the_release(tmp_path, storage_uri):
    ok = {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "format", "value_set": ["textbook", "blog_post", "story"]}}
    bad = {"batch": "documents", "type": "expect_column_values_to_match_regex", "kwargs": {"column": "text", "regex": "^Once upon"}}
    good_spec = str(write_spec(tmp_path, tiny_spec_dict(documents=4, **{"quality.expectations": [ok]}), "good.yaml"))
    run_all(good_spec, "u1", FakeEngine())
    report = storage.read_json(RunContext.create(load_spec(good_spec), "u1").layout.output("quality_gate", "report"))
    assert any(e["expectation"] == "expect_column_values_to_be_in_set" and e["success"] for e in report["expectations"])
    bad_spec = str(write_spec(tmp_path, tiny_spec_dict(name="tiny2", documents=4, **{"quality.expectations": [ok, bad]}), "bad.yaml"))
    with pytest.raises(GateFailed, match="expect_column_values_to_match_regex"):
        run_all(bad_spec, "u2", FakeEngine())

"""Refreshes in-process (fake engine): version N+1 = version N + new documents, dedup against everything
published, retries and retirement, top-up to the requested count, full rebuilds, and bad history."""

from __future__ import annotations

import json

import pytest
import yaml

from synthcorpus import storage
from synthcorpus.engines import Completion
from synthcorpus.publish import ManifestError, PublishError, verify_version
from synthcorpus.quality.published_index import PublishedIndexError
from synthcorpus.spec import load_spec
from synthcorpus.stages.contract import RunContext
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine


class ScriptedEngine(FakeEngine):
    """FakeEngine, except: prompts in ``short_prompts`` always get a too-short reply (they fail validation
    every attempt); the i-th call returns ``replies[i]`` when given."""

    def __init__(self, replies: dict[int, str] | None = None, short_prompts: set[str] | None = None):
        super().__init__()
        self.short_prompts, self.replies = short_prompts or set(), replies or {}

    def generate(self, prompt, params, seed):
        n = len(self.calls)
        done = super().generate(prompt, params, seed)
        if n in self.replies:
            return Completion(self.replies[n], "stop", done.prompt_tokens, len(self.replies[n].split()), 0.001)
        if prompt in self.short_prompts:
            return Completion("Too short.", "stop", done.prompt_tokens, 2, 0.001)
        return done


@pytest.fixture
def spec_path(tmp_path, storage_uri):
    return str(write_spec(tmp_path, tiny_spec_dict(documents=8)))


def refresh(spec_path, run_id, engine, **params):
    return run_pipeline(spec_path, run_id, params, engine=engine, until="publish")


def manifest_of(out):
    return storage.read_json(out["publish"]["outputs"]["manifest"])


def published(version_uri):
    """Every row of a version, read from its own manifest (its files and the earlier ones it references)."""
    from synthcorpus.publish import file_uri

    manifest = verify_version(version_uri)
    versions = version_uri.rstrip("/").rsplit("/", 1)[0]
    return [r for f in manifest["files"] for r in storage.read_parquet(file_uri(versions, manifest, f)).to_pylist()]


def test_a_refresh_publishes_the_last_version_plus_only_new_documents(spec_path):
    first = refresh(spec_path, "v1", FakeEngine())
    m1 = manifest_of(first)
    assert (m1["rows"], m1["new_rows"], m1["base_version"]) == (8, 8, None)
    v1_rows = published(first["publish"]["outputs"]["version"])

    engine = FakeEngine()
    second = refresh(spec_path, "v2", engine)
    m2 = manifest_of(second)
    assert (m2["rows"], m2["new_rows"], m2["base_version"]) == (16, 8, "v1")
    # Earlier data files are referenced where they are, with their checksums, not copied.
    assert m2["files"][: len(m1["files"])] == [{**f, "version": "v1"} for f in m1["files"]]
    assert all(f["version"] == "v2" for f in m2["files"][len(m1["files"]):])
    v2_rows = published(second["publish"]["outputs"]["version"])  # every sha256 re-checked
    assert v2_rows[:8] == v1_rows
    old_ids, new_ids = {r["prompt_id"] for r in v1_rows}, {r["prompt_id"] for r in v2_rows[8:]}
    assert len(new_ids) == 8 and not old_ids & new_ids
    assert not {p for p in engine.calls} & {r["prompt"] for r in v1_rows}  # no published prompt generated again
    assert published(first["publish"]["outputs"]["version"]) == v1_rows  # v1 stays readable on its own
    # The dataset card's data_files reach the earlier version's files from this version's folder.
    card = storage.read_bytes(second["publish"]["outputs"]["version"] + "/README.md").decode()
    files = yaml.safe_load(card.split("---")[1])["configs"][0]["data_files"][0]["path"]
    assert files[0].startswith("../v1/data/") and files[-1].startswith("data/")
    assert second["publish"]["stats"]["new_rows"] == 8 and second["history"]["stats"]["base_version"] == "v1"
    assert m2["index"]["segments"] == ["v1", "v2"]


def test_new_documents_that_copy_published_ones_are_removed_and_topped_up(spec_path):
    v1 = refresh(spec_path, "v1", FakeEngine())
    old = published(v1["publish"]["outputs"]["version"])
    words = old[0]["text"].split()
    near = " ".join(words[:-3] + ["glacier", "meadow", "harbor."])  # 3 of 80 words changed
    engine = ScriptedEngine(replies={0: old[1]["text"], 1: near})
    v2 = refresh(spec_path, "v2", engine)
    dedup, near_dedup, top_up = v2["dedup"]["stats"], v2["near_dedup"]["stats"], v2["top_up"]["stats"]
    assert dedup["removed_published"] == 1 and near_dedup["removed_published"] == 1
    removed = storage.read_parquet(v2["dedup"]["outputs"]["documents"][0].rsplit("/", 1)[0] + "/removed.parquet").to_pylist()
    assert [(r["filter_reason"], r["duplicate_of"]) for r in removed] == [("published_duplicate", old[1]["prompt_id"])]
    # Two rows lost to dedup; one top-up round brings the version back to the 8 requested.
    assert top_up["rounds"] == 1 and top_up["documents"] == 8 and top_up["shortfall"] == 0
    rows = published(v2["publish"]["outputs"]["version"])
    assert len(rows) == 16
    texts = [r["text"] for r in rows]
    assert len(set(texts)) == 16 and near not in texts
    ids = [r["prompt_id"] for r in rows]
    assert len(set(ids)) == 16  # every prompt id exactly once in the version


def test_failed_prompts_are_retried_then_retired_and_the_shortfall_is_explained(tmp_path, storage_uri):
    # No over-provisioning (one prompt per document, no fresh reserve): a failed prompt waits at the end of
    # the top-up reserve and is tried again, with a new seed, only when a run comes up short.
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6, **{
        "generation.max_attempts": 1, "refresh.max_overprovision": 1.0, "refresh.top_up_rounds": 1})))
    probe = run_pipeline(spec_path, "probe", until="prompts")["prompts"]  # nothing generated or published
    bad = storage.read_parquet(probe["outputs"]["prompts"]).to_pylist()[0]
    engine = ScriptedEngine(short_prompts={bad["prompt"]})
    v1 = refresh(spec_path, "r1", engine)
    assert v1["top_up"]["stats"]["shortfall"] == 1
    assert v1["top_up"]["stats"]["shortfall_reason"] == "the prompt reserve is used up (refresh.max_overprovision)"
    retry = storage.read_parquet(manifest_of(v1)["refresh"]["retry"]).to_pylist()
    assert [(r["prompt_id"], r["failures"]) for r in retry] == [(bad["prompt_id"], 1)]

    # v2: 6 fresh prompts, the first of which fails; the top-up round retries the failed v1 prompt (new
    # seed; it fails again: retired).
    engine.replies = {len(engine.calls): "Too short."}
    v2 = refresh(spec_path, "r2", engine)
    assert (v2["prompts"]["stats"]["prompts"], v2["prompts"]["stats"]["failed_to_retry"]) == (6, 1)
    assert engine.calls.count(bad["prompt"]) == 2
    retried = storage.read_parquet(v2["top_up"]["outputs"]["documents"][-1].replace(".parquet", "/generated.parquet")).to_pylist()
    assert [r["prompt_id"] for r in retried] == [bad["prompt_id"]] and retried[0]["seed"] != bad["seed"]
    retry = {r["prompt_id"]: r["failures"] for r in storage.read_parquet(manifest_of(v2)["refresh"]["retry"]).to_pylist()}
    assert retry[bad["prompt_id"]] == 2 and sorted(retry.values()) == [1, 2]
    v3 = refresh(spec_path, "r3", engine)
    assert engine.calls.count(bad["prompt"]) == 2  # retired: never generated again
    assert v3["prompts"]["stats"]["retired"] == 1
    assert manifest_of(v3)["refresh"]["retired_prompts"] == 1
    ids = [r["prompt_id"] for r in published(v3["publish"]["outputs"]["version"])]
    assert len(ids) == len(set(ids)) == manifest_of(v3)["rows"] and bad["prompt_id"] not in ids


def test_surplus_prompts_come_back_first_with_their_seed(tmp_path, storage_uri):
    # Over-provisioned (yield 0.75: 11 prompts for 8 documents, all pass): 3 surplus documents set aside; the
    # next refresh generates those prompts first, as they were, and they are published then.
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=8, **{"refresh.expected_yield": 0.75})))
    v1 = refresh(spec_path, "v1", FakeEngine())
    surplus = storage.read_parquet(v1["top_up"]["outputs"]["surplus"]).to_pylist()
    assert len(surplus) == 3 and v1["top_up"]["stats"]["documents"] == 8
    v2 = refresh(spec_path, "v2", FakeEngine())
    assert v2["prompts"]["stats"]["deferred"] == 3
    first = storage.read_parquet(v2["prompts"]["outputs"]["prompts"]).to_pylist()[:3]
    assert [(r["prompt_id"], r["seed"]) for r in first] == [(r["prompt_id"], r["seed"]) for r in surplus]
    new = published(v2["publish"]["outputs"]["version"])[8:]
    assert {r["prompt_id"] for r in surplus} <= {r["prompt_id"] for r in new}


def test_full_rebuild_starts_a_version_from_nothing(spec_path):
    refresh(spec_path, "v1", FakeEngine())
    engine = FakeEngine()
    rebuilt = refresh(spec_path, "v2", engine, full_rebuild=True)
    m = manifest_of(rebuilt)
    assert (m["rows"], m["base_version"], m["index"]["segments"]) == (8, None, ["v2"])
    assert all(f["version"] == "v2" for f in m["files"])
    v1 = published(storage.read_json(rebuilt["publish"]["outputs"]["latest"])["uri"].replace("/v2", "/v1"))
    assert {r["prompt_id"] for r in v1} == {r["prompt_id"] for r in published(rebuilt["publish"]["outputs"]["version"])}


def test_publish_refuses_when_latest_moved_since_the_run_started(spec_path):
    refresh(spec_path, "v1", FakeEngine())
    run_pipeline(spec_path, "slow", engine=FakeEngine(), until="quality_gate")  # built on v1
    refresh(spec_path, "fast", FakeEngine())  # also on v1: latest -> fast
    with pytest.raises(PublishError, match="expected the latest version to be v1.*found fast"):
        run_pipeline(spec_path, "slow", engine=FakeEngine(), until="publish")


@pytest.mark.parametrize("damage, error, names", [
    ("manifest_garbage", ManifestError, "manifest.json"),
    ("manifest_rows", ManifestError, "field 'rows'"),
    ("data_file_missing", ManifestError, "train-00000-of-00001.parquet"),
    ("index_file_missing", PublishedIndexError, "index/v1"),
])
def test_a_broken_history_fails_before_anything_is_generated(spec_path, damage, error, names):
    v1 = refresh(spec_path, "v1", FakeEngine())
    manifest_uri = v1["publish"]["outputs"]["manifest"]
    manifest = storage.read_json(manifest_uri)
    if damage == "manifest_garbage":
        storage.write_bytes(manifest_uri, b"{not json")
    elif damage == "manifest_rows":
        storage.write_json(manifest_uri, {**manifest, "rows": manifest["rows"] + 1})
    elif damage == "data_file_missing":
        storage.delete(v1["publish"]["outputs"]["version"] + "/" + manifest["files"][0]["path"])
    else:
        segment = RunContext.create(load_spec(spec_path), "v1").layout.index_segment("v1")
        victim = next(u for u in storage.list_files(segment) if u.endswith(".parquet") and "retry" not in u)
        storage.delete(victim)
    engine = FakeEngine()
    with pytest.raises(error, match=names):
        refresh(spec_path, "v2", engine)
    assert engine.calls == []
    assert json.dumps(storage.read_json(RunContext.create(load_spec(spec_path), "v1").layout.latest)).count("v1")


def test_new_seeds_yield_new_prompts_and_nothing_published_comes_back(tmp_path, storage_uri):
    from tests.conftest import INCLUDE

    outline = tmp_path / "outline.yaml"
    outline.write_text((INCLUDE / "seeds" / "demo_outline.yaml").read_text())
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=8, **{"seeds.outline": str(outline)})))
    v1 = refresh(spec_path, "v1", FakeEngine())
    data = yaml.safe_load(outline.read_text())
    data["subjects"][0]["units"].append({"title": "Coral reefs", "description": "Tiny animals called polyps build "
                                         "reefs of limestone that shelter a quarter of all sea life."})
    outline.write_text(yaml.safe_dump(data))
    v2 = refresh(spec_path, "v2", FakeEngine())
    # The plan changed (a new topic): scanned from its start, skipping whatever ids v1 published.
    assert v2["prompts"]["stats"]["prompt_plan"]["start"] == 0 and v1["prompts"]["stats"]["prompt_plan"]["cursor"] == 8
    old = published(v1["publish"]["outputs"]["version"])
    rows = published(v2["publish"]["outputs"]["version"])
    new = rows[len(old):]
    assert len(new) == 8 and not {r["prompt_id"] for r in old} & {r["prompt_id"] for r in new}
    assert "Coral reefs" in {r["topic"] for r in new}


def test_a_run_stopped_by_its_budget_publishes_what_it_has_and_says_so(tmp_path, storage_uri):
    # 8 documents in shards of 4; the fake engine writes 80 completion tokens per row; the limit is hit
    # within shard 0's first checkpoint (every 2 rows): shard 0 stops there, shard 1 never calls the engine.
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=8, **{
        "generation.budget": {"max_completion_tokens": 100}, "generation.checkpoint_rows": 2})))
    engine = FakeEngine()
    out = refresh(spec_path, "v1", engine)
    assert len(engine.calls) == 2
    top_up = out["top_up"]["stats"]
    assert (top_up["documents"], top_up["rounds"], top_up["shortfall_reason"]) == (2, 0, "stopped by budget (generation.budget)")
    rows = published(out["publish"]["outputs"]["version"])
    assert len(rows) == 2
    generated = [r for m in out["generate"] for r in storage.read_parquet(m["outputs"]["shard"]).to_pylist()]
    ids = [r["prompt_id"] for r in generated]
    assert len(ids) == len(set(ids)) == 8  # every prompt id exactly once: 2 generated, 6 with status budget
    assert sorted(r["status"] for r in generated) == ["budget"] * 6 + ["ok"] * 2
    card = storage.read_bytes(out["publish"]["outputs"]["version"] + "/README.md").decode()
    assert "stopped by budget (max_completion_tokens): 6 prompts not generated" in card
    lineage = storage.read_json(out["publish"]["outputs"]["version"] + "/lineage.json")
    assert lineage["budget"]["stopped_by_budget"] and lineage["counts"]["shortfall"] == 6
    # The prompts the budget left are not failures: the next refresh tries them first.
    retry = storage.read_parquet(manifest_of(out)["refresh"]["retry"]).to_pylist()
    assert sorted(r["failures"] for r in retry) == [0] * 6

"""Stage fingerprints: a re-run of the same run id re-runs exactly the stages a spec or file change
touches, and refuses changes that would redo generation or change a published version."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pytest
import yaml

from synthcorpus import storage
from synthcorpus.generation import META_KEY, _Validator
from synthcorpus.quality.filters import filter_batch, reason_names, refusal_phrases, reject_reason
from synthcorpus.quality.gate import GateFailed
from synthcorpus.spec import QualitySpec, load_spec
from synthcorpus.stages import STAGES, TABLE, contract, generate, plan_shards
from synthcorpus.stages.contract import RunContext, SpecChangedError, execute, fingerprint, read_marker
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import INCLUDE, tiny_spec_dict, write_spec
from tests.fakes import FakeEngine

VALIDATOR_FIELDS = {"min_words", "max_words", "drop_truncated", "refusal_phrases", "heuristics"}
NAMES = [s.name for s in TABLE]


def stages(first: str, last: str | None = None) -> set[str]:
    """The stages of the table from ``first`` to ``last`` (inclusive; default: to the end)."""
    return set(NAMES[NAMES.index(first):NAMES.index(last) + 1 if last else None])


def before(stage: str) -> set[str]:
    return set(NAMES[:NAMES.index(stage)])


@pytest.fixture
def decontam(tmp_path):
    """A decontamination section whose reference and canary files the test may edit."""
    refs, canaries = tmp_path / "benchmark.jsonl", tmp_path / "canaries.jsonl"
    refs.write_text((INCLUDE / "seeds" / "demo_benchmark.jsonl").read_text())
    canaries.write_text((INCLUDE / "seeds" / "demo_canaries.jsonl").read_text())
    return {"references": [{"path": str(refs), "text_columns": ["question", "choices"], "id_column": "id",
                            "benchmark_column": "benchmark"}],
            "canaries": str(canaries), "threshold": 0.5}


def spec_file(tmp_path, decontam=None, **overrides):
    extra = {"quality.decontamination": decontam} if decontam else {}
    return str(write_spec(tmp_path, tiny_spec_dict(documents=6, **extra, **overrides)))


def edit(spec_path: str, dotted: str, value) -> None:
    data = yaml.safe_load(open(spec_path))
    node = data
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    open(spec_path, "w").write(yaml.safe_dump(data, sort_keys=False))


def run_of(spec_path: str, run_id: str = "r1") -> RunContext:
    return RunContext.create(load_spec(spec_path), run_id)


def markers(run: RunContext) -> dict[tuple[str, int | None], bytes]:
    """Every committed marker of the run, as stored."""
    out = {}
    for stage in TABLE:
        source = read_marker(run.layout.marker(getattr(stage, "shards_from", "plan_shards"))) or {}
        for shard in (source.get("shards", []) if stage.mapped else [None]):
            uri = run.layout.marker(stage.name, shard)
            if storage.exists(uri):
                out[(stage.name, shard)] = storage.read_bytes(uri)
    return out


def rewritten(before: dict, after: dict) -> set[str]:
    """The stages with a marker that is new or different."""
    return {key[0] for key, data in after.items() if before.get(key) != data}


def test_markers_carry_fingerprints_and_an_unchanged_spec_skips_everything(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    engine = FakeEngine()
    run_pipeline(spec_path, "r1", engine=engine)
    run = run_of(spec_path)
    first, calls = markers(run), len(engine.calls)
    for (stage, shard), data in first.items():
        fp = json.loads(data)["fingerprint"]
        assert set(fp) == {"sha256", "sections", "inputs", "files"}, stage
        # A mapped stage reading a mapped one: the same shard; otherwise one entry per stage read.
        assert set(fp["inputs"]) == {f"{r}/{shard}" if STAGES[r].mapped and shard is not None else r
                                     for r in STAGES[stage].reads}, stage
    filtered = json.loads(first[("filter_shard", 1)])["fingerprint"]
    assert set(filtered["sections"]) == {f"quality.{f}" for f in VALIDATOR_FIELDS}
    assert set(filtered["inputs"]) == {"generate/1"}
    assert set(json.loads(first[("prompts", None)])["fingerprint"]["files"]) == {
        f"prompts.template_dir/en/{f}.j2" for f in ("textbook", "blog_post", "story")}
    assert json.loads(first[("seeds", None)])["fingerprint"]["files"]["seeds.outline"] is not None
    again = run_pipeline(spec_path, "r1", engine=engine)
    assert len(engine.calls) == calls
    assert all(m.get("skipped") for s in TABLE for m in (again[s.name] if s.mapped else [again[s.name]]))
    assert markers(run) == first


def test_a_fixed_decontamination_setting_reruns_decontaminate_and_after_but_not_generation(tmp_path, storage_uri, decontam,
                                                                                          caplog):
    # Edited canary copies fall below 0.95: the gate fails; the threshold is fixed under the same run id.
    spec_path = spec_file(tmp_path, {**decontam, "threshold": 0.95})
    engine = FakeEngine()
    with pytest.raises(GateFailed, match="canaries_missed"):
        run_pipeline(spec_path, "r1", engine=engine)
    run = run_of(spec_path)
    first, calls = markers(run), len(engine.calls)
    edit(spec_path, "quality.decontamination.threshold", 0.5)
    caplog.set_level(logging.WARNING, logger=contract.__name__)
    out = run_pipeline(spec_path, "r1", engine=engine)
    assert len(engine.calls) == calls  # nothing generated again
    after = markers(run)
    assert rewritten(first, after) == stages("decontaminate")
    assert all(after[k] == v for k, v in first.items() if k[0] in before("decontaminate"))
    assert out["quality_gate"]["stats"]["passed"] and out["decontaminate"]["stats"]["canaries_missed"] == []
    assert "changed: sections quality.decontamination" in caplog.text
    snapshot = storage.read_json(run.layout.spec_snapshot)
    assert snapshot["sha256"] == load_spec(spec_path).spec_hash()
    assert [h["changed"] for h in snapshot["history"]] == [["quality.decontamination.threshold"]]
    assert snapshot["spec"]["quality"]["decontamination"]["threshold"] == 0.5


def test_a_changed_reference_file_reruns_decontaminate_and_after(tmp_path, storage_uri, decontam, caplog):
    spec_path = spec_file(tmp_path, decontam)
    engine = FakeEngine()
    run_pipeline(spec_path, "r1", engine=engine, until="quality_gate")
    run = run_of(spec_path)
    before, calls = markers(run), len(engine.calls)
    refs = decontam["references"][0]["path"]
    item = json.loads(open(refs).readline())
    with open(refs, "a") as fh:
        fh.write(json.dumps({**item, "id": "extra-1", "question": "What colour is the sky at noon?"}) + "\n")
    items = sum(json.loads(before[("decontaminate", None)])["stats"]["references"].values())
    caplog.set_level(logging.WARNING, logger=contract.__name__)
    run_pipeline(spec_path, "r1", engine=engine, until="quality_gate")
    assert len(engine.calls) == calls
    assert rewritten(before, markers(run)) == stages("decontaminate", "quality_gate")
    assert "files quality.decontamination.references[0]" in caplog.text
    stats = storage.read_json(run.layout.marker("decontaminate"))["stats"]
    assert sum(stats["references"].values()) == items + 1  # the new item is in the index
    # The spec did not change: nothing in its history.
    assert storage.read_json(run.layout.spec_snapshot)["history"] == []


def test_a_generation_change_after_generate_committed_is_refused(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="generate")
    snapshot = storage.read_bytes(run_of(spec_path).layout.spec_snapshot)
    edit(spec_path, "generation.temperature", 0.1)
    with pytest.raises(SpecChangedError) as info:
        run_pipeline(spec_path, "r1", engine=FakeEngine())
    message = str(info.value)
    assert message.startswith(f"{spec_path}: changed since run r1 started")
    assert "generation.temperature" in message and "used by plan_shards, generate" in message
    assert "generated (and paid for) again" in message and "new run id" in message
    assert storage.read_bytes(run_of(spec_path).layout.spec_snapshot) == snapshot  # nothing recorded


def test_a_generation_change_before_generate_committed_is_taken(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="plan_shards")
    run = run_of(spec_path)
    before = markers(run)
    edit(spec_path, "generation.temperature", 0.1)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="generate")
    # topics and prompts do not use the temperature; the plan embeds it and is planned again.
    assert rewritten(before, markers(run)) == {"plan_shards", "generate"}
    unit = storage.read_parquet(run.layout.shard("plan_shards", 0))
    assert json.loads(unit.schema.metadata[META_KEY])["temperature"] == 0.1


def test_a_rule_the_generator_validates_with_is_refused_after_generate(tmp_path, storage_uri):
    """quality.min_words is a filter_shard rule, and also one the generator retries rows on (too_short):
    changing it would change what generation produced, so it is refused like a generation change."""
    spec_path = spec_file(tmp_path)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="filter_shard")
    edit(spec_path, "quality.min_words", 6)
    with pytest.raises(SpecChangedError, match=r"quality\.min_words; used by plan_shards, generate"):
        run_pipeline(spec_path, "r1", engine=FakeEngine())


def test_a_near_dedup_change_reruns_near_dedup_and_after_only(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    engine = FakeEngine()
    run_pipeline(spec_path, "r1", engine=engine, until="quality_gate")
    run = run_of(spec_path)
    before, calls = markers(run), len(engine.calls)
    edit(spec_path, "quality.near_dedup.verify_threshold", 0.7)  # confirms pairs, does not change signatures
    run_pipeline(spec_path, "r1", engine=engine, until="quality_gate")
    assert len(engine.calls) == calls
    assert rewritten(before, markers(run)) == stages("near_dedup", "quality_gate")


def test_a_gate_threshold_leaves_the_plan_and_reruns_only_the_gate(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    engine = FakeEngine()
    run_pipeline(spec_path, "r1", engine=engine, until="quality_gate")
    run = run_of(spec_path)
    before = markers(run)
    edit(spec_path, "quality.max_filtered_share", 0.8)
    edit(spec_path, "quality.max_duplicate_rate", 0.5)
    calls = len(engine.calls)
    out = run_pipeline(spec_path, "r1", engine=engine)
    assert len(engine.calls) == calls
    redone = rewritten(before, markers(run))
    assert {"quality_gate", "publish", "summary"} <= redone <= stages("decontaminate") - {"decontaminate"}
    assert out["publish"]["stats"]["rows"] == 6


def test_a_published_run_refuses_changes_to_its_spec_and_files(tmp_path, storage_uri, decontam):
    spec_path = spec_file(tmp_path, decontam)
    run_pipeline(spec_path, "r1", engine=FakeEngine())
    run = run_of(spec_path)
    before = markers(run)
    edit(spec_path, "quality.max_filtered_share", 0.8)
    with pytest.raises(SpecChangedError, match=r"max_filtered_share; used by .*quality_gate, publish: the run is published"):
        run_pipeline(spec_path, "r1", engine=FakeEngine())
    edit(spec_path, "quality.max_filtered_share", 0.9)  # back as it was: the run goes on as committed
    run_pipeline(spec_path, "r1", engine=FakeEngine())
    # A reference file changed after publishing: decontaminate refuses before writing anything.
    with open(decontam["references"][0]["path"], "a") as fh:
        fh.write(json.dumps({"id": "x", "question": "Why is the sea salty?", "choices": ["rivers"], "benchmark": "demo_arc"}) + "\n")
    with pytest.raises(SpecChangedError) as info:
        run_pipeline(spec_path, "r1", engine=FakeEngine())
    assert str(info.value).startswith(run.layout.marker("decontaminate"))
    assert "files quality.decontamination.references[0]" in str(info.value) and "would re-run publish" in str(info.value)
    assert markers(run) == before


def test_a_changed_template_after_generation_is_refused_before_prompts_are_rewritten(tmp_path, storage_uri, copy_include):
    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6, **{"prompts.template_dir": str(copy_include / "prompts")})))
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="generate")
    run = run_of(spec_path)
    before = markers(run)
    template = copy_include / "prompts" / "en" / "story.j2"
    template.write_text(template.read_text() + "\nBe vivid.\n")
    with pytest.raises(SpecChangedError, match=r"prompts was committed with other inputs \(changed: files "
                                               r"prompts\.template_dir/en/story\.j2\); running it again would re-run generate"):
        run_pipeline(spec_path, "r1", engine=FakeEngine())
    assert markers(run) == before


def test_identity_sections_are_never_changed_under_a_run_id(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="seeds")
    edit(spec_path, "storage", {"uri": storage_uri})  # the same place, spelled in the spec
    with pytest.raises(SpecChangedError, match="storage.uri define which run this is"):
        run_pipeline(spec_path, "r1", engine=FakeEngine(), until="seeds")


def test_a_run_started_before_fingerprints_refuses_every_change(tmp_path, storage_uri):
    spec_path = spec_file(tmp_path)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="seeds")
    run = run_of(spec_path)
    old = storage.read_json(run.layout.spec_snapshot)
    storage.write_json(run.layout.spec_snapshot, {k: old[k] for k in ("sha256", "path", "spec")})  # as written before
    edit(spec_path, "quality.max_filtered_share", 0.8)
    with pytest.raises(SpecChangedError, match="the run started before stage fingerprints"):
        run_pipeline(spec_path, "r1", engine=FakeEngine(), until="seeds")


def test_markers_without_a_fingerprint_count_as_committed(tmp_path, storage_uri):
    """Markers of older runs, and those a Kubernetes pod commits (no run context), are kept as they are."""
    spec_path = spec_file(tmp_path)
    engine = FakeEngine()
    run_pipeline(spec_path, "r1", engine=engine, until="filter_shard")
    run = RunContext.create(load_spec(spec_path), "r1", engine=engine)
    uri = run.layout.marker("generate", 0)
    marker = storage.read_json(uri)
    del marker["fingerprint"]
    storage.write_json(uri, marker)
    calls = len(engine.calls)
    assert execute(run, "generate", 0)["skipped"] and len(engine.calls) == calls
    # Its readers know it by its commit time; filter_shard shard 0 had recorded the fingerprint: it runs again.
    assert fingerprint(run, "filter_shard", 0)["inputs"] == {"generate/0": f"committed_at:{marker['committed_at']}"}
    assert "skipped" not in execute(run, "filter_shard", 0)
    assert execute(run, "filter_shard", 0)["skipped"] and execute(run, "filter_shard", 1)["skipped"]


def test_the_plan_embeds_only_what_the_generator_validates_with_and_validates_identically(tmp_path, storage_uri, decontam):
    quality = {"quality.min_words": 7, "quality.max_words": 900, "quality.drop_truncated": True,
               "quality.refusal_phrases": ["as a language model"], "quality.heuristics": {"max_symbol_word_ratio": 0.2},
               "quality.max_filtered_share": 0.3, "quality.max_share": {"format": 0.9}}
    spec_path = spec_file(tmp_path, decontam, **quality)
    run_pipeline(spec_path, "r1", engine=FakeEngine(), until="plan_shards")
    spec = load_spec(spec_path)
    cfg = json.loads(storage.read_parquet(run_of(spec_path).layout.shard("plan_shards", 0)).schema.metadata[META_KEY])
    assert set(cfg["quality"]) == VALIDATOR_FIELDS
    validator = _Validator(cfg)
    for name in VALIDATOR_FIELDS:
        assert getattr(validator.quality, name) == getattr(spec.quality, name), name
    rows = [{"text": "", "finish_reason": "stop"}, {"text": "one two three", "finish_reason": "stop"},
            {"text": "word " * 20, "finish_reason": "length"}, {"text": "As a language model I cannot " * 3, "finish_reason": "stop"},
            {"text": "# " * 40 + "the river banks in the morning", "finish_reason": "stop"},
            {"text": "The people who live near the river walk along its banks in the morning.", "finish_reason": "stop"}]
    assert [reject_reason(r, validator.quality) for r in rows] == [reject_reason(r, spec.quality) for r in rows]
    assert generate.USES == plan_shards.USES


class _Recorder:
    """A QualitySpec that records which of its fields are read."""

    def __init__(self, quality: QualitySpec):
        self._quality, self.read = quality, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._quality, name)


def test_the_validator_and_the_filters_read_exactly_the_fields_they_declare():
    recorder = _Recorder(QualitySpec(min_words=3, drop_truncated=True))
    rows = [{"text": ""}, {"text": "a b", "finish_reason": "stop"}, {"text": "x y z w", "finish_reason": "length"},
            {"text": "I'm sorry, but I cannot help with that request today", "finish_reason": "stop"},
            {"text": "river " * 30, "finish_reason": "stop"}, {"text": "word " * 6000, "finish_reason": "stop"}]
    for row in rows:
        reject_reason(row, recorder)
    refusal_phrases(recorder)
    table = pa.table({"text": [r["text"] for r in rows], "finish_reason": [r.get("finish_reason") for r in rows]})
    filter_batch(table, recorder, refusal_phrases(recorder), {})
    reason_names(recorder.heuristics)
    assert recorder.read == VALIDATOR_FIELDS
    for stage in ("plan_shards", "generate", "filter_shard"):
        assert {p.removeprefix("quality.") for p in STAGES[stage].module.USES if p.startswith("quality.")} == VALIDATOR_FIELDS, stage


def test_every_stage_declares_uses_that_exist_in_the_spec(tmp_path, decontam):
    spec = load_spec(spec_file(tmp_path, decontam, **{"seeds.web_samples": {"path": str(INCLUDE / "seeds" / "demo_web_samples.jsonl")}}))
    canonical = spec.canonical()
    for stage in TABLE:
        declared = stage.module.__dict__.get("USES")
        assert isinstance(declared, tuple), f"synthcorpus/stages/{stage.name}.py: expected USES = (...)"
        for path in declared:
            if path == contract.ALL_SECTIONS:
                continue
            node = canonical
            for key in path.split("."):
                assert isinstance(node, dict) and key in node, f"synthcorpus/stages/{stage.name}.py: USES {path!r}: no {key!r}"
                node = node[key]


def test_a_uses_path_outside_the_spec_names_the_stage_module(tmp_path, storage_uri, monkeypatch):
    run = run_of(spec_file(tmp_path))
    monkeypatch.setattr(STAGES["dedup"].module, "USES", ("qualty.min_words",))
    with pytest.raises(ValueError, match=r"synthcorpus/stages/dedup.py: USES: .* got 'qualty.min_words'"):
        fingerprint(run, "dedup")


def test_changed_paths_and_the_stages_they_touch():
    old = {"quality": {"min_words": 5, "decontamination": None}, "generation": {"temperature": 0.5}}
    new = {"quality": {"min_words": 5, "decontamination": {"threshold": 0.5}}, "generation": {"temperature": 0.1}}
    assert contract.changed_paths(old, new) == ["generation.temperature", "quality.decontamination"]
    # A section set from nothing touches the stages that use a part of it (the gate: its canaries).
    touched = contract.stages_using(["quality.decontamination"])
    assert {"decontaminate", "quality_gate", "publish"} <= touched
    assert not touched & {"seeds", "topics", "prompts", "plan_shards", "generate", "filter_shard", "near_dedup"}
    touched = contract.stages_using(["generation.temperature"])
    assert {"plan_shards", "generate", "publish"} <= touched and not touched & {"seeds", "topics", "prompts", "filter_shard"}
    # In this pipeline every stage after near_dedup reads it, directly or through others.
    assert contract.downstream(["near_dedup"]) == stages("near_dedup")

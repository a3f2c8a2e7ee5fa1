from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.prompts import TemplateError, environment, load_template, plan, render, truncate_tokens
from synthcorpus.spec import AUDIENCES, FORMATS, LANGUAGES, parse_spec
from synthcorpus.stages.contract import RunContext, execute
from tests.conftest import tiny_spec_dict
from tests.stagekit import given, given_history


def _inputs(run, n_topics=4, seeds_per_topic=3, with_instructions=True):
    """Seeds, topics and assignments tables as the seeds and topics stages write them, and their markers."""
    seeds, topics, assignments = [], [], []
    for t in range(n_topics):
        topics.append({"topic_id": f"t{t}", "kind": "web", "label": f"Topic {t}", "kept": True})
        for s in range(seeds_per_topic):
            sid = f"s{t}-{s}"
            seeds.append({"seed_id": sid, "kind": "web", "text": f"Extract {t} {s} " + "word " * 300,
                          "subject": None, "course": None, "unit": None})
            assignments.append({"seed_id": sid, "topic_id": f"t{t}"})
    topics.append({"topic_id": "dropped", "kind": "web", "label": "gossip", "kept": False})
    seeds.append({"seed_id": "g", "kind": "web", "text": "celebrity gossip", "subject": None, "course": None, "unit": None})
    assignments.append({"seed_id": "g", "topic_id": "dropped"})
    if with_instructions:
        topics.append({"topic_id": "instructions", "kind": "instruction", "label": "instructions", "kept": True})
        seeds.append({"seed_id": "i1", "kind": "instruction", "text": "Why do we recycle?", "subject": None, "course": None, "unit": None})
        assignments.append({"seed_id": "i1", "topic_id": "instructions"})
    uris = [run.layout.output("seeds", "seeds"), run.layout.output("topics", "topics"),
            run.layout.output("topics", "assignments")]
    for uri, rows in zip(uris, (seeds, topics, assignments)):
        storage.write_parquet(uri, pa.Table.from_pylist(rows))
    given(run, "seeds", {"seeds": uris[0]})
    given(run, "topics", {"topics": uris[1], "assignments": uris[2]})
    given_history(run)
    return uris


def _prompts(spec, run_id, **kw):
    """The prompts stage (under the completion protocol) on those inputs: its marker and its rows."""
    run = RunContext.create(spec, run_id)
    _inputs(run, **kw)
    result = execute(run, "prompts")
    return result, storage.read_parquet(result["outputs"]["prompts"]).to_pylist()


def test_prompt_ids_are_deterministic_across_runs(storage_uri):
    spec = parse_spec(tiny_spec_dict(documents=40))
    _, a = _prompts(spec, "run-a")
    _, b = _prompts(spec, "run-b")
    assert [r["prompt_id"] for r in a] == [r["prompt_id"] for r in b]
    assert [r["prompt"] for r in a] == [r["prompt"] for r in b]
    assert len({r["prompt_id"] for r in a}) == 40


def test_dropped_topics_are_never_used_and_instructions_never_name_a_topic(storage_uri):
    spec = parse_spec(tiny_spec_dict(documents=40))
    _, rows = _prompts(spec, "r")
    assert "dropped" not in {r["topic_id"] for r in rows}
    assert all(not r["topic_in_prompt"] for r in rows if r["seed_kind"] == "instruction")
    assert {r["seed_kind"] for r in rows} == {"web", "instruction"}


def test_topic_probability_controls_how_often_the_topic_is_named(storage_uri):
    for p, lo, hi in ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0), (0.5, 0.35, 0.65)):
        spec = parse_spec(tiny_spec_dict(documents=120, **{"prompts.topic_probability": p}))
        _, rows = _prompts(spec, f"p{p}", with_instructions=False)
        share = sum(r["topic_in_prompt"] for r in rows) / len(rows)
        assert lo <= share <= hi, (p, share)
        for r in rows:
            assert (r["topic"] in r["prompt"]) == r["topic_in_prompt"]


def test_prompt_id_changes_with_template_version(storage_uri, copy_include):
    spec = parse_spec(tiny_spec_dict(documents=12, **{"prompts.template_dir": str(copy_include / "prompts")}))
    _, before = _prompts(spec, "r1")
    path = copy_include / "prompts" / "en" / "story.j2"
    path.write_text(path.read_text().replace("version: 1", "version: 2", 1))
    _, after = _prompts(spec, "r2")
    changed = {r["prompt_id"] for r in before} ^ {r["prompt_id"] for r in after}
    stories = {r["prompt_id"] for r in before + after if r["format"] == "story"}
    assert changed == stories and stories


def test_plan_balances_and_samples_without_replacement():
    spec = parse_spec(tiny_spec_dict(documents=2 * 6 * 5 * 5, **{
        "prompts.formats": list(FORMATS), "prompts.audiences": list(AUDIENCES), "prompts.languages": list(LANGUAGES)}))
    topics = [f"t{i}" for i in range(4)]
    items = plan(spec, topics)  # 300 items over a 4 x 150 = 600 space
    pairs = [(i.topic_id, i.format, i.audience, i.language) for i in items]
    assert len(set(pairs)) == 300 and all(i.variant == 0 for i in items)
    for key in ("topic_id", "format", "audience", "language"):
        counts = Counter(getattr(i, key) for i in items)
        assert max(counts.values()) - min(counts.values()) <= 1, (key, counts)
    # The whole space is used exactly once before anything repeats.
    spec_full = spec.model_copy(update={"documents": 600 + 7})
    full = plan(spec_full, topics)
    assert len({(i.topic_id, i.format, i.audience, i.language) for i in full[:600]}) == 600
    assert {i.variant for i in full[600:]} == {1}
    assert plan(spec, topics) == items  # deterministic


def test_plan_with_topic_and_combination_counts_sharing_factors():
    spec = parse_spec(tiny_spec_dict(documents=6 * 9, **{"prompts.formats": ["textbook", "story", "dialogue"]}))
    items = plan(spec, [f"t{i}" for i in range(6)])  # T=6, C=9, gcd 3: needs the period shift
    assert len({(i.topic_id, i.format, i.audience) for i in items}) == 54


def test_style_cues_rotate_per_template(storage_uri):
    spec = parse_spec(tiny_spec_dict(documents=30, **{"prompts.formats": ["story"], "prompts.audiences": ["young_children"]}))
    _, rows = _prompts(spec, "r", with_instructions=False)
    assert [r["style_index"] for r in rows] == list(range(30))


def test_extract_is_truncated_to_the_token_budget():
    text = "One, two three. " * 100
    out = truncate_tokens(text, 10)
    assert out.endswith(" …") and out.startswith("One, two three. One, two three.")
    assert truncate_tokens("short text", 10) == "short text"


def test_preview_shape_and_diversity_report(storage_uri):
    spec = parse_spec(tiny_spec_dict(documents=20))
    result, _ = _prompts(spec, "r")
    report = storage.read_json(result["outputs"]["diversity"])
    assert report["prompts"] == 20
    assert sum(report["distribution"]["format"].values()) == 20
    assert 0 <= report["near_duplicate_rate"] <= 1


def test_missing_variable_is_a_clear_template_error():
    spec = parse_spec(tiny_spec_dict())
    template = load_template(spec.template_dir, "en/textbook")
    with pytest.raises(TemplateError, match=r"en/textbook.j2: expected the template to render .*'extract' is undefined"):
        render(environment(spec.template_dir), template, {
            "seed_kind": "web", "topic": None, "subject": None, "course": None, "unit": None,
            "audience": "college_students", "style_index": 0, "language": "en",
        })


def test_template_without_version_header_is_rejected(copy_include):
    path = copy_include / "prompts" / "en" / "blog_post.j2"
    path.write_text(path.read_text().split("\n", 1)[1])
    with pytest.raises(TemplateError, match=r"blog_post.j2: line 1: expected a version header"):
        load_template(copy_include / "prompts", "en/blog_post")

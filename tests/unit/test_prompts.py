from __future__ import annotations

from collections import Counter
from itertools import product

import pytest

from synthcorpus import storage
from synthcorpus.prompts import TemplateError, _environment, build_prompts, load_templates, plan, render
from synthcorpus.run import RunContext
from synthcorpus.seeds import load_seeds
from synthcorpus.spec import AUDIENCES, FORMATS, parse_spec
from synthcorpus.topics import extract_topics
from tests.conftest import tiny_spec_dict


def _prompts(spec, run_id):
    run = RunContext.create(spec, run_id)
    seeds = load_seeds(run)
    topics = extract_topics(run, seeds.outputs["seeds"])
    result = build_prompts(run, topics.outputs["topics"])
    return result, storage.read_parquet(result.outputs["prompts"]).to_pylist()


def test_prompt_ids_are_deterministic_across_runs(storage_uri):
    spec = parse_spec(tiny_spec_dict(documents=27))
    _, a = _prompts(spec, "run-a")
    _, b = _prompts(spec, "run-b")
    assert [r["prompt_id"] for r in a] == [r["prompt_id"] for r in b]
    assert [r["prompt"] for r in a] == [r["prompt"] for r in b]
    assert len({r["prompt_id"] for r in a}) == 27


def test_prompt_id_changes_with_template_version(storage_uri, copy_include):
    spec = parse_spec(tiny_spec_dict(**{"prompts.template_dir": str(copy_include / "prompts")}))
    _, before = _prompts(spec, "r1")
    path = copy_include / "prompts" / "story.j2"
    path.write_text(path.read_text().replace("version: 1", "version: 2", 1))
    _, after = _prompts(spec, "r2")
    changed = {r["prompt_id"] for r in before} ^ {r["prompt_id"] for r in after}
    stories = {r["prompt_id"] for r in before + after if r["format"] == "story"}
    assert changed == stories and stories


def test_plan_balances_formats_audiences_and_topics():
    spec = parse_spec(tiny_spec_dict(documents=36))
    topics = [{"topic_id": f"t{i}", "kept": True} for i in range(12)]
    items = plan(spec, topics)
    assert len(items) == 36
    combos = Counter((f, a) for _, f, a, _, _ in items)
    assert set(combos.values()) == {4} and len(combos) == 9
    assert set(Counter(t["topic_id"] for t, *_ in items).values()) == {3}
    # Every (topic, format, audience) triple is distinct until the space is used up.
    assert len({(t["topic_id"], f, a, v) for t, f, a, _, v in items}) == 36


def test_plan_adds_variants_beyond_the_combination_space():
    spec = parse_spec(tiny_spec_dict(documents=20, **{"prompts.formats": ["story"], "prompts.audiences": ["young_children"]}))
    items = plan(spec, [{"topic_id": "a", "kept": True}, {"topic_id": "b", "kept": True}])
    keys = [(t["topic_id"], v) for t, _, _, _, v in items]
    assert len(set(keys)) == 20


@pytest.mark.parametrize("fmt,audience", list(product(FORMATS, AUDIENCES)))
def test_every_format_audience_renders_with_strict_undefined(fmt, audience):
    spec = parse_spec(tiny_spec_dict())
    templates = load_templates(spec)
    env = _environment(spec.template_dir)
    text = render(env, templates[fmt], {
        "topic": "Friction", "subject": "Physics", "course": "Everyday Physics", "extract": "Friction resists sliding.",
        "audience": audience, "language": "en", "language_name": "English",
    })
    assert "Friction" in text and "English" in text
    assert "{{" not in text and "{%" not in text


def test_audiences_change_instructions_substantively():
    spec = parse_spec(tiny_spec_dict())
    templates = load_templates(spec)
    env = _environment(spec.template_dir)
    base = {"topic": "T", "subject": "S", "course": "C", "extract": "E", "language": "en", "language_name": "English"}
    for fmt in FORMATS:
        texts = [set(render(env, templates[fmt], {**base, "audience": a}).split()) for a in AUDIENCES]
        for i in range(len(texts)):
            for j in range(i + 1, len(texts)):
                assert len(texts[i] ^ texts[j]) >= 15, (fmt, AUDIENCES[i], AUDIENCES[j])


def test_missing_variable_is_a_clear_template_error():
    spec = parse_spec(tiny_spec_dict())
    templates = load_templates(spec)
    with pytest.raises(TemplateError, match=r"textbook.j2: rendering failed, .*'extract' is undefined"):
        render(_environment(spec.template_dir), templates["textbook"], {
            "topic": "T", "subject": "S", "course": "C", "audience": "college_students", "language_name": "English",
        })


def test_template_without_version_header_is_rejected(copy_include):
    path = copy_include / "prompts" / "blog_post.j2"
    path.write_text(path.read_text().split("\n", 1)[1])
    spec = parse_spec(tiny_spec_dict(**{"prompts.template_dir": str(copy_include / "prompts")}))
    with pytest.raises(TemplateError, match=r"blog_post.j2: line 1: expected a version header"):
        load_templates(spec)

from __future__ import annotations

import subprocess
import sys

import pytest

from synthcorpus.spec import SpecError, load_spec, parse_spec
from tests.conftest import ROOT, tiny_spec_dict, write_spec


def test_demo_spec_is_valid():
    spec = load_spec(ROOT / "include" / "corpora" / "demo.yaml")
    assert spec.name == "demo"
    assert spec.dag_id == "synthcorpus_demo"
    assert spec.documents >= 8 and spec.judge.enabled  # small enough for make demo < 5 min, judge on
    assert len(spec.prompts.formats) >= 3 and len(spec.prompts.audiences) >= 3
    assert spec.outline_path.is_file()
    assert spec.generation.engine == "llamacpp"


def test_spec_hash_is_stable_and_sensitive(tmp_path):
    a = parse_spec(tiny_spec_dict())
    b = parse_spec(tiny_spec_dict())
    c = parse_spec(tiny_spec_dict(**{"generation.temperature": 0.9}))
    assert a.spec_hash() == b.spec_hash() != c.spec_hash()


BAD_SPECS = [
    # (overrides or replacement, field, fragment of the expectation)
    ({"name": "Bad Name!"}, "name", "expected a string matching pattern"),
    ({"documents": 0}, "documents", "greater than or equal to 1"),
    ({"documents": "many"}, "documents", "valid integer"),
    ({"prompts.formats": ["textbook", "limerick"]}, "prompts.formats[1]",
     "expected one of 'textbook', 'blog_post', 'wikihow', 'story', 'dialogue' or 'technical'"),
    ({"prompts.languages": ["en", "jp"]}, "prompts.languages[1]", "expected one of 'en', 'fr', 'de', 'es' or 'it'"),
    ({"prompts.topic_probability": 1.5}, "prompts.topic_probability", "less than or equal to 1"),
    ({"seeds": {}}, "seeds", "expected at least one seed source: outline, web_samples or instructions"),
    ({"seeds.web_samples": {"path": "/nonexistent/web.jsonl"}}, "seeds.web_samples.path", "existing file or directory"),
    ({"seeds.web_samples": {"path": "x.jsonl", "format": "csv"}}, "seeds.web_samples.format",
     "expected one of 'auto', 'parquet', 'jsonl' or 'hf'"),
    ({"topics.n_clusters": "many"}, "topics.n_clusters", "expected an integer >= 2 or 'auto', got 'many'"),
    ({"topics.min_score": 11}, "topics.min_score", "less than or equal to 10"),
    ({"generation.kubernetes": {"memory": "lots"}}, "generation.kubernetes.memory", "expected a Kubernetes quantity"),
    ({"generation.kubernetes": {"namespace": "GPU_Pool"}}, "generation.kubernetes.namespace", "expected a DNS-1123 label"),
    ({"generation.runner": "kubernetes"}, "generation", "expected engine 'vllm' or 'openai' for GPU pods"),
    ({"generation.openai": {"concurrency": 0}}, "generation.openai.concurrency", "greater than or equal to 1"),
    ({"quality.expectations": [{"type": "expect_text_to_be_good"}]}, "quality.expectations[0]",
     "expected a GX expectation name, got 'expect_text_to_be_good'"),
    ({"quality.expectations": [{"type": "expect_column_values_to_match_regex", "kwargs": {"column": "text", "pattern": "x"}}]},
     "quality.expectations[0]", "unknown arguments ['pattern']"),
    ({"quality.expectations": [{"type": "expect_column_values_to_match_regex", "kwargs": {"regex": "x"}}]},
     "quality.expectations[0]", "missing required arguments ['column']"),
    ({"quality.expectations": [{"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "colour", "value_set": []}}]},
     "quality.expectations[0]", "column 'colour' is not in the documents batch"),
    ({"prompts.formats": []}, "prompts.formats", "at least 1 item"),
    ({"prompts.audiences": ["college_students", "college_students"]}, "prompts.audiences", "listed more than once"),
    ({"generation.engine": "gpt5"}, "generation.engine", "expected one of 'llamacpp'"),
    ({"generation.temperature": 3.5}, "generation.temperature", "less than or equal to 2"),
    ({"generation.max_tokens": 4}, "generation.max_tokens", "greater than or equal to 16"),
    ({"generation.model": "/nonexistent/model.gguf"}, "generation.model", "existing .gguf file"),
    ({"generation.tempurature": 0.5}, "generation.tempurature", "unknown field"),
    ({"quality.min_words": 500, "quality.max_words": 10}, "quality", "min_words <= max_words"),
    ({"quality.max_filtered_share": 1.5}, "quality.max_filtered_share", "less than or equal to 1"),
    ({"storage.uri": "ftp://x/y"}, "storage.uri", "file://, s3:// or memory://"),
    ({"quality.max_filtered_share_by_reason": {"too_boring": 0.1}}, "quality",
     "max_filtered_share_by_reason: unknown reasons ['too_boring']"),
    ({"quality.max_filtered_share_by_reason": {"refusal": 2}}, "quality",
     "max_filtered_share_by_reason.refusal: expected a share between 0 and 1, got 2"),
    ({"quality.max_share": {"colour": 0.5}}, "quality.max_share.colour", "'format', 'audience', 'topic' or 'language'"),
    ({"quality.word_quantiles": {"p99": {"max": 10}}}, "quality.word_quantiles.p99", "'p05', 'p25', 'p50', 'p75' or 'p95'"),
    ({"quality.word_quantiles": {"p50": {"min": 900, "max": 100}}}, "quality.word_quantiles.p50", "expected min <= max"),
    ({"quality.word_quantiles": {"p50": {}}}, "quality.word_quantiles.p50", "expected min, max or both"),
    ({"quality.max_duplicate_rate": -0.1}, "quality.max_duplicate_rate", "greater than or equal to 0"),
    ({"quality.expectations": [{"batch": "run_metrics", "type": "expect_column_values_to_be_between",
                                "kwargs": {"column": "n_words_p99", "max_value": 5}}]},
     "quality.expectations[0]", "column 'n_words_p99' is not in the run_metrics batch"),
    ({"seeds.outline": "/nonexistent/outline.yaml"}, "seeds.outline", "existing YAML file"),
    ({"prompts.template_dir": "/nonexistent"}, "prompts.template_dir", "directory of templates"),
    ({"tasks.retries": -1}, "tasks.retries", "greater than or equal to 0"),
    ({"tasks.timeout_s": 0}, "tasks.timeout_s", "greater than 0"),
    ({"tasks.retires": 3}, "tasks.retires", "unknown field"),
    ({"generation.pool": "my pool!"}, "generation.pool", "expected a string matching pattern"),
]


@pytest.mark.parametrize("overrides,field,expected", BAD_SPECS, ids=[b[1] for b in BAD_SPECS])
def test_bad_spec_names_file_field_and_expectation(tmp_path, overrides, field, expected):
    path = write_spec(tmp_path, tiny_spec_dict(**overrides), "bad.yaml")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    problems = info.value.problems
    assert any(p.field == field and expected in p.expected and p.file == str(path) for p in problems), problems


def test_missing_required_fields_are_all_reported(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("description: nothing else\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    fields = {p.field for p in info.value.problems}
    assert {"name", "documents", "seeds", "prompts"} <= fields
    assert all(p.expected == "required field is missing" for p in info.value.problems)


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: demo\nprompts: [textbook\n")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    (problem,) = info.value.problems
    assert problem.file == str(path)
    assert problem.field.startswith("line ")
    assert "expected valid YAML" in problem.expected


def test_not_a_mapping_and_missing_file(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(SpecError, match=r"list.yaml: \(top level\): expected a mapping"):
        load_spec(path)
    with pytest.raises(SpecError, match=r"nope.yaml: \(file\): expected an existing spec file"):
        load_spec(tmp_path / "nope.yaml")


def test_cli_validate_exit_codes(tmp_path):
    bad = write_spec(tmp_path, tiny_spec_dict(**{"documents": -1, "generation.top_p": 0}), "bad.yaml")
    good = write_spec(tmp_path, tiny_spec_dict(), "good.yaml")
    cmd = [sys.executable, "-m", "synthcorpus.cli", "validate"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "ok (corpus 'tiny'" in ok.stdout
    res = subprocess.run([*cmd, str(good), str(bad)], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"{bad}: documents: expected greater than or equal to 1" in res.stderr
    assert f"{bad}: generation.top_p: expected greater than 0" in res.stderr


def test_task_timeouts_and_pools_follow_from_the_spec():
    spec = parse_spec(tiny_spec_dict(documents=100, **{"generation.shard_size": 10, "generation.max_tokens": 400,
                                                        "generation.max_attempts": 2, "generation.expected_tokens_per_s": 20,
                                                        "generation.expected_load_s": 10}))
    # 3 x (10 rows x 400 tokens x 2 attempts / 20 tok/s) + 10 s load
    assert spec.timeout_s("generate") == 3 * 400 + 10
    assert spec.timeout_s("dedup") == spec.tasks.timeout_s == 3600
    assert spec.pool("generate") == spec.pool("topics") == "synthcorpus_cpu_generate" and spec.pool("dedup") is None
    own_pool = parse_spec(tiny_spec_dict(**{"generation.pool": "big_box", "topics.labeler": "keywords"}))
    assert own_pool.pool("generate") == "big_box" and own_pool.pool("topics") is None

"""Fail early: a matrix of bad inputs (spec fields, schedules, seed files, outlines, reference files, templates,
engine settings). Each one gets exactly one clear problem from ``synthcorpus validate`` naming the file, the
field and what was expected, and the same problem stops a run in its first task, before the engine is
called. The CLI shows expected errors (a failed gate included) without a traceback and exits non-zero."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthcorpus import cli
from synthcorpus.spec import SpecError
from synthcorpus.stages.runner import run_pipeline
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeEngine


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _web(path: str, **kw) -> dict:
    return {"seeds.web_samples": {"path": path, **kw}}


def _decontam(ref: dict | None = None, canaries: str | None = None, include: Path | None = None) -> dict:
    references = [ref or {"path": str(include / "seeds" / "demo_benchmark.jsonl"), "text_columns": ["question", "choices"],
                          "id_column": "id"}]
    cfg = {"references": references}
    if canaries:
        cfg["canaries"] = canaries
    return {"quality.decontamination": cfg}


def _texts(n: int = 5) -> list[dict]:
    return [{"text": f"Sample paragraph number {i} about rivers, mountains and the weather of the valley."} for i in range(n)]


def _template(include: Path, name: str, body: str) -> None:
    (include / "prompts" / "en" / f"{name}.j2").write_text(body)


# Each case: (id, make(tmp, include) -> spec overrides, expected field, file the message must name: "spec", or a
# path relative to tmp / include). Cases that pass load_spec are caught by the preflight (validate and history).
def _cases():
    c = []

    def case(cid, field, file):
        def deco(fn):
            c.append(pytest.param(fn, field, file, id=cid))
            return fn
        return deco

    # --- spec fields -------------------------------------------------------------------------------------
    case("documents-zero", "documents", "spec")(lambda t, i: {"documents": 0})
    case("name-uppercase", "name", "spec")(lambda t, i: {"name": "Bad Name"})
    case("unknown-format", "prompts.formats", "spec")(lambda t, i: {"prompts.formats": ["poem"]})
    case("unknown-language", "prompts.languages", "spec")(lambda t, i: {"prompts.languages": ["xx"]})
    case("unknown-field", "generaton", "spec")(lambda t, i: {"generaton": {"engine": "llamacpp"}})
    case("storage-scheme", "storage.uri", "spec")(lambda t, i: {"storage.uri": "ftp://host/corpora"})
    case("temperature-negative", "generation.temperature", "spec")(lambda t, i: {"generation.temperature": -1})
    # --- schedules ---------------------------------------------------------------------------------------
    case("cron-hour-25", "schedule", "spec")(lambda t, i: {"schedule": "0 25 * * *"})
    case("cron-3-fields", "schedule", "spec")(lambda t, i: {"schedule": "* * *"})
    case("cron-step-0", "schedule", "spec")(lambda t, i: {"schedule": "*/0 * * * *"})
    case("cron-bad-month", "schedule", "spec")(lambda t, i: {"schedule": "0 3 1 foo *"})
    case("preset-unknown", "schedule", "spec")(lambda t, i: {"schedule": "@fortnightly"})
    # --- outline -----------------------------------------------------------------------------------------
    case("outline-missing", "seeds.outline", "spec")(lambda t, i: {"seeds.outline": str(t / "nope.yaml")})

    @case("outline-bad-yaml", "", "outline.yaml")
    def _(t, i):
        (t / "outline.yaml").write_text("subjects: [\n  - subject: x\n")
        return {"seeds.outline": str(t / "outline.yaml")}

    @case("outline-unit-no-description", "subjects[0].units[0]", "outline.yaml")
    def _(t, i):
        (t / "outline.yaml").write_text("subjects:\n  - subject: Biology\n    course: Cells\n    units:\n      - title: Mitosis\n")
        return {"seeds.outline": str(t / "outline.yaml")}

    @case("outline-no-subjects", "subjects", "outline.yaml")
    def _(t, i):
        (t / "outline.yaml").write_text("courses: []\n")
        return {"seeds.outline": str(t / "outline.yaml")}

    # --- seed files --------------------------------------------------------------------------------------
    case("web-missing-file", "seeds.web_samples.path", "spec")(lambda t, i: _web(str(t / "missing.jsonl")))
    case("web-jsonl-wrong-column", "seeds.web_samples.text_column", "web.jsonl")(
        lambda t, i: _web(_write_jsonl(t / "web.jsonl", _texts()), text_column="body"))

    @case("web-jsonl-bad-line", "seeds.web_samples.path", "web.jsonl")
    def _(t, i):
        (t / "web.jsonl").write_text(json.dumps(_texts(1)[0]) + "\n{not json\n")
        return _web(str(t / "web.jsonl"))

    @case("web-jsonl-not-utf8", "seeds.web_samples.path", "web.jsonl")
    def _(t, i):
        (t / "web.jsonl").write_bytes(b'{"text": "caf\xe9 au lait and more words here"}\n')
        return _web(str(t / "web.jsonl"))

    case("web-jsonl-number-text", "seeds.web_samples.text_column", "web.jsonl")(
        lambda t, i: _web(_write_jsonl(t / "web.jsonl", [{"text": 42}])))

    @case("web-parquet-no-column", "seeds.web_samples.text_column", "web.parquet")
    def _(t, i):
        pq.write_table(pa.table({"body": [r["text"] for r in _texts()]}), t / "web.parquet")
        return _web(str(t / "web.parquet"))

    @case("web-parquet-int-column", "seeds.web_samples.text_column", "web.parquet")
    def _(t, i):
        pq.write_table(pa.table({"text": list(range(5))}), t / "web.parquet")
        return _web(str(t / "web.parquet"))

    @case("web-format-parquet-is-jsonl", "seeds.web_samples.path", "web.parquet")
    def _(t, i):
        _write_jsonl(t / "web.parquet", _texts())
        return _web(str(t / "web.parquet"))

    @case("web-unknown-suffix", "seeds.web_samples.format", "web.txt")
    def _(t, i):
        (t / "web.txt").write_text("hello\n")
        return _web(str(t / "web.txt"))

    @case("instructions-hf-on-file", "seeds.instructions.format", "instr.jsonl")
    def _(t, i):
        return {"seeds.instructions": {"path": _write_jsonl(t / "instr.jsonl", _texts()), "format": "hf"}}

    # --- reference files (decontamination) ---------------------------------------------------------------
    @case("ref-missing-text-column", "quality.decontamination.references[0]", "ref.jsonl")
    def _(t, i):
        ref = _write_jsonl(t / "ref.jsonl", [{"id": "q1", "question": "What is the capital of France and why?"}])
        return _decontam({"path": ref, "text_columns": ["question", "answer"], "id_column": "id"})

    @case("ref-missing-id-column", "quality.decontamination.references[0]", "ref.jsonl")
    def _(t, i):
        ref = _write_jsonl(t / "ref.jsonl", [{"question": "What is the capital of France and why?"}])
        return _decontam({"path": ref, "text_columns": ["question"], "id_column": "id"})

    @case("ref-bad-json", "quality.decontamination.references[0]", "ref.jsonl")
    def _(t, i):
        (t / "ref.jsonl").write_text('{"id": "q1", "question": "fine"}\n[1, 2\n')
        return _decontam({"path": str(t / "ref.jsonl"), "text_columns": ["question"], "id_column": "id"})

    @case("canaries-no-text", "quality.decontamination.canaries", "canaries.jsonl")
    def _(t, i):
        return _decontam(canaries=_write_jsonl(t / "canaries.jsonl", [{"id": "c1", "body": "x"}]), include=i)

    # --- templates ---------------------------------------------------------------------------------------
    @case("template-no-version", "prompts.formats[0]", "textbook.j2")
    def _(t, i):
        _template(i, "textbook", "Write a textbook unit about {{ extract }}.")
        return {}

    @case("template-syntax", "prompts.formats[0]", "textbook.j2")
    def _(t, i):
        _template(i, "textbook", "{#- version: 9 -#}\nWrite about {{ extract }.")
        return {}

    @case("template-undefined-variable", "prompts.formats[1]", "blog_post.j2")
    def _(t, i):
        _template(i, "blog_post", "{#- version: 9 -#}\nWrite a blog post about {{ extract }} for {{ reader }}.")
        return {}

    @case("template-undefined-in-branch", "prompts.formats[2]", "story.j2")
    def _(t, i):  # only outline seeds with a topic reach the broken branch
        _template(i, "story", "{#- version: 9 -#}\n{% if topic %}{{ topic.title_case() }}{% endif %} {{ extract }}")
        return {}

    @case("template-renders-empty", "prompts.formats[0]", "textbook.j2")
    def _(t, i):
        _template(i, "textbook", "{#- version: 9 -#}\n{% if false %}{{ extract }}{% endif %}")
        return {}

    @case("judge-template-missing", "judge.enabled", "judge.j2")
    def _(t, i):
        (i / "prompts" / "en" / "judge.j2").unlink()
        return {"judge.enabled": True}

    @case("rewrite-template-undefined", "judge.enabled", "rewrite.j2")
    def _(t, i):
        _template(i, "rewrite", "Rewrite {{ document }} using {{ critique_text }}.")
        return {"judge.enabled": True}

    @case("topic-label-template-broken", "topics.labeler", "topic_label.j2")
    def _(t, i):
        (i / "prompts" / "topic_label.j2").write_text("{#- version: 1 -#}\n{% for e in extracts %}{{ e }")
        return {"topics.labeler": "engine"}

    # --- engine settings ---------------------------------------------------------------------------------
    case("openai-no-url", "generation.openai", "spec")(lambda t, i: {"generation.engine": "openai", "generation.model": "m"})
    case("openai-bad-url", "generation.openai.base_url", "spec")(
        lambda t, i: {"generation.engine": "openai", "generation.model": "m", "generation.openai.base_url": "ftp://h/v1"})
    case("llamacpp-missing-gguf", "generation.model", "spec")(lambda t, i: {"generation.model": str(t / "none.gguf")})
    return c


CASES = _cases()


def test_the_matrix_has_at_least_30_bad_inputs():
    assert len(CASES) >= 30


@pytest.fixture
def bad_spec(tmp_path, copy_include, storage_uri, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)

    def make(fn):
        overrides = fn(tmp_path, copy_include)
        data = tiny_spec_dict(**{"prompts.template_dir": str(copy_include / "prompts"), **overrides})
        return write_spec(tmp_path, data)

    return make


@pytest.mark.parametrize("make, field, file", CASES)
def test_validate_names_file_field_and_expectation(bad_spec, make, field, file, capsys):
    path = bad_spec(make)
    assert cli.main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert lines[0] == f"1 problem(s) in {path}:", err  # exactly one problem: the one planted
    problem = lines[1]
    assert (str(path) if file == "spec" else file) in problem, problem
    assert field in problem, problem
    assert "expected" in problem, problem
    assert "Traceback" not in err


@pytest.mark.parametrize("make, field, file", CASES)
def test_a_run_stops_in_its_first_task_before_any_generation(bad_spec, make, field, file):
    path = bad_spec(make)
    engine = FakeEngine()
    with pytest.raises(SpecError) as info:
        run_pipeline(str(path), "early", engine=engine)
    assert field in str(info.value)
    assert engine.calls == []


def test_the_good_spec_passes_validate_and_the_preflight(tmp_path, storage_uri, capsys):
    path = write_spec(tmp_path, tiny_spec_dict(**_decontam(include=Path(__file__).resolve().parents[2] / "include")))
    assert cli.main(["validate", str(path)]) == 0
    assert "ok (corpus 'tiny'" in capsys.readouterr().out


def test_a_bug_keeps_its_traceback():
    assert not cli.explained(KeyError("x"))
    assert cli.explained(SpecError([]))
    from synthcorpus.storage import StorageError
    assert cli.explained(StorageError("s3://b/k: write failed"))


def test_a_reference_set_without_a_name_is_named_after_its_file_as_documented(tmp_path):
    """DecontamReference.name documents "default: file name"; the loader used to refuse a reference without a
    name or benchmark_column, in decontaminate, after generation."""
    from synthcorpus.quality.decontam import load_references

    ref = _write_jsonl(tmp_path / "mmlu_sample.jsonl", [{"id": "q1", "question": "Which gas do plants take in?"}])
    (loaded,) = load_references([{"path": ref, "text_columns": ["question"], "id_column": "id"}])
    assert loaded.name == "mmlu_sample"
    assert loaded.ids == ["q1"]


def test_the_preflight_reads_the_first_mib_of_a_jsonl_seed_file_in_whole_lines(tmp_path):
    from synthcorpus.seeds import PEEK_BYTES, SeedError, peek_source, read_source
    from synthcorpus.spec import SampleSource

    line = json.dumps({"text": "word " * 200}) + "\n"
    n = PEEK_BYTES // len(line) + 50
    path = tmp_path / "big.jsonl"
    path.write_text(line * n + "{broken\n")  # a bad line beyond the first MiB: the seeds stage reports it
    source = SampleSource(path=str(path))
    assert peek_source(source, path.as_uri(), "seeds.web_samples") == PEEK_BYTES // len(line)
    with pytest.raises(SeedError, match=rf"line {n + 1}: expected one JSON object per line"):
        read_source(source, path.as_uri(), "seeds.web_samples")
    long_line = tmp_path / "long.jsonl"
    long_line.write_text(json.dumps({"text": "x" * (PEEK_BYTES + 10)}) + "\n")  # one line longer than the peek
    assert peek_source(SampleSource(path=str(long_line)), long_line.as_uri(), "seeds.web_samples") == 1

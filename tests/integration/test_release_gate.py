"""The release gate as stages, on real Great Expectations: per-shard validation (what the mapped
``validate_shard`` task runs) plus run-level expectations on the aggregate metrics row; one failure per
expectation family, the override path, and the same metrics however the run is sharded."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.publish import PublishError
from synthcorpus.quality.gate import GateFailed
from synthcorpus.quality.release import release_checks
from synthcorpus.spec import parse_spec
from synthcorpus.stages import contract, publish
from synthcorpus.stages.contract import RunContext, execute
from tests.conftest import INCLUDE, tiny_spec_dict
from tests.stagekit import given, given_plan

FORMATS = ["textbook", "blog_post", "story"]
AUDIENCES = ["young_children", "high_school_students", "college_students"]


def doc(i: int, n_words: int = 20, fmt: str | None = None, language: str = "en", text: str | None = None) -> dict:
    text = text or " ".join(f"w{i}x{j}" for j in range(n_words))
    return {"prompt_id": f"p{i}", "text": text, "n_words": n_words, "text_hash": hashlib.sha256(text.encode()).hexdigest(),
            "language": language, "format": fmt or FORMATS[i % 3], "audience": AUDIENCES[(i // 3) % 3],
            "topic": f"topic {i % 2}"}


def make_run(storage_uri, shards: list[list[dict]], run_id: str = "r1", removed: dict | None = None,
             exact: int = 0, near: int = 0, decontam: dict | None = None, confusion: dict | None = None, **quality):
    """A run whose stages up to top-up are committed: the plan, filter_shard markers, stage stats,
    decontaminated document shards (top_up passing them through)."""
    spec = parse_spec(tiny_spec_dict(**{f"quality.{k}": v for k, v in quality.items()}))
    run = RunContext.create(spec, run_id)
    removed = removed or {}
    given_plan(run, len(shards))
    uris = []
    for i, rows in enumerate(shards):
        extra = removed if i == 0 else {}  # all filter removals counted on shard 0
        kept = len(rows) + (exact + near + (decontam or {}).get("removed", 0) if i == 0 else 0)
        given(run, "filter_shard", {"documents": run.layout.shard("filter_shard", i)}, shard=i, stats={
            "input": kept + sum(extra.values()), "kept": kept, "reasons": extra,
            "language_confusion": (confusion or {"en": {"en": kept}}) if i == 0 else {"en": {"en": kept}}})
        uri = run.layout.shard("decontaminate", i)
        storage.write_parquet(uri, pa.Table.from_pylist(rows) if rows else pa.table({"text": pa.array([], pa.string())}))
        uris.append(uri)
    given(run, "dedup", {}, stats={"removed": exact})
    given(run, "near_dedup", {}, stats={"removed": near})
    given(run, "decontaminate", {"documents": uris}, stats={"removed": 0, "canaries_missed": [], **(decontam or {})})
    # No top-up round: the decontaminated shards are the run's documents.
    given(run, "top_up", {"documents": uris}, stats={"round_stats": []}, shards=list(range(len(shards))))
    return run, uris


def gate(run, uris, override=None):
    """The gate's marker once the mapped validate_shard tasks and the gate task have run."""
    if override is not None:  # the DAG param the gate task reads its override reason from
        run = RunContext.create(run.spec, run.run_id, {**run.params, "override_gate_reason": override})
    for index in contract.shards(run, "validate_shard"):  # what the mapped validate_shard tasks do before the gate task
        execute(run, "validate_shard", index)
    return execute(run, "quality_gate")


def failed_columns(exc: GateFailed) -> set:
    return {f["column"] or f["expectation"] for f in exc.report.failures()}


def test_release_suite_is_generated_from_the_spec():
    spec = parse_spec(tiny_spec_dict(**{
        "quality.max_filtered_share_by_reason": {"truncated": 0.2, "refusal": 0.1},
        "quality.max_duplicate_rate": 0.01, "quality.max_contaminated": 0, "quality.min_language_match_rate": 0.9,
        "quality.word_quantiles": {"p05": {"min": 10}, "p95": {"max": 900}},
        "quality.max_share": {"format": 0.5, "topic": 0.3}, "quality.min_share": {"audience": 0.1},
        "quality.max_opening_share": 0.2,
        "quality.expectations": [{"batch": "run_metrics", "type": "expect_column_values_to_be_between",
                                  "kwargs": {"column": "n_words_p50", "min_value": 30}}],
    }))
    keys = {(c.batch, c.kwargs.get("column")) for c in release_checks(spec)}
    assert {("documents", c) for c in ("text", "n_words", "text_hash", "language", "format", "audience")} <= keys
    assert {("run_metrics", c) for c in (
        "documents", "filtered_share", "duplicate_text_hashes", "filtered_share_truncated", "filtered_share_refusal",
        "duplicate_rate", "contaminated", "language_match_rate", "n_words_p05", "n_words_p95", "format_max_share",
        "topic_max_share", "audience_min_share", "max_opening_share", "n_words_p50")} <= keys
    # Without thresholds only the fixed expectations are in the suite.
    plain = {c.kwargs.get("column") for c in release_checks(parse_spec(tiny_spec_dict())) if c.batch == "run_metrics"}
    assert plain == {"documents", "filtered_share", "duplicate_text_hashes"}


def test_passing_run_validates_each_shard_and_the_run_metrics(storage_uri):
    shards = [[doc(i) for i in range(k, k + 6)] for k in (0, 6, 12)]
    run, uris = make_run(storage_uri, shards, removed={"too_short": 2}, exact=1, near=1,
                         max_duplicate_rate=0.2, word_quantiles={"p50": {"min": 10, "max": 30}},
                         max_share={"format": 0.5}, min_share={"format": 0.2})
    result = gate(run, uris)
    assert result["stats"]["passed"] is True
    report = storage.read_json(run.layout.output("quality_gate", "report"))
    m = report["metrics"]
    assert m["documents"] == 18 and m["generated"] == 22 and m["filtered_share"] == round(4 / 22, 6)
    assert m["filtered_share_too_short"] == round(2 / 22, 6) and m["duplicate_rate"] == 0.1
    assert m["n_words_p50"] == 20 and m["format_max_share"] == m["format_min_share"] == round(6 / 18, 6)
    assert m["duplicate_text_hashes"] == 0
    # One GX validation + Data Docs per shard, one for the run metrics, all kept with the run.
    assert [s["shard"] for s in report["shards"]] == ["shard-00000", "shard-00001", "shard-00002"]
    for s in report["shards"]:
        assert s["passed"] and s["rows"] == 6
    # One Data Docs site shows every shard's validation and the run metrics.
    index = storage.read_bytes(report["data_docs"]).decode()
    for name in ("shard-00000", "shard-00001", "shard-00002", "run_metrics"):
        assert name in index
    validations = storage.join(run.layout.output("quality_gate", "data_docs"), "validations")
    pages = [u for u in storage.list_files(validations) if u.endswith(".html")]
    assert len(pages) == 4
    # The readable-offline report page lists every expectation and links every Data Docs page.
    html = storage.read_bytes(run.layout.output("quality_gate", "report_html")).decode()
    assert "Quality gate PASSED" in html and html.count("<tr class=\"ok\">") == len(report["expectations"])
    for page in pages:
        assert "data_docs/" + page.split("/quality_gate/data_docs/", 1)[1] in html
    validation = storage.read_json(run.layout.output("quality_gate", "validation"))
    assert set(validation["shards"]) == {"shard-00000", "shard-00001", "shard-00002"}
    assert all(storage.exists(u) for u in validation["shards"].values())
    docs_line = next(e for e in report["expectations"] if e["column"] == "n_words" and e["batch"] == "documents")
    assert docs_line["observed"]["element_count"] == 18 and docs_line["success"]


def test_report_links_resolve_when_the_storage_path_has_a_space(tmp_path, monkeypatch):
    """Path.as_uri() percent-encodes a space; the report's links are relative and must still resolve."""
    import re
    from urllib.parse import unquote

    uri = (tmp_path / "my storage").as_uri()
    monkeypatch.setenv("SYNTHCORPUS_STORAGE_URI", uri)
    run, _ = make_run(uri, [[doc(i) for i in range(4)], [doc(i) for i in range(4, 8)]])
    gate(run, None)
    html_uri = run.layout.output("quality_gate", "report_html")
    links = re.findall(r'href="(data_docs/[^"]+)"', storage.read_bytes(html_uri).decode())
    pages = [u for u in links if "/validations/" in u]
    assert len(pages) == 3  # two shards and the run metrics
    here = tmp_path / "my storage" / run.spec.name / "runs" / run.run_id / "quality_gate"
    assert all((here / unquote(link)).is_file() for link in links), links


def test_run_metrics_do_not_depend_on_sharding(storage_uri):
    docs = [doc(i, n_words=10 + i) for i in range(12)]
    one, u1 = make_run(storage_uri, [docs], run_id="one")
    many, u4 = make_run(storage_uri, [docs[0:3], docs[3:6], [], docs[6:12]], run_id="many")
    a = gate(one, u1)["stats"]
    b = gate(many, u4)["stats"]
    assert {k: v for k, v in a.items() if k != "generated"} == {k: v for k, v in b.items() if k != "generated"}


def test_validate_shard_is_reused_on_rerun(storage_uri):
    run, _ = make_run(storage_uri, [[doc(i) for i in range(4)]])
    first = execute(run, "validate_shard", 0)
    # The completion protocol: a committed shard's marker is returned, the shard is not validated again.
    storage.write_json(run.layout.marker("validate_shard", 0), {**first, "stats": {**first["stats"], "rows": 999}})
    assert execute(run, "validate_shard", 0)["stats"]["rows"] == 999  # not recomputed


# Each family of run-level expectations fails on its own: (thresholds, run setup, failing column).
FAMILIES = {
    "row count": ({"min_documents": 50}, {}, "documents"),
    "filtered share": ({"max_filtered_share": 0.1}, {"removed": {"truncated": 5}}, "filtered_share"),
    "filtered share per reason": ({"max_filtered_share_by_reason": {"truncated": 0.1}}, {"removed": {"truncated": 3}},
                                  "filtered_share_truncated"),
    "duplicate rate": ({"max_duplicate_rate": 0.05}, {"exact": 2, "near": 2}, "duplicate_rate"),
    "contamination": ({"max_contaminated": 0}, {"decontam": {"removed": 2}}, "contaminated"),
    "canaries": ({"decontamination": {"references": [{"path": str(INCLUDE / "seeds" / "demo_benchmark.jsonl"),
                                                      "text_columns": ["question"]}],
                                      "canaries": str(INCLUDE / "seeds" / "demo_canaries.jsonl")}},
                 {"decontam": {"canaries_missed": ["c1"]}}, "canaries_missed"),
    "language match": ({"min_language_match_rate": 0.9}, {"confusion": {"en": {"en": 6, "fr": 6}}}, "language_match_rate"),
    "length quantile": ({"word_quantiles": {"p95": {"max": 15}}}, {}, "n_words_p95"),
    "balance max": ({"max_share": {"format": 0.4}}, {"fmt": "story"}, "format_max_share"),
    "balance min": ({"min_share": {"format": 0.1}}, {"fmt": "story"}, "format_min_share"),
    "opening concentration": ({"max_opening_share": 0.5}, {"same_opening": True}, "max_opening_share"),
    "user expectation": ({"expectations": [{"batch": "run_metrics", "type": "expect_column_values_to_be_between",
                                            "kwargs": {"column": "n_words_p50", "min_value": 100}}]}, {}, "n_words_p50"),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_run_metric_family_fails_the_gate_and_publishes_nothing(storage_uri, family):
    quality, setup, column = FAMILIES[family]
    setup = dict(setup)
    fmt = setup.pop("fmt", None)
    same = setup.pop("same_opening", False)
    rows = [doc(i, fmt=fmt, text=(f"the same opening words for every one of them {i} " + "filler " * 12) if same else None)
            for i in range(12)]
    if same:
        rows = [{**r, "n_words": len(r["text"].split())} for r in rows]
    run, uris = make_run(storage_uri, [rows[:6], rows[6:]], **setup, **quality)
    with pytest.raises(GateFailed) as err:
        gate(run, uris)
    assert column in failed_columns(err.value), err.value.report.table()
    assert "FAILED" in str(err.value) and column in str(err.value)
    assert storage.exists(run.layout.quarantine)
    with pytest.raises(PublishError):
        publish.run(run)
    assert not storage.exists(run.layout.latest) and not storage.exists(run.layout.manifest)


def test_a_bad_shard_is_named_in_the_failure(storage_uri):
    good = [doc(i) for i in range(4)]
    bad = [doc(10), doc(11, n_words=3000), {**doc(12), "language": "xx"}]
    run, uris = make_run(storage_uri, [good, bad, [doc(20)]])
    with pytest.raises(GateFailed) as err:
        gate(run, uris)
    failures = {f["column"]: f for f in err.value.report.failures()}
    assert set(failures) == {"n_words", "language"}
    assert failures["n_words"]["observed"]["failed_shards"] == ["shard-00001"]
    assert failures["n_words"]["observed"]["unexpected_count"] == 1
    assert "in shard-00001" in str(err.value)
    html = storage.read_bytes(run.layout.output("quality_gate", "report_html")).decode()
    assert "Quality gate FAILED" in html and html.count('<tr class="failed">') == 2 and "shard-00001" in html
    shards = storage.read_json(run.layout.output("quality_gate", "report"))["shards"]
    assert [s["passed"] for s in shards] == [True, False, True]


def test_duplicate_across_shards_is_caught_at_run_level(storage_uri):
    a = doc(1)
    run, uris = make_run(storage_uri, [[a, doc(2)], [{**a, "prompt_id": "copy"}]])
    with pytest.raises(GateFailed) as err:
        gate(run, uris)
    assert failed_columns(err.value) == {"duplicate_text_hashes"}  # each shard on its own is unique


def test_override_publishes_and_records_the_reason(tmp_path, storage_uri):
    # The whole run (fake engine): the gate fails, publish refuses; the same run with the override publishes.
    from synthcorpus.stages.runner import run_pipeline
    from tests.conftest import write_spec
    from tests.fakes import FakeEngine

    spec_path = str(write_spec(tmp_path, tiny_spec_dict(documents=6, **{"quality.min_documents": 50})))
    with pytest.raises(GateFailed):
        run_pipeline(spec_path, "r1", engine=FakeEngine(), until="publish")
    reason = "known small pilot run; approved by data lead"
    out = run_pipeline(spec_path, "r1", {"override_gate_reason": reason}, engine=FakeEngine(), until="publish")
    gate_stats = out["quality_gate"]["stats"]
    assert gate_stats["passed"] is False and gate_stats["override"]["reason"].startswith("known small pilot")
    assert "expect_column_values_to_be_between (documents)" in gate_stats["override"]["failed_expectations"]
    assert out["publish"]["stats"]["rows"] == 6 and out["publish"]["stats"]["gate"] == "overridden"
    card = storage.read_bytes(out["publish"]["outputs"]["version"] + "/README.md").decode()
    assert "override" in card and "known small pilot" in card


def test_user_expectation_on_the_same_column_as_a_builtin_one_is_reported_apart(storage_uri):
    user = {"batch": "documents", "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "n_words", "min_value": 100}}
    # GX merges an expectation identical to a built-in one and reorders stored suites: every check still
    # gets its own line, matched by type and arguments.
    copy = {"batch": "documents", "type": "expect_column_values_to_be_in_set",
            "kwargs": {"column": "format", "value_set": FORMATS}}
    regex = {"batch": "documents", "type": "expect_column_values_to_match_regex", "kwargs": {"column": "text", "regex": "^w"}}
    run, uris = make_run(storage_uri, [[doc(i) for i in range(4)], [doc(9)]], expectations=[copy, user, regex])
    with pytest.raises(GateFailed) as err:
        gate(run, uris)
    lines = [e for e in err.value.report.expectations if e["column"] == "n_words"]
    assert [(e["expected"], e["success"]) for e in lines] == [("between 5 and 2000", True), ("min_value=100 (spec)", False)]
    assert lines[1]["observed"]["unexpected_count"] == 5
    assert lines[1]["observed"]["failed_shards"] == ["shard-00000", "shard-00001"]
    formats = [e for e in err.value.report.expectations if e["column"] == "format"]
    assert [e["success"] for e in formats] == [True, True] and formats[1]["expected"].endswith("(spec)")
    assert [e["success"] for e in err.value.report.expectations if e["column"] == "text"] == [True, True]
    assert len(err.value.report.failures()) == 1

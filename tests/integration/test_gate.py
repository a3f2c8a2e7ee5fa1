"""The quality gate against real Great Expectations: one passing dataset, one failure per family."""

from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from synthcorpus.quality.gate import Check, GateFailed, QualityReport, between, validate


def suite(min_documents: int = 3, max_filtered_share: float = 0.5, min_words: int = 5, max_words: int = 50,
          max_opening_share: float | None = None, check_canaries: bool = False,
          min_language_match_rate: float | None = None) -> list[Check]:
    """A small fixed suite on both batches (the release suite of a spec is quality.release.release_checks)."""
    out = [
        Check("documents", "expect_table_row_count_to_be_between", {"min_value": min_documents}, f">= {min_documents}"),
        Check("documents", "expect_column_values_to_not_be_null", {"column": "text"}, "not null"),
        between("documents", "n_words", min_words, max_words),
        Check("documents", "expect_column_values_to_be_unique", {"column": "text_hash"}, "unique"),
        between("run_metrics", "filtered_share", 0, max_filtered_share),
    ]
    if min_language_match_rate is not None:
        out.append(between("run_metrics", "language_match_rate", min_language_match_rate, None))
    if check_canaries:
        out.append(between("run_metrics", "canaries_missed", 0, 0, "0 (all caught)"))
    if max_opening_share is not None:
        out.append(between("run_metrics", "max_opening_share", 0, max_opening_share))
    return out


THRESHOLDS = suite()


def validate_gate(documents: pd.DataFrame, run_metrics: dict, checks: list[Check], workdir, suite_name: str) -> QualityReport:
    return validate({"documents": documents, "run_metrics": pd.DataFrame([dict(run_metrics)])}, checks, workdir, suite_name)
METRICS = {"generated": 5, "documents": 4, "filtered_share": 0.2}


def make_docs(n: int = 4, n_words: int = 8) -> pd.DataFrame:
    texts = [" ".join(f"word{i}_{j}" for j in range(n_words)) for i in range(n)]
    return pd.DataFrame({
        "text": texts,
        "n_words": [n_words] * n,
        "text_hash": [hashlib.sha256(t.encode()).hexdigest() for t in texts],
    })


def gate(tmp_path, documents, metrics=METRICS, name="corpus_gate") -> QualityReport:
    return validate_gate(documents, metrics, THRESHOLDS, tmp_path / "gx_work", name)


def failure(report: QualityReport, expectation: str, column: str | None = None) -> dict:
    matches = [f for f in report.failures() if f["expectation"] == expectation and f["column"] == column]
    assert matches, f"{expectation}({column}) did not fail:\n{report.table()}"
    return matches[0]


def assert_artifacts(report: QualityReport) -> None:
    json.dumps(report.validation)
    json.dumps(report.to_dict())
    assert report.data_docs_dir is not None and (report.data_docs_dir / "index.html").exists()


def assert_gate_failed(report: QualityReport, expectation: str) -> None:
    assert not report.passed
    message = str(GateFailed(report))
    assert expectation in message and "FAILED" in message
    assert_artifacts(report)


def test_passing_dataset(tmp_path):
    report = gate(tmp_path, make_docs())
    assert report.passed, report.table()
    assert report.failures() == []
    counts = report.to_dict()["counts"]
    assert counts == {"evaluated": 5, "successful": 5, "failed": 0}
    assert {(e["batch"], e["expectation"], e["column"]) for e in report.expectations} == {
        ("documents", "expect_table_row_count_to_be_between", None),
        ("documents", "expect_column_values_to_not_be_null", "text"),
        ("documents", "expect_column_values_to_be_between", "n_words"),
        ("documents", "expect_column_values_to_be_unique", "text_hash"),
        ("run_metrics", "expect_column_values_to_be_between", "filtered_share"),
    }
    row_count = next(e for e in report.expectations if e["expectation"] == "expect_table_row_count_to_be_between")
    assert row_count["observed"] == 4 and row_count["expected"] == ">= 3"
    assert report.validation["success"] is True
    assert set(report.validation["results"]) == {"documents", "run_metrics"}
    assert "expect_column_values_to_be_unique" in report.table()
    assert_artifacts(report)


def test_too_few_documents(tmp_path):
    report = gate(tmp_path, make_docs(n=2))
    f = failure(report, "expect_table_row_count_to_be_between")
    assert f["observed"] == 2 and f["expected"] == ">= 3"
    assert len(report.failures()) == 1
    assert_gate_failed(report, "expect_table_row_count_to_be_between")


def test_duplicate_text_hash(tmp_path):
    docs = make_docs()
    docs.loc[3, "text_hash"] = docs.loc[0, "text_hash"]
    report = gate(tmp_path, docs)
    f = failure(report, "expect_column_values_to_be_unique", "text_hash")
    assert f["observed"]["unexpected_count"] == 2
    assert docs.loc[0, "text_hash"][:40] in f["observed"]["unexpected_examples"]
    assert_gate_failed(report, "expect_column_values_to_be_unique")


def test_document_below_min_words(tmp_path):
    docs = make_docs()
    docs.loc[1, "n_words"] = 2
    report = gate(tmp_path, docs)
    f = failure(report, "expect_column_values_to_be_between", "n_words")
    assert f["observed"]["unexpected_count"] == 1
    assert f["observed"]["unexpected_examples"] == ["2"]
    assert f["expected"] == "between 5 and 50"
    assert_gate_failed(report, "expect_column_values_to_be_between")


def test_null_text(tmp_path):
    docs = make_docs()
    docs.loc[2, "text"] = None
    report = gate(tmp_path, docs)
    assert failure(report, "expect_column_values_to_not_be_null", "text")["observed"]["unexpected_count"] == 1
    assert_gate_failed(report, "expect_column_values_to_not_be_null")


def test_filtered_share_above_max(tmp_path):
    report = gate(tmp_path, make_docs(), metrics={"generated": 10, "documents": 4, "filtered_share": 0.6})
    f = failure(report, "expect_column_values_to_be_between", "filtered_share")
    assert f["batch"] == "run_metrics" and f["observed"] == 0.6 and f["expected"] == "between 0 and 0.5"
    assert [x["batch"] for x in report.failures()] == ["run_metrics"]
    assert_gate_failed(report, "filtered_share")


@pytest.mark.parametrize("empty", [pd.DataFrame(), pd.DataFrame(columns=["text", "n_words", "text_hash"])],
                         ids=["no-columns", "with-columns"])
def test_empty_documents(tmp_path, empty):
    report = gate(tmp_path, empty, metrics={"generated": 3, "documents": 0, "filtered_share": 0.0})
    f = failure(report, "expect_table_row_count_to_be_between")
    assert f["observed"] == 0
    assert [x["expectation"] for x in report.failures()] == ["expect_table_row_count_to_be_between"]
    assert_gate_failed(report, "expect_table_row_count_to_be_between")


def test_two_workdirs_in_one_process_and_rerun(tmp_path):
    first = validate_gate(make_docs(), METRICS, THRESHOLDS, tmp_path / "a", "same_name")
    second = validate_gate(make_docs(n=1), METRICS, THRESHOLDS, tmp_path / "b", "same_name")
    again = validate_gate(make_docs(), METRICS, THRESHOLDS, tmp_path / "a", "same_name")  # reused workdir
    assert first.passed and not second.passed and again.passed
    assert first.data_docs_dir != second.data_docs_dir
    assert first.data_docs_dir.is_relative_to(tmp_path / "a") and second.data_docs_dir.is_relative_to(tmp_path / "b")
    for report in (first, second, again):
        assert_artifacts(report)


def test_optional_run_metric_expectations(tmp_path):
    """Opening concentration, canaries and language match are checked only when the spec asks."""
    thresholds = suite(max_opening_share=0.25, check_canaries=True, min_language_match_rate=0.9)
    metrics = {**METRICS, "max_opening_share": 0.5, "canaries_missed": 2, "language_match_rate": 0.6}
    report = validate_gate(make_docs(), metrics, thresholds, tmp_path / "gx", "optional")
    failed = {f["column"]: f for f in report.failures()}
    assert set(failed) == {"max_opening_share", "canaries_missed", "language_match_rate"}
    assert failed["language_match_rate"]["observed"] == 0.6 and failed["language_match_rate"]["expected"] == ">= 0.9"
    assert failed["canaries_missed"]["observed"] == 2
    ok = validate_gate(make_docs(), {**METRICS, "max_opening_share": 0.1, "canaries_missed": 0,
                                        "language_match_rate": 1.0}, thresholds, tmp_path / "gx2", "optional2")
    assert ok.passed and len(ok.expectations) == 8


def test_expectation_catalog_matches_installed_gx():
    """The JSON catalog that validates spec expectations without importing GX is up to date."""
    from synthcorpus.spec import gx_catalog

    assert gx_catalog.load() == gx_catalog.build(), "regenerate: python -m synthcorpus.spec.gx_catalog"

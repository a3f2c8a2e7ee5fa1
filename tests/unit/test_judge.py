"""The LLM judge with fake engines: the strict reply format, retries, unscored rows with reasons, the
refine loop (rounds, best-of, rejected rewrites, provenance), scores as data (published columns, run
metrics, lineage), the gate on scores and the budget stop. One run with the real bundled model is in
tests/integration/test_judge_model.py."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from synthcorpus import storage
from synthcorpus.engines import Completion, EngineError, SamplingParams
from synthcorpus.judge import Judge, ReplyError, Verdict, judge_one, overall, parse_reply, weak
from synthcorpus.quality.gate import GateFailed
from synthcorpus.spec import SpecError, load_spec
from synthcorpus.stages.contract import open_run, results
from synthcorpus.stages.runner import run_pipeline
from synthcorpus.summary import run_summary
from tests.conftest import tiny_spec_dict, write_spec
from tests.fakes import FakeJudgeEngine

GOOD = "educational_value: 3\ncoherence: 4\nfaithfulness: 5\naudience_fit: 2\ncritique: Add an example."
PARAMS = SamplingParams(max_tokens=64, temperature=0.0, top_p=1.0)


class Replies:
    """An engine that answers with the given replies in order (an EngineError instance is raised)."""

    name = "replies"

    def __init__(self, *replies):
        self.replies = list(replies)
        self.seeds: list[int] = []
        self.temperatures: list[float] = []

    def generate(self, prompt, params, seed):
        self.seeds.append(seed)
        self.temperatures.append(params.temperature)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Completion(reply, "stop", 10, 5, 0.0)


def test_the_strict_line_format_parses():
    assert parse_reply(GOOD) == ({"educational_value": 3, "coherence": 4, "faithfulness": 5, "audience_fit": 2}, "Add an example.")
    # blank lines and the case of the keys do not matter; the order of the scores does not either
    scores, critique = parse_reply("\nCoherence: 4\n\nEducational_Value: 3\nfaithfulness:5\naudience_fit : 2\nCRITIQUE: ok\n")
    assert scores["coherence"] == 4 and scores["faithfulness"] == 5 and critique == "ok"


@pytest.mark.parametrize("reply, message", [
    ("", "expected a score for educational_value, coherence, faithfulness, audience_fit"),
    (GOOD.replace("coherence: 4\n", ""), "expected a score for coherence"),
    (GOOD.replace("coherence: 4", "coherence: 6"), "coherence: expected an integer from 0 to 5, got '6'"),
    (GOOD.replace("coherence: 4", "coherence: 3.5"), "coherence: expected an integer"),
    (GOOD.replace("coherence: 4", "coherence: 4\ncoherence: 2"), "expected one coherence line, got two"),
    ("Sure! Here are my scores:\n" + GOOD, "expected '<dimension>: <0-5>' or 'critique: <text>'"),
    (GOOD.replace("critique: Add an example.", "critique:"), "expected a non-empty critique"),
    (GOOD.replace("\ncritique: Add an example.", ""), "expected a last line 'critique: <text>'"),
    (GOOD + "\nThanks!", "expected nothing after the critique line"),
    ("**educational_value**: 3", "expected '<dimension>: <0-5>'"),
])
def test_malformed_replies_say_what_is_wrong(reply, message):
    with pytest.raises(ReplyError, match=message.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        parse_reply(reply)


def test_a_malformed_reply_is_asked_again_with_a_new_seed():
    engine = Replies("not scores", GOOD)
    verdict = judge_one(engine, "p", PARAMS, retries=2, seed=7)
    assert verdict.scores["faithfulness"] == 5 and verdict.error is None and verdict.attempts == 2
    assert engine.seeds == [7, 8] and verdict.completion_tokens == 10
    # the first ask at the judge's temperature (0: greedy), the re-ask warmer (greedy would repeat itself)
    assert engine.temperatures == [0.0, 0.7]


def test_after_the_retries_a_document_is_unscored_with_the_reason():
    verdict = judge_one(Replies("nope", EngineError("server said 500"), "still nope"), "p", PARAMS, retries=2, seed=0)
    assert verdict.scores is None and verdict.attempts == 3
    assert verdict.error.startswith("malformed reply: expected '<dimension>")
    verdict = judge_one(Replies(EngineError("server said 500")), "p", PARAMS, retries=0, seed=0)
    assert verdict.error == "engine: server said 500"


def _judge(engine, *, max_rounds=2, check=lambda row, text: None):
    return Judge(engine=engine, judge_params=PARAMS, rewrite_params=PARAMS, thresholds={"coherence": 3},
                 max_rounds=max_rounds, retries=0, render_judge=lambda row, text: f"J|{text}",
                 render_rewrite=lambda row, text, v: f"R|{text}|{v.critique}", check=check)


def scores(c: int, e: int = 3) -> str:
    return f"educational_value: {e}\ncoherence: {c}\nfaithfulness: 3\naudience_fit: 3\ncritique: coherence {c}"


def test_weak_documents_are_rewritten_until_good_and_every_round_is_kept():
    engine = Replies(scores(1), "second try", scores(2), "third try", scores(4))
    judged = _judge(engine)({"text": "first try"}, seed=0)
    assert judged.text == "third try" and judged.refined and judged.verdict.scores["coherence"] == 4
    assert [(r["round"], r["scores"]["coherence"], r.get("kept")) for r in judged.rounds] == [(0, 1, None), (1, 2, True), (2, 4, True)]
    assert judged.judge_tokens == (30, 15) and judged.rewrite_tokens == (20, 10)


def test_the_best_version_is_kept_and_rounds_are_bounded():
    engine = Replies(scores(2, e=4), "worse", scores(1, e=1))  # the rewrite scores lower: the original stays
    judged = _judge(engine, max_rounds=1)({"text": "original"}, seed=0)
    assert judged.text == "original" and not judged.refined and judged.verdict.scores["coherence"] == 2
    assert judged.rounds[1]["kept"] is False and len(judged.rounds) == 2


def test_a_rewrite_the_filters_reject_is_recorded_and_not_judged():
    engine = Replies(scores(1), "a refusal", "better text", scores(4))
    judged = _judge(engine, check=lambda row, text: "refusal" if "refusal" in text else None)({"text": "x"}, seed=0)
    assert judged.rounds[1] == {"round": 1, "status": "rewrite_rejected", "reason": "refusal", "rewrite_tokens": 5}
    assert judged.text == "better text" and judged.rounds[2]["kept"] is True


def test_good_and_unscored_documents_are_not_rewritten():
    assert not weak({"educational_value": 3, "coherence": 3, "faithfulness": 0, "audience_fit": 0}, {"coherence": 3})
    assert weak({"coherence": 2}, {"coherence": 3}) and not weak(None, {"coherence": 3})
    engine = Replies("garbage")
    judged = _judge(engine)({"text": "x"}, seed=0)
    assert judged.verdict.scores is None and len(judged.rounds) == 1 and engine.replies == []
    assert overall({"educational_value": 1, "coherence": 2, "faithfulness": 3, "audience_fit": 4}) == 2.5


# ------------------------------------------------------------------------------ in the pipeline

def judged_spec(tmp_path, **judge) -> str:
    cfg = {"enabled": True, "max_rounds": 1, "thresholds": {"coherence": 3}, **judge}
    return str(write_spec(tmp_path, tiny_spec_dict(name="judged", documents=6, **{"judge": cfg})))


def test_the_judge_in_the_pipeline_scores_refines_and_publishes_scores(tmp_path, storage_uri):
    path = judged_spec(tmp_path, gate={"min_mean": {"coherence": 3}, "max_unscored_share": 0.0, "by": ["format"]})
    engine = FakeJudgeEngine()
    out = run_pipeline(path, "j1", engine=engine, until="publish")
    run = open_run(path, "j1")
    markers = results(run, "judge")
    prompt_ids = [p for m in markers for p in pq.read_table(m["outputs"]["documents"].removeprefix("file://")).column("prompt_id").to_pylist()]
    filtered = [p for m in results(run, "filter_shard")
                for p in pq.read_table(m["outputs"]["documents"].removeprefix("file://")).column("prompt_id").to_pylist()]
    assert prompt_ids == filtered and len(set(prompt_ids)) == len(prompt_ids)  # every row once, none lost
    rows = [r for m in markers for r in pq.read_table(m["outputs"]["documents"].removeprefix("file://")).to_pylist()]
    refined = [r for r in rows if r["refined"]]
    assert refined and all(" river " not in f" {r['text'].lower()} " for r in refined)
    for r in refined:  # why it changed: the round-0 critique and scores, then the rewrite's
        rounds = json.loads(r["judge_rounds"])
        assert rounds[0]["critique"] == "mentions the river too often" and rounds[0]["scores"]["coherence"] == 1
        assert rounds[1]["scores"]["coherence"] == 4 and rounds[1]["kept"] is True
        assert r["text_before_refine"] and r["score_coherence"] == 4
        from synthcorpus.quality.filters import text_hash

        assert r["text_hash"] == text_hash(r["text"])
    published = pq.read_table(out["publish"]["outputs"]["version"].removeprefix("file://") + "/data").to_pylist()
    assert {"score_educational_value", "score_coherence", "score_faithfulness", "score_audience_fit", "score_overall",
            "judge_status", "refined"} <= set(published[0])
    assert all(r["judge_status"] == "scored" for r in published)
    report = storage.read_json(run.layout.output("quality_gate", "report"))
    metrics = report["metrics"]
    mean = sum(r["score_coherence"] for r in published) / len(published)
    assert metrics["score_coherence_mean"] == pytest.approx(mean, abs=1e-3)
    assert metrics["judge_unscored_share"] == 0.0 and metrics["judged"] == len(published)
    expectations = {e["column"] for e in report["expectations"]}
    assert {"score_coherence_mean", "judge_unscored_share", "score_coherence_mean_format_textbook"} <= expectations
    lineage = storage.read_json(run.layout.lineage)
    judge = lineage["judge"]
    assert judge["scored"] == judge["input"] == len(rows) and judge["refined"] == len(refined)
    assert judge["judge_completion_tokens"] == 20 * len(engine.judge_calls)
    assert judge["rewrite_completion_tokens"] == 80 * len(engine.rewrite_calls) > 0
    generation_tokens = sum(m["stats"]["completion_tokens"] for m in results(run, "generate"))
    assert lineage["counts"]["completion_tokens"] == generation_tokens  # generation's, apart from the judge's
    assert lineage["budget"]["used"]["completion_tokens"] == (generation_tokens + judge["judge_completion_tokens"]
                                                              + judge["rewrite_completion_tokens"])
    card = storage.read_bytes(run.layout.dataset_card).decode()
    assert "## Judge scores" in card and f"| coherence | {metrics['score_coherence_mean']:g} |" in card.replace(".0 |", " |")
    from synthcorpus.observability import stage_metrics
    from synthcorpus.summary import run_summary

    text = run_summary(run.spec, "j1")
    assert f"judge       smollm2-135m-instruct: {len(rows)}/{len(rows)} scored, {len(refined)} refined; mean " in text
    sent = dict((n, v) for _, n, v in stage_metrics("judged", "judge", markers[0]))
    assert sent["synthcorpus.judged.judge.scored"] == markers[0]["stats"]["scored"]


def test_the_gate_fails_on_low_scores(tmp_path, storage_uri):
    path = judged_spec(tmp_path, max_rounds=0, gate={"min_mean": {"coherence": 3.5}})
    with pytest.raises(GateFailed, match="1 expectation"):
        run_pipeline(path, "j2", engine=FakeJudgeEngine(), until="publish")
    report = storage.read_json(open_run(path, "j2").layout.output("quality_gate", "report"))
    (failed,) = [e for e in report["expectations"] if not e["success"]]
    assert failed["column"] == "score_coherence_mean" and failed["expected"] == "between 3.5 and 5"


def test_unparseable_judges_leave_documents_unscored_and_the_gate_says_so(tmp_path, storage_uri):
    path = judged_spec(tmp_path, max_retries=1, gate={"max_unscored_share": 0.5})
    with pytest.raises(GateFailed):
        run_pipeline(path, "j3", engine=FakeJudgeEngine(malformed=5), until="publish")
    run = open_run(path, "j3")
    stats = [m["stats"] for m in results(run, "judge")]
    assert sum(s["scored"] for s in stats) == 0 and sum(s["unscored_reasons"]["malformed_reply"] for s in stats) == 6
    report = storage.read_json(run.layout.output("quality_gate", "report"))
    assert report["metrics"]["judge_unscored_share"] == 1.0


def test_the_budget_stops_the_judge(tmp_path, storage_uri):
    path = str(write_spec(tmp_path, tiny_spec_dict(name="judged", documents=6, **{
        "judge": {"enabled": True, "max_rounds": 0}, "generation.budget": {"max_completion_tokens": 6 * 80 + 30}})))
    run_pipeline(path, "j4", engine=FakeJudgeEngine(), until="top_up")
    run = open_run(path, "j4")
    stats = [m["stats"] for m in results(run, "judge")]
    assert sum(s["scored"] for s in stats) == 2  # 480 generation + 2 x 20 judge tokens reach 510
    assert sum(s["unscored_reasons"].get("budget", 0) for s in stats) == 4
    assert any(s["stopped_by_budget"] == ["max_completion_tokens"] for s in stats)


def test_judge_settings_are_checked(tmp_path):
    with pytest.raises(SpecError, match="judged.yaml: judge: thresholds.coherence: expected a score between 0 and 5, got 7"):
        load_spec(judged_spec(tmp_path, thresholds={"coherence": 7}))
    with pytest.raises(SpecError, match="judge: gate.max_share_below: expected a threshold for faithfulness in judge.thresholds"):
        load_spec(judged_spec(tmp_path, thresholds={"coherence": 3}, gate={"max_share_below": {"faithfulness": 0.2}}))
    with pytest.raises(SpecError, match="judge.thresholds.clarity"):
        load_spec(judged_spec(tmp_path, thresholds={"clarity": 3}))
    spec = load_spec(judged_spec(tmp_path))
    assert spec.judge.enabled and spec.pool("judge") == "synthcorpus_cpu_generate"
    assert load_spec(write_spec(tmp_path, tiny_spec_dict())).judge.enabled is False


def test_a_judge_that_scores_nothing_cannot_pass_a_score_expectation(tmp_path, storage_uri):
    path = judged_spec(tmp_path, max_retries=0, max_rounds=0, gate={"min_mean": {"coherence": 1}})
    with pytest.raises(GateFailed):
        run_pipeline(path, "j5", engine=FakeJudgeEngine(malformed=5), until="publish")
    run = open_run(path, "j5")
    report = storage.read_json(run.layout.output("quality_gate", "report"))
    (failed,) = [e for e in report["expectations"] if not e["success"]]
    assert failed["column"] == "score_coherence_mean" and report["metrics"]["score_coherence_mean"] is None
    assert "NOT ONE document scored" in run_summary(run.spec, "j5")


def test_the_run_page_shows_the_judges_scores_or_says_it_gave_none(tmp_path, storage_uri):
    from synthcorpus.ui import charts, data, pages

    path = judged_spec(tmp_path)
    run_pipeline(path, "j6", engine=FakeJudgeEngine(), until="publish")
    spec = open_run(path, "j6").spec
    report = data.run_report(spec, "j6")
    judge = report["judge"]
    metrics = report["gate"]["metrics"]
    assert judge["scored"] == judge["input"] > 0
    assert judge["means"]["coherence"] == pytest.approx(metrics["score_coherence_mean"], abs=0.01)
    assert sum(judge["histogram"]["coherence"]) == metrics["judged"]
    assert set(judge["mean_by"]["format"]) == {k.rsplit("_format_", 1)[1] for k in metrics
                                                if k.startswith("score_coherence_mean_format_") and metrics[k] is not None}
    page = pages.run_page("/corpora", report, "manual__1")
    assert 'id="judge-scores"' in page and 'id="judge-none"' not in page and "score-chart-1" in page
    assert f"scored <b>{judge['scored']} of {judge['input']}</b>" in page
    assert charts.score_charts(judge)[0]["data"][0]["y"] == judge["histogram"]["educational_value"]

    (tmp_path / "none").mkdir()
    path = judged_spec(tmp_path / "none", max_retries=0, max_rounds=0)
    run_pipeline(path, "j7", engine=FakeJudgeEngine(malformed=5), until="quality_gate")
    report = data.run_report(open_run(path, "j7").spec, "j7")
    page = pages.run_page("/corpora", report, "manual__2")
    assert report["judge"]["scored"] == 0 and 'id="judge-none"' in page and "score-chart-" not in page
    assert "malformed reply" in page

"""benchmarks/judge_eval.py with fake judges: the AUC (Mann-Whitney, ties half), the planted set's
construction, and the whole evaluation on the real judge template -- a perfect fake judge ranks at AUC 1.0,
a constant one and one that never parses at 0.5."""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from pathlib import Path

import pytest

from synthcorpus.engines import Completion
from synthcorpus.prompts import environment

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("judge_eval", ROOT / "benchmarks" / "judge_eval.py")
judge_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(judge_eval)


def reply(score: int) -> str:
    return (f"educational_value: {score}\ncoherence: {score}\nfaithfulness: {score}\naudience_fit: {score}\n"
            f"critique: fine")


class Fake:
    """Answers the judge prompt from a planted marker: ``score(prompt)`` -> an int, or None for a reply that
    is not the rubric's format."""

    name = "fake"

    def __init__(self, score):
        self.score, self.prompts = score, []

    def generate(self, prompt, params, seed):
        self.prompts.append(prompt)
        s = self.score(prompt)
        text = "The document: Bees are small insects." if s is None else reply(s)
        return Completion(text, "stop", len(prompt.split()), 20, 0.0)


@pytest.fixture(scope="module")
def cases():
    return judge_eval.build_set(environment(judge_eval.TEMPLATE_DIR))


def test_auc_is_mann_whitney_with_ties_counting_half():
    assert judge_eval.auc([3, 4], [1, 2]) == 1.0
    assert judge_eval.auc([1, 2], [3, 4]) == 0.0
    assert judge_eval.auc([2, 2], [2, 2]) == 0.5
    assert judge_eval.auc([3, 1], [2]) == 0.5
    assert judge_eval.auc([3, 2], [2, 1]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert judge_eval.auc([], [1]) is None and judge_eval.auc([1], []) is None


def test_the_planted_set(cases):
    counts = Counter(c["defect"] for c in cases)
    assert counts == {"good": 8, "off_topic": 8, "wrong_audience": 4, "shuffled": 8, "wrong_language": 4, "repetitive": 8}
    good = {c["source"]: c for c in cases if c["defect"] == "good"}
    for c in good.values():
        assert 80 <= len(c["text"].split()) <= 150 and c["language"] == "en"
        assert c["prompt"].startswith(("Write a textbook section", "Write a blog post")) and c["topic"] in c["prompt"]
    for c in cases:
        g = good[c["source"]]
        if c["defect"] == "off_topic":  # the same text under another item's request, same audience
            assert c["text"] == g["text"] and c["topic"] != g["topic"] and c["audience"] == g["audience"]
        elif c["defect"] == "wrong_audience":
            assert c["text"] == g["text"] and g["audience"] == "college_students" and c["audience"] == "young_children"
            assert c["prompt"] != g["prompt"] and "young_children" not in c["prompt"] and "children" in c["prompt"]
        elif c["defect"] == "shuffled":
            assert c["text"] != g["text"] and sorted(judge_eval.sentences(c["text"])) == sorted(judge_eval.sentences(g["text"]))
            assert c["text"] == judge_eval.shuffled(g["text"])  # fixed seed
        elif c["defect"] == "wrong_language":
            assert c["text_language"] in ("fr", "de") and c["prompt"] == g["prompt"]
            assert not {"the", "and", "is", "of"} & set(re.findall(r"\w+", c["text"].lower()))
        elif c["defect"] == "repetitive":
            parts = judge_eval.sentences(c["text"])
            assert len(set(parts)) == 3 and len(parts) > 3 and c["text"].startswith(" ".join(judge_eval.sentences(g["text"])[:3]))


def test_a_perfect_fake_judge_ranks_every_defect_at_1_and_a_constant_one_at_half(cases):
    good_prompts: set[str] = set()
    recorder = Fake(lambda p: good_prompts.add(p) or 4)
    judge_eval.judge_cases(recorder, [c for c in cases if c["defect"] == "good"])
    # the real template, the stage's variables: the document and the request are in the prompt
    assert all("educational_value: <0-5>" in p for p in recorder.prompts)

    perfect = judge_eval.summarize(judge_eval.judge_cases(Fake(lambda p: 5 if p in good_prompts else 1), cases))
    assert {r["group"]: r["auc"] for r in perfect if r["group"] != "good"} == {
        **{d: 1.0 for d in judge_eval.DEFECTS}, "all bad": 1.0}
    assert all(r["unscored_share"] == 0 and r["reply_parse_share"] == 1 for r in perfect)

    constant = judge_eval.summarize(judge_eval.judge_cases(Fake(lambda p: 3), cases))
    assert all(r["auc"] == 0.5 and r["auc_scored_only"] == 0.5 for r in constant if r["group"] != "good")


def test_unscored_documents_count_as_the_lowest_score_and_are_reported(cases):
    never = Fake(lambda p: None)
    records = judge_eval.judge_cases(never, cases, retries=1)
    assert len(never.prompts) == 2 * len(cases)  # one re-ask each
    rows = judge_eval.summarize(records)
    assert all(r["auc"] == 0.5 and r["auc_scored_only"] is None and r["unscored_share"] == 1 and r["reply_parse_share"] == 0
               for r in rows if r["group"] != "good")
    assert records[0]["reply_texts"] == ["The document: Bees are small insects."] * 2
    # a judge that scores only the goods: unscored bad documents sit at 0, below every good scored above 0,
    # tied (half) with a good scored 0
    goods = [c for c in cases if c["defect"] == "good"]
    good_prompts: set[str] = set()
    judge_eval.judge_cases(Fake(lambda p: good_prompts.add(p) or 4), goods)
    for score, expected in ((2, 1.0), (0, 0.5)):
        only = Fake(lambda p: score if p in good_prompts else None)
        rows = {r["group"]: r for r in judge_eval.summarize(judge_eval.judge_cases(only, cases, retries=0))}
        assert rows["shuffled"]["auc"] == expected and rows["shuffled"]["unscored_share"] == 1
        assert rows["good"]["unscored_share"] == 0 and rows["all bad"]["auc_scored_only"] is None
    assert "| off_topic | 8 | 0.50 |" in judge_eval.table(list(rows.values()))

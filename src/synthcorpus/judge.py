"""The LLM judge and critique-driven refinement: the algorithm behind the ``judge`` stage.

- **Scoring.** ``include/prompts/<language>/judge.j2`` asks for a strict line format, one line per rubric
  dimension (``spec.judge.DIMENSIONS``, integers 0-5; educational value is an additive rubric, FineWeb-Edu
  style) and a last ``critique:`` line. :func:`parse_reply` accepts exactly that (blank lines and the
  case of the keys aside): a missing, repeated or out-of-range score, an unknown line or an empty
  critique is a malformed reply, re-asked with a new seed up to ``judge.max_retries`` times; then the
  document is kept **unscored** with the reason. The judge never invents a score.
- **Refinement.** A scored document below any of ``judge.thresholds`` is rewritten from itself and its
  critique (``rewrite.j2``), the rewrite must pass the same heuristic filters as a generated document,
  then it is judged again; up to ``judge.max_rounds`` rounds. The best-scoring version is kept (the
  original unless a rewrite scores higher overall); every round -- critique, scores, tokens, why a rewrite
  was rejected -- is kept in the row's ``judge_rounds`` (JSON), the original text in ``text_before_refine``.
  A row is never dropped or duplicated here: every prompt id leaves exactly once.
- **Accounting.** Judge and rewrite tokens are counted apart (``judge_*`` / ``rewrite_*``); the caller
  adds them to the run budget and stops judging when it is reached (remaining rows: unscored, ``budget``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .engines import Engine, EngineError, SamplingParams
from .spec.judge import DIMENSIONS, SCORE_MAX

SCORE_COLUMNS = tuple(f"score_{d}" for d in DIMENSIONS)
JUDGE_COLUMNS = (*SCORE_COLUMNS, "score_overall", "judge_status", "judge_error", "judge_critique", "judge_rounds",
                 "refined", "text_before_refine")
SCORED, UNSCORED = "scored", "unscored"
_LINE = re.compile(r"^\s*([A-Za-z_ ]+?)\s*:\s*(.*?)\s*$")
_WORDS = re.compile(r"\S+")


class ReplyError(ValueError):
    """A judge reply that is not the rubric's line format; the message says what was wrong."""


def parse_reply(text: str) -> tuple[dict[str, int], str]:
    """``(scores, critique)`` from a judge reply in the strict line format, else :class:`ReplyError`."""
    scores: dict[str, int] = {}
    critique: str | None = None
    for raw in (text or "").splitlines():
        if not raw.strip():
            continue
        if critique is not None:
            raise ReplyError(f"expected nothing after the critique line, got {raw.strip()[:40]!r}")
        m = _LINE.match(raw)
        key = m.group(1).strip().lower().replace(" ", "_") if m else None
        if key is None or (key not in DIMENSIONS and key != "critique"):
            raise ReplyError(f"expected '<dimension>: <0-{SCORE_MAX}>' or 'critique: <text>', got {raw.strip()[:40]!r}")
        value = m.group(2)
        if key == "critique":
            if not value:
                raise ReplyError("expected a non-empty critique")
            critique = value
            continue
        if key in scores:
            raise ReplyError(f"expected one {key} line, got two")
        if not re.fullmatch(r"\d+", value) or not 0 <= int(value) <= SCORE_MAX:
            raise ReplyError(f"{key}: expected an integer from 0 to {SCORE_MAX}, got {value[:20]!r}")
        scores[key] = int(value)
    missing = [d for d in DIMENSIONS if d not in scores]
    if missing:
        raise ReplyError(f"expected a score for {', '.join(missing)}")
    if critique is None:
        raise ReplyError("expected a last line 'critique: <text>'")
    return scores, critique


def overall(scores: dict[str, int] | None) -> float | None:
    return round(sum(scores[d] for d in DIMENSIONS) / len(DIMENSIONS), 3) if scores else None


def weak(scores: dict[str, int] | None, thresholds: dict[str, float]) -> bool:
    """A scored document below any threshold (unscored documents are not rewritten: nothing says why)."""
    return bool(scores) and any(scores[d] < t for d, t in thresholds.items())


def words(text: str, limit: int) -> str:
    found = _WORDS.findall(text or "")
    return " ".join(found[:limit]) + (" …" if len(found) > limit else "")


@dataclass
class Verdict:
    scores: dict[str, int] | None
    critique: str | None
    error: str | None = None
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


# Re-asks sample at least this warm: at temperature 0 a new seed changes nothing, and the same malformed
# reply comes back word for word (36 of 40 re-asks of the bundled model in benchmarks/judge_eval.py).
RETRY_TEMPERATURE = 0.7


def judge_one(engine: Engine, prompt: str, params: SamplingParams, *, retries: int, seed: int) -> Verdict:
    """Ask until the reply parses (at most ``retries`` re-asks, each with a new seed, sampled at no less
    than ``RETRY_TEMPERATURE``)."""
    import dataclasses

    verdict = Verdict(None, None)
    retry_params = dataclasses.replace(params, temperature=max(params.temperature, RETRY_TEMPERATURE))
    for attempt in range(retries + 1):
        verdict.attempts += 1
        try:
            done = engine.generate(prompt, params if attempt == 0 else retry_params, seed + attempt)
        except EngineError as exc:
            verdict.error = f"engine: {exc}"[:300]
            continue
        verdict.prompt_tokens += done.prompt_tokens
        verdict.completion_tokens += done.completion_tokens
        try:
            verdict.scores, verdict.critique = parse_reply(done.text)
            verdict.error = None
            return verdict
        except ReplyError as exc:
            verdict.error = f"malformed reply: {exc}"
    return verdict


@dataclass
class Judged:
    """One document after judging and refinement: what the row gets, and what it cost."""

    text: str
    verdict: Verdict
    rounds: list[dict[str, Any]] = field(default_factory=list)
    refined: bool = False
    judge_tokens: tuple[int, int] = (0, 0)  # prompt, completion
    rewrite_tokens: tuple[int, int] = (0, 0)


@dataclass
class Judge:
    """Judge (and refine) documents with one engine. ``render_judge(row, text)`` and ``render_rewrite(row,
    text, verdict)`` build the prompts; ``check(row, text)`` is the filters' verdict on a rewrite (a reason
    or None)."""

    engine: Engine
    judge_params: SamplingParams
    rewrite_params: SamplingParams
    thresholds: dict[str, float]
    max_rounds: int
    retries: int
    render_judge: Callable[[dict[str, Any], str], str]
    render_rewrite: Callable[[dict[str, Any], str, Verdict], str]
    check: Callable[[dict[str, Any], str], str | None]

    def __call__(self, row: dict[str, Any], seed: int) -> Judged:
        jp = jc = rp = rc = 0
        verdict = judge_one(self.engine, self.render_judge(row, row["text"]), self.judge_params, retries=self.retries, seed=seed)
        jp, jc = jp + verdict.prompt_tokens, jc + verdict.completion_tokens
        rounds = [_round_record(0, verdict, None)]
        best_text, best = row["text"], verdict
        current_text, current = row["text"], verdict
        for r in range(1, self.max_rounds + 1):
            if not weak(best.scores, self.thresholds):
                break
            try:
                done = self.engine.generate(self.render_rewrite(row, current_text, current), self.rewrite_params, seed + 1000 * r)
            except EngineError as exc:
                rounds.append({"round": r, "status": "rewrite_failed", "error": f"engine: {exc}"[:300]})
                continue
            rp, rc = rp + done.prompt_tokens, rc + done.completion_tokens
            text = (done.text or "").strip()
            reason = self.check(row, text) or ("truncated" if done.finish_reason == "length" else None)
            if reason is not None:
                rounds.append({"round": r, "status": "rewrite_rejected", "reason": reason,
                               "rewrite_tokens": done.completion_tokens})
                continue
            again = judge_one(self.engine, self.render_judge(row, text), self.judge_params, retries=self.retries,
                              seed=seed + 1000 * r + 1)
            jp, jc = jp + again.prompt_tokens, jc + again.completion_tokens
            record = _round_record(r, again, done.completion_tokens)
            better = again.scores is not None and (overall(again.scores) or 0) > (overall(best.scores) or 0)
            record["kept"] = better
            rounds.append(record)
            if again.scores is not None:
                current_text, current = text, again
            if better:
                best_text, best = text, again
        return Judged(best_text, best, rounds, refined=best_text != row["text"], judge_tokens=(jp, jc), rewrite_tokens=(rp, rc))


def _round_record(r: int, verdict: Verdict, rewrite_tokens: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"round": r, "status": SCORED if verdict.scores else UNSCORED, "scores": verdict.scores,
                           "critique": verdict.critique, "error": verdict.error, "attempts": verdict.attempts,
                           "judge_tokens": verdict.completion_tokens}
    if rewrite_tokens is not None:
        out["rewrite_tokens"] = rewrite_tokens
    return out


def row_columns(judged: Judged | None, original: str, reason: str | None = None) -> dict[str, Any]:
    """The judge columns of one row (``JUDGE_COLUMNS``); ``judged=None``: unscored for ``reason``."""
    v = judged.verdict if judged else Verdict(None, None, reason)
    scores = v.scores or {}
    return {
        **{f"score_{d}": scores.get(d) for d in DIMENSIONS},
        "score_overall": overall(v.scores),
        "judge_status": SCORED if v.scores else UNSCORED,
        "judge_error": v.error,
        "judge_critique": v.critique,
        "judge_rounds": json.dumps(judged.rounds if judged else [], ensure_ascii=False),
        "refined": bool(judged and judged.refined),
        "text_before_refine": original if judged and judged.refined else None,
    }

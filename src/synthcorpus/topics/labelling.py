"""Labelling a cluster with the engine ("Topic: ..." / "Educational value: 0-10"), parsing the reply
strictly, retrying malformed ones, and deciding whether a topic is kept (score, deny-list)."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from ..engines import Engine, EngineError, SamplingParams
from ..prompts import Template, TemplateError, environment, load_template, render
from .errors import TopicError

log = logging.getLogger(__name__)

LABEL_TEMPLATE = "topic_label.j2"
LABEL_SAMPLING = {"temperature": 0.3, "top_p": 0.95, "repeat_penalty": 1.1}
EXTRACT_WORDS = 60  # words of each extract shown to the labeler
MAX_LABEL_WORDS = 12  # a longer "label" is a sentence, not a label: the reply is rejected

_MD = re.compile(r"(\*\*|__|`|^\s*#+\s*|^\s*[-*>]\s+)", re.MULTILINE)
_LABEL = (
    # "Topic: x" / "Topic - x" at the start of a line, else "... Topic: x" inside a line.
    re.compile(r"^\s*(?:topic|label)\s*(?:\([^)]*\))?\s*[:=\-\u2013\u2014]\s*(.*)$", re.IGNORECASE | re.MULTILINE),
    re.compile(r"(?<!\w)(?:topic|label)\s*(?:\([^)]*\))?\s*:\s*(.*)$", re.IGNORECASE | re.MULTILINE),
)
_STRIP = "\"'\u201c\u201d\u2018\u2019<>*_ "
_SCORE = re.compile(
    r"educational\s+value\s*(?:\([^)]*\))?\s*[:=\-\u2013\u2014]?\s*(?:is\s+)?(-?\d+(?:[.,]\d+)?)\s*(?:(?:/|out\s+of)\s*(\d+))?",
    re.IGNORECASE,
)
# The template's placeholders or instructions echoed back instead of a label.
_PLACEHOLDER = re.compile(
    r"^\W*(?:topic|label|score|topic[ _]name|your topic)\W*$|short label|\d[\s-]*(?:to)?[\s-]*\d\s*words|^\W*the topic in\b",
    re.IGNORECASE,
)
_SCORE_INLINE = re.compile(r"[,;|]?\s*educational\s+value\b.*$", re.IGNORECASE)


def parse_label_reply(text: str) -> tuple[str, float] | None:
    """(label, score) from a labeler reply, or None if either is missing or invalid.

    Lenient about case, markdown (``**Topic:** Bees``), quotes, "7/10", "7 out of 10", "(0-10)" and
    extra text around; strict about substance: the label must contain a letter, must not be a
    placeholder or instruction echoed back ("<topic>", "2-6 words") and must have at most
    MAX_LABEL_WORDS words; the score must be a number in 0..10 ("2.5%" and "10+3" are not)."""
    if not text:
        return None
    clean = _MD.sub("", text)
    m = _LABEL[0].search(clean) or _LABEL[1].search(clean)
    s = _SCORE.search(clean)
    if not m or not s:
        return None
    label = re.sub(r"\s+", " ", _SCORE_INLINE.sub("", m.group(1)))
    previous = None
    while label != previous:
        previous = label
        label = re.sub(r"^(?:\d{1,2}|[a-z])[.)]\s+", "", label.strip(_STRIP)).rstrip(".;:,!")  # "2. Bees"
    if not re.search(r"[^\W\d_]", label) or _PLACEHOLDER.search(label) or len(label.split()) > MAX_LABEL_WORDS:
        return None
    if clean[s.end(1) :].lstrip()[:1] in ("%", "+", "*"):  # "2.5%", "10+3 = 13": not a 0-10 score
        return None
    score = float(s.group(1).replace(",", "."))
    if s.group(2) is not None:
        den = float(s.group(2))
        if den <= 0:
            return None
        score = score * 10.0 / den
    if not 0.0 <= score <= 10.0:
        return None
    return label, round(score, 2)


def load_label_template(template_dir: Path) -> Template:
    """The cluster-labelling template, loaded like every prompt template (version header, sha256)."""
    try:
        return load_template(Path(template_dir), LABEL_TEMPLATE.removesuffix(".j2"))
    except TemplateError as exc:
        raise TopicError(str(exc)) from None


def render_label_prompt(template: Template, extracts: Sequence[str]) -> str:
    try:
        return render(environment(template.path.parent), template, {"extracts": list(extracts)})
    except TemplateError as exc:
        raise TopicError(str(exc)) from None


def truncate_words(text: str, words: int = EXTRACT_WORDS) -> str:
    parts = (text or "").split()
    return " ".join(parts[:words]) + (" ..." if len(parts) > words else "")


def attempt_seed(base: int, cluster: int, attempt: int) -> int:
    """A distinct, reproducible sampling seed per (topic seed, cluster, attempt)."""
    return int(hashlib.sha256(f"{base}:{cluster}:{attempt}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


@dataclass
class LabelOutcome:
    label: str | None
    score: float | None
    attempts: int
    errors: list[str] = field(default_factory=list)


def label_cluster(engine: Engine, prompt: str, params: SamplingParams, *, retries: int, seed: int, cluster: int) -> LabelOutcome:
    """Ask the engine up to 1 + ``retries`` times, a different seed each time; the first valid reply wins.

    An EngineError counts as a failed attempt (recorded in ``errors``), not as a stage failure."""
    errors: list[str] = []
    for attempt in range(retries + 1):
        try:
            reply = engine.generate(prompt, params, attempt_seed(seed, cluster, attempt)).text
        except EngineError as exc:
            errors.append(f"attempt {attempt + 1}: {exc}")
            continue
        parsed = parse_label_reply(reply)
        if parsed is not None:
            return LabelOutcome(parsed[0], parsed[1], attempt + 1, errors)
        errors.append(f"attempt {attempt + 1}: unparseable reply {reply[:120]!r}")
    return LabelOutcome(None, None, retries + 1, errors)


def denied(texts: Iterable[str], deny: Iterable[str]) -> str | None:
    """The first deny-list entry found in any of ``texts``, or None.

    Case-insensitive, matched at the start of a word: "celebrit" matches "Celebrity news", "dating"
    matches "Dating tips" but not "Updating software", "sex" not "Essex"."""
    for term in deny:
        t = term.strip().lower()
        if not t:
            continue
        pattern = re.compile(r"(?<!\w)" + re.escape(t))
        if any(pattern.search(x.lower()) for x in texts if x):
            return term
    return None


def decide(label: str, keywords: Sequence[str], score: float | None, *, min_score: float, deny: Sequence[str],
           source: str) -> tuple[bool, str]:
    """(kept, reason) of a web cluster: deny-list first, then the score; an unscored cluster is kept.

    ``source``: "engine" (scored by the labeler), "fallback" (the labeler failed: keyword label, no score)
    or "keywords" (``topics.labeler: keywords``)."""
    term = denied([label, *keywords], deny)
    if term is not None:
        return False, f"deny-list: {term}"
    if score is None:
        return True, "kept (label fallback: keywords)" if source == "fallback" else "kept (labeler: keywords)"
    if score < min_score:
        return False, f"score {score:.1f} < {min_score:.1f}"
    return True, "kept"

"""Heuristic row filters with a count per reason. Removed rows are kept (with their reason) next to
the surviving ones, so nothing is lost and every drop can be inspected."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from typing import Any

from .. import storage
from ..run import RunContext, StageResult
from ..spec import QualitySpec

# Refusals and meta-talk show up in the opening of a reply; later in a story the same words
# ("I'm sorry", "I cannot") are legitimate dialogue, so only the opening is checked.
DEFAULT_REFUSAL_PHRASES = (
    "as an ai",
    "as a language model",
    "i'm sorry, but",
    "i am sorry, but",
    "i cannot fulfill",
    "i can't fulfill",
    "i cannot help with",
    "i can't help with",
    "i apologize, but",
    "sure, here is",
    "sure, here's",
    "sure! here",
    "certainly! here",
    "here is a blog post",
    "here's a blog post",
    "here is a story",
    "here's a story",
    "here is a textbook",
)
OPENING_CHARS = 200
REASONS = ("empty", "truncated", "too_short", "too_long", "refusal", "wrong_language", "generation_failed")

_WORD = re.compile(r"\w+", re.UNICODE)
_NON_WORD = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def normalize(text: str) -> str:
    """Case-, accent-form-, punctuation- and whitespace-insensitive form used for exact dedup."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _NON_WORD.sub(" ", text)).strip()


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


def reject_reason(
    row: dict[str, Any], quality: QualitySpec, phrases: tuple[str, ...], detected: tuple[str, float] | None = None
) -> str | None:
    """The first rule a row breaks, or None if it passes. ``detected`` is the (language, probability) of
    the text when the caller has it already; otherwise language id runs here."""
    text = row.get("text") or ""
    if not text.strip():
        return "empty"
    if quality.drop_truncated and row.get("finish_reason") == "length":
        return "truncated"
    words = word_count(text)
    if words < quality.min_words:
        return "too_short"
    if words > quality.max_words:
        return "too_long"
    opening = text[:OPENING_CHARS].lower()
    if any(p in opening for p in phrases):
        return "refusal"
    if row.get("language"):
        from .langid import MIN_CONFIDENCE, detect

        lang, prob = detected or detect(text)
        if lang != row["language"] and prob >= MIN_CONFIDENCE:
            return "wrong_language"
    return None


def filter_shard(run: RunContext, generated_uri: str) -> StageResult:
    import pyarrow as pa

    name = generated_uri.rsplit("/", 1)[-1]
    out_uri = run.run_uri("filter", name)
    done = storage.committed(out_uri)
    if done is not None:
        return StageResult("filter", {"kept": out_uri, "removed": done["removed_uri"]}, done)
    quality = run.spec.quality
    phrases = DEFAULT_REFUSAL_PHRASES + tuple(p.lower() for p in quality.refusal_phrases)
    rows = storage.read_parquet(generated_uri).to_pylist()
    kept, removed = [], []
    reasons: Counter[str] = Counter()
    confusion: dict[str, Counter[str]] = {}
    from .langid import detect

    for row in rows:
        text = row.get("text") or ""
        detected = None
        if text.strip() and row.get("language") and row.get("status") != "failed":
            detected = detect(text)  # once per row: for the confusion counts and the wrong-language rule
            confusion.setdefault(row["language"], Counter())[detected[0]] += 1
        # Rows the generator gave up on (after max_attempts) are kept in its output so that every prompt id
        # appears exactly once; here they leave the corpus with their own reason.
        reason = "generation_failed" if row.get("status") == "failed" else reject_reason(row, quality, phrases, detected)
        row = {**row, "n_words": word_count(text), "n_chars": len(text), "text_hash": text_hash(text)}
        if reason is None:
            kept.append(row)
        else:
            reasons[reason] += 1
            removed.append({**row, "filter_reason": reason})
    removed_uri = run.run_uri("filter", "removed-" + name)
    storage.write_parquet(removed_uri, _table(pa, removed, rows))
    stats = {
        "input": len(rows),
        "kept": len(kept),
        "removed": len(removed),
        "reasons": {r: reasons.get(r, 0) for r in REASONS},
        # requested language -> detected language -> documents (before filtering, failed rows excluded)
        "language_confusion": {k: dict(sorted(v.items())) for k, v in sorted(confusion.items())},
        "removed_uri": removed_uri,
    }
    storage.commit(out_uri, _table(pa, kept, rows), stats)
    return StageResult("filter", {"kept": out_uri, "removed": removed_uri}, stats)


def _table(pa: Any, rows: list[dict[str, Any]], like: list[dict[str, Any]]) -> Any:
    if rows:
        return pa.Table.from_pylist(rows)
    # An empty shard still needs a schema; borrow it from the input when there is one.
    return pa.Table.from_pylist(like).slice(0, 0) if like else pa.table({"text": pa.array([], pa.string())})

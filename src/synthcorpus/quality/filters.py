"""Heuristic row filters with a count per reason. Removed rows are kept (with their reason) next to
the surviving ones, so nothing is lost and every drop can be inspected.

Rules, cheapest first (the first one broken names the row's ``filter_reason``):

* ``empty``, ``truncated`` (finish_reason ``length``), ``too_short`` / ``too_long`` (word bounds);
* ``refusal``: refusal or meta phrases ("As an AI...", "Voici un article...") in the opening, per language;
* the heuristics of :class:`~synthcorpus.spec.HeuristicsSpec` (Gopher, Rae et al. 2021): character bounds,
  hash/ellipsis per word, bullet and ellipsis lines, mean word length, share of alphabetic words, then the
  repetition rules (duplicate paragraphs and lines, top n-grams, duplicated n-grams);
* ``wrong_language`` (language id, the most expensive), and ``generation_failed`` for rows the generator gave up on;
* ``not_generated_budget`` for prompts the generator never ran because the run's budget was spent
  (``status=budget``): removed like the others but not filtered (never generated), so the gate's
  filtered shares leave them out (see :func:`not_generated_rows`).

Shards are streamed as Arrow record batches: one batch of rows is in memory at a time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ..spec.vocabulary import HEURISTIC_REASONS, REASONS  # noqa: F401  (the reason names live with the spec)
from ..text import normalize

if TYPE_CHECKING:
    from ..spec import HeuristicsSpec, QualitySpec

# Refusals and meta-talk show up in the opening of a reply; later in a story the same words
# ("I'm sorry", "I cannot") are legitimate dialogue, so only the opening is checked. Phrases are matched
# on whole words, case-insensitively, with typographic apostrophes and French spacing before ! ? : ;
# folded (see fold_phrase). English meta-talk leaks into replies in every language, so it is checked for
# all of them; a row without a language is checked against every list.
DEFAULT_REFUSAL_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "as an ai", "as a language model", "as a large language model", "i am an ai", "i'm an ai", "i'm just an ai",
        "i'm sorry, but", "i am sorry, but", "i'm sorry, i can't", "i'm sorry, i cannot", "i apologize, but",
        "i cannot fulfill", "i can't fulfill", "i cannot help with", "i can't help with", "i'm unable to help",
        "sure, here is", "sure, here's", "sure! here", "certainly! here", "certainly, here is", "of course! here",
        "here is a blog post", "here's a blog post", "here is a story", "here's a story", "here is a short story",
        "here's a short story", "here is a textbook", "here's a textbook", "here is an article", "here's an article",
        "here is a wikihow", "here's a wikihow", "here is a tutorial", "here's a tutorial", "here is a dialogue",
        "here's a dialogue",
    ),
    "fr": (
        "en tant qu'ia", "en tant qu'intelligence artificielle", "en tant que modèle de langage",
        "en tant que modèle linguistique", "en tant qu'assistant ia", "en tant qu'assistant virtuel",
        "je suis une ia", "je suis une intelligence artificielle", "je suis un modèle de langage",
        "je suis désolé, mais", "je suis désolée, mais", "désolé, mais je ne peux pas", "désolée, mais je ne peux pas",
        "je ne peux pas vous aider", "je ne peux pas t'aider", "je ne suis pas en mesure de répondre",
        "bien sûr! voici", "bien sûr, voici", "certainement! voici", "avec plaisir! voici",
        "voici un article", "voici un billet de blog", "voici une histoire", "voici un récit", "voici un conte",
        "voici un dialogue", "voici un tutoriel", "voici un manuel", "voici un chapitre", "voici un guide",
    ),
    "de": (
        "als ki-sprachmodell", "als ki-modell", "als ki-assistent", "als sprachmodell", "als ein sprachmodell",
        "als künstliche intelligenz kann ich", "als ki kann ich", "ich bin eine ki", "ich bin ein ki-",
        "ich bin ein sprachmodell", "es tut mir leid, aber", "tut mir leid, aber ich kann", "entschuldigung, aber ich kann",
        "ich kann ihnen dabei nicht helfen", "ich kann dir dabei nicht helfen", "leider kann ich ihnen nicht",
        "leider kann ich dir nicht", "leider kann ich diese anfrage",
        "gerne! hier ist", "gerne, hier ist", "natürlich! hier ist", "natürlich, hier ist", "sicher! hier ist",
        "hier ist ein artikel", "hier ist ein blogbeitrag", "hier ist ein blog-beitrag", "hier ist ein blogartikel",
        "hier ist eine geschichte", "hier ist eine kurzgeschichte", "hier ist ein dialog", "hier ist eine anleitung",
        "hier ist ein tutorial", "hier ist ein lehrbuch", "hier ist ein lehrbuchkapitel", "hier ist der artikel",
        "hier ist die geschichte",
    ),
    "es": (
        "como modelo de lenguaje", "como un modelo de lenguaje", "como una ia", "como ia, no puedo", "como ia no puedo",
        "como una inteligencia artificial", "como asistente de ia", "soy una ia", "soy un modelo de lenguaje",
        "soy una inteligencia artificial", "lo siento, pero", "lo siento, no puedo", "no puedo ayudarte con",
        "no puedo ayudarle con", "no puedo cumplir con", "claro! aquí", "claro, aquí", "por supuesto! aquí",
        "por supuesto, aquí", "aquí tienes un artículo", "aquí tienes una entrada de blog", "aquí tienes una historia",
        "aquí tienes un cuento", "aquí tienes un relato", "aquí tienes un diálogo", "aquí tienes un tutorial",
        "aquí tienes una guía", "aquí está el artículo", "aquí está la historia", "aquí hay un artículo",
    ),
    "it": (
        "come modello linguistico", "come modello di linguaggio", "in quanto modello linguistico",
        "in quanto modello di linguaggio", "in quanto ia", "in quanto intelligenza artificiale", "come un'ia",
        "sono un'ia", "sono un'intelligenza artificiale", "sono un modello linguistico", "mi dispiace, ma",
        "mi dispiace, non posso", "purtroppo non posso", "non posso aiutarti con", "non posso aiutarla con",
        "non posso soddisfare", "certo! ecco", "certo, ecco", "certamente! ecco", "ecco un articolo", "ecco un post",
        "ecco una storia", "ecco un racconto", "ecco un dialogo", "ecco un tutorial", "ecco una guida",
        "ecco un capitolo",
    ),
}
OPENING_CHARS = 200
# A row the generator never ran (the run's generation budget was spent) has this status and finish_reason;
# the filters remove it with BUDGET_REASON. Not one of REASONS: it is not a filter outcome, and no
# max_filtered_share_by_reason applies to it.
BUDGET_STATUS = "budget"
BUDGET_REASON = "not_generated_budget"

_WORD = re.compile(r"\w+", re.UNICODE)
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)  # a \w character that is not a digit or underscore: a letter
_SPACE = re.compile(r"\s+")
_PARAGRAPHS = re.compile(r"\n{2,}")  # as datatrove's GopherRepetitionFilter
_LINES = re.compile(r"\n+")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "*": None})
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([!?:;,.])")


def word_count(text: str) -> int:
    return len(_WORD.findall(text))


def text_hash(text: str) -> str:
    return hashlib.sha256(normalize(text).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ refusals


def fold_phrase(text: str) -> str:
    """The form refusal phrases are matched in: NFKC, lower case, straight apostrophes, no markdown
    emphasis, no space before ! ? : ; , . (French typography), single spaces."""
    text = unicodedata.normalize("NFKC", text).lower().translate(_APOSTROPHES)
    return _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACE.sub(" ", text)).strip()


def refusal_phrases(quality: QualitySpec) -> dict[str, tuple[str, ...]]:
    """Language -> phrases to look for in the opening: that language's defaults, the English ones and the
    spec's extras (a list applies to every language, a mapping to its languages). Key ``""`` is for rows
    without a language: every phrase."""
    from ..spec import LANGUAGES

    extra = quality.refusal_phrases
    shared = tuple(extra) if isinstance(extra, list) else ()
    per_lang = extra if isinstance(extra, dict) else {}
    out: dict[str, tuple[str, ...]] = {}
    for lang in LANGUAGES:
        phrases = DEFAULT_REFUSAL_PHRASES.get(lang, ()) + DEFAULT_REFUSAL_PHRASES["en"] + shared
        out[lang] = _unique(phrases + tuple(per_lang.get(lang, ())))
    out[""] = _unique(tuple(p for lang in LANGUAGES for p in out[lang]))
    return out


def _unique(phrases: tuple[str, ...]) -> tuple[str, ...]:
    folded = (fold_phrase(p) for p in phrases)
    return tuple(dict.fromkeys(p for p in folded if p))  # an empty phrase would match every opening


@lru_cache(maxsize=64)
def _folded(phrases: tuple[str, ...]) -> tuple[str, ...]:
    return _unique(phrases)


@lru_cache(maxsize=256)
def phrase_pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """One regex for folded ``phrases`` (:func:`fold_phrase`), longest first, each matching whole words at
    its word-character ends: "as an ai" must not match "as an aid", "come ia" not "come iarda"."""
    parts = []
    for p in sorted(phrases, key=len, reverse=True):
        head = r"(?<!\w)" if _WORD.match(p[0]) else ""
        tail = r"(?!\w)" if _WORD.match(p[-1]) else ""
        parts.append(head + re.escape(p) + tail)
    return re.compile("|".join(parts))


def has_refusal(text: str, language: str | None, phrases: Mapping[str, Sequence[str]] | Sequence[str]) -> bool:
    """Whether the opening of ``text`` holds one of the phrases: ``phrases`` is a mapping language ->
    phrases (as :func:`refusal_phrases` returns) or one list for every language."""
    if isinstance(phrases, Mapping):
        chosen = phrases.get(language or "")
        if chosen is None:
            chosen = phrases.get("", ())
    else:
        chosen = phrases
    opening = fold_phrase(text[:OPENING_CHARS])
    # Plain substring tests first (fast, and almost always all false); the word-boundary regex only
    # confirms the few phrases found.
    found = tuple(p for p in _folded(tuple(chosen)) if p in opening)
    return bool(found) and phrase_pattern(found).search(opening) is not None


# ------------------------------------------------------------------------------------------ heuristics


@lru_cache(maxsize=1)
def _gopher() -> Any:
    """datatrove's pure Gopher repetition functions (find_duplicates, find_top_duplicate,
    find_all_duplicate, get_n_grams). Its GopherRepetitionFilter/GopherQualityFilter classes are not used:
    they split words with a spaCy tokenizer per language (~30x slower than our regex split, measured on the
    demo seeds and fake-engine texts) and would make spaCy a dependency of every worker. Imported on first
    use: the module pulls in datatrove's whole filters package (loguru, huggingface_hub, numpy: ~0.25 s),
    which DAG parsing and spec loading must not pay for."""
    from datatrove.pipeline.filters import gopher_repetition_filter

    return gopher_repetition_filter


def reason_names(heuristics: HeuristicsSpec | None = None) -> tuple[str, ...]:
    """Every reason a row can get under these heuristics: REASONS plus top/duplicated n-gram reasons
    for n-gram sizes outside the defaults."""
    if heuristics is None:
        return REASONS
    extra = [f"top_{n}_gram" for n in sorted(heuristics.top_ngram_char_frac or {})]
    extra += [f"duplicated_{n}_n_grams" for n in sorted(heuristics.dup_ngram_char_frac or {})]
    extra = [r for r in extra if r not in REASONS]
    return REASONS[:-2] + tuple(extra) + REASONS[-2:] if extra else REASONS


def not_generated_rows(filter_stats: Mapping[str, Any]) -> int:
    """Rows of one ``filter_shard`` shard removed as never generated (budget). Its stats count one entry
    per filter reason (:func:`reason_names`, which BUDGET_REASON is not part of) and every removed row:
    the removed rows no filter reason accounts for are the budget's (a BUDGET_REASON count is used when
    the stats carry one)."""
    reasons = filter_stats.get("reasons") or {}
    if BUDGET_REASON in reasons:
        return int(reasons[BUDGET_REASON])
    return max(0, int(filter_stats.get("removed", 0)) - sum(int(v) for v in reasons.values()))


def heuristic_reason(text: str, h: HeuristicsSpec, words: list[str] | None = None) -> str | None:
    """The first heuristic rule of ``h`` that ``text`` breaks (cheap rules first), or None.

    ``words`` is the text split with ``\\w+`` (reused from the word bounds when the caller has it).
    Rules follow Gopher as datatrove implements them, on regex words instead of spaCy tokens."""
    n_chars = len(text)
    if h.min_chars is not None and n_chars < h.min_chars:
        return "too_few_chars"
    if h.max_chars is not None and n_chars > h.max_chars:
        return "too_many_chars"
    if words is None:
        words = _WORD.findall(text)
    n_words = len(words)
    if not n_words:
        return "too_short"

    # Gopher quality: hash / ellipsis per word, bullet / ellipsis lines, word length, alphabetic words.
    if h.max_symbol_word_ratio is not None and (
        text.count("#") / n_words > h.max_symbol_word_ratio
        or (text.count("...") + text.count("\u2026")) / n_words > h.max_symbol_word_ratio
    ):
        return "symbol_word_ratio"
    if h.max_bullet_lines_ratio is not None or h.max_ellipsis_lines_ratio is not None:
        lines = text.splitlines() or [""]
        if h.max_bullet_lines_ratio is not None and (
            sum(s.lstrip().startswith(("\u2022", "-")) for s in lines) / len(lines) > h.max_bullet_lines_ratio
        ):
            return "bullet_lines_ratio"
        if h.max_ellipsis_lines_ratio is not None and (
            sum(s.rstrip().endswith(("...", "\u2026")) for s in lines) / len(lines) > h.max_ellipsis_lines_ratio
        ):
            return "end_ellipsis_lines_ratio"
    if h.min_mean_word_length is not None or h.max_mean_word_length is not None:
        mean = sum(map(len, words)) / n_words
        if (h.min_mean_word_length is not None and mean < h.min_mean_word_length) or (
            h.max_mean_word_length is not None and mean > h.max_mean_word_length
        ):
            return "mean_word_length"
    if h.min_alpha_words_ratio is not None:
        search = _LETTER.search
        if sum(1 for w in words if search(w)) / n_words < h.min_alpha_words_ratio:
            return "alpha_words_ratio"

    return repetition_reason(text, h, words)


def repetition_reason(text: str, h: HeuristicsSpec, words: list[str]) -> str | None:
    """Gopher repetition rules, in datatrove's order and with its functions and reason names."""
    checks_text = any(f is not None for f in (h.dup_para_frac, h.dup_para_char_frac, h.dup_line_frac, h.dup_line_char_frac))
    if not (checks_text or h.top_ngram_char_frac or h.dup_ngram_char_frac):
        return None
    g = _gopher()
    n_chars = len(text)
    if checks_text:
        paragraphs = _PARAGRAPHS.split(text.strip())
        dups, dup_chars = g.find_duplicates(paragraphs)
        if h.dup_para_frac is not None and dups / len(paragraphs) > h.dup_para_frac:
            return "dup_para_frac"
        if h.dup_para_char_frac is not None and dup_chars / n_chars > h.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINES.split(text)
        dups, dup_chars = g.find_duplicates(lines)
        if h.dup_line_frac is not None and dups / len(lines) > h.dup_line_frac:
            return "dup_line_frac"
        if h.dup_line_char_frac is not None and dup_chars / n_chars > h.dup_line_char_frac:
            return "dup_line_char_frac"
    for n, frac in sorted((h.top_ngram_char_frac or {}).items()):
        if frac is None:
            continue
        grams = g.get_n_grams(words, n)
        # datatrove also counts an n-gram that occurs once, which fails every text under ~5 n-grams long;
        # here the top n-gram must repeat (never stricter than datatrove).
        if grams and g.find_top_duplicate(grams) / n_chars > frac and len(set(grams)) < len(grams):
            return f"top_{n}_gram"
    for n, frac in sorted((h.dup_ngram_char_frac or {}).items()):
        if frac is not None and g.find_all_duplicate(words, n) / n_chars > frac:
            return f"duplicated_{n}_n_grams"
    return None


# ------------------------------------------------------------------------------------------ rows


def reject_reason(
    row: dict[str, Any],
    quality: QualitySpec,
    phrases: Mapping[str, Sequence[str]] | Sequence[str] | None = None,
    detected: tuple[str, float] | None = None,
) -> str | None:
    """The first rule a row breaks, or None if it passes. ``phrases``: refusal phrases as
    :func:`refusal_phrases` returns them (language -> phrases) or one list for all languages; default:
    ``refusal_phrases(quality)``. ``detected`` is the (language, probability) of the text when the caller
    has it already; otherwise language id runs here."""
    return _reason(row, quality, phrases, detected, None)


def _reason(
    row: dict[str, Any],
    quality: QualitySpec,
    phrases: Mapping[str, Sequence[str]] | Sequence[str] | None,
    detected: tuple[str, float] | None,
    words: list[str] | None,
) -> str | None:
    text = row.get("text") or ""
    if not text.strip():
        return "empty"
    if quality.drop_truncated and row.get("finish_reason") == "length":
        return "truncated"
    if words is None:
        words = _WORD.findall(text)
    if len(words) < quality.min_words:
        return "too_short"
    if len(words) > quality.max_words:
        return "too_long"
    if has_refusal(text, row.get("language"), refusal_phrases(quality) if phrases is None else phrases):
        return "refusal"
    reason = heuristic_reason(text, quality.heuristics, words)
    if reason is not None:
        return reason
    if row.get("language"):
        from .langid import MIN_CONFIDENCE, detect

        lang, prob = detected or detect(text)
        if lang != row["language"] and prob >= MIN_CONFIDENCE:
            return "wrong_language"
    return None


# ------------------------------------------------------------------------------------------ stage

ADDED_COLUMNS = (("n_words", "int64"), ("n_chars", "int64"), ("text_hash", "string"))


def kept_schema(schema: Any) -> Any:
    """The schema of kept rows: the generated shard's plus ``ADDED_COLUMNS``."""
    import pyarrow as pa

    for col, typ in ADDED_COLUMNS:
        schema = _with_field(schema, pa.field(col, getattr(pa, typ)()))
    return schema


def removed_schema(schema: Any) -> Any:
    import pyarrow as pa

    return _with_field(kept_schema(schema), pa.field("filter_reason", pa.string()))


def filter_batch(table: Any, quality: QualitySpec, phrases: Mapping[str, Sequence[str]],
                 confusion: dict[str, Counter[str]]) -> tuple[Any, Any, list[str]]:
    """Apply every rule to one table of generated rows: (kept rows, removed rows with ``filter_reason``,
    the reasons of the removed rows). Adds ``ADDED_COLUMNS``; counts requested -> detected language in
    ``confusion`` (failed rows excluded)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .langid import detect

    n = table.num_rows
    cols = {c: table.column(c).to_pylist() if c in table.column_names else [None] * n
            for c in ("text", "finish_reason", "language", "status")}
    row_reasons: list[str | None] = []
    n_words, n_chars, hashes = [], [], []
    for text, finish, lang, status in zip(cols["text"], cols["finish_reason"], cols["language"], cols["status"]):
        text = text or ""
        words = _WORD.findall(text)
        detected = None
        if text.strip() and lang and status not in ("failed", BUDGET_STATUS):
            detected = detect(text)  # once per row: for the confusion counts and the wrong-language rule
            confusion.setdefault(lang, Counter())[detected[0]] += 1
        # Rows the generator gave up on (after max_attempts) are kept in its output so that every prompt
        # id appears exactly once; here they leave the corpus with their own reason.
        if status == "failed":
            reason = "generation_failed"
        elif status == BUDGET_STATUS:
            reason = BUDGET_REASON
        else:
            row = {"text": text, "finish_reason": finish, "language": lang}
            reason = _reason(row, quality, phrases, detected, words)
        row_reasons.append(reason)
        n_words.append(len(words))
        n_chars.append(len(text))
        hashes.append(text_hash(text))
    table = _with_column(pa, table, "n_words", pa.array(n_words, pa.int64()))
    table = _with_column(pa, table, "n_chars", pa.array(n_chars, pa.int64()))
    table = _with_column(pa, table, "text_hash", pa.array(hashes, pa.string()))
    keep = pa.array([r is None for r in row_reasons], pa.bool_())
    removed_reasons = [r for r in row_reasons if r]
    removed = table.filter(pc.invert(keep))
    removed = _with_column(pa, removed, "filter_reason", pa.array(removed_reasons, pa.string()))
    return table.filter(keep), removed, removed_reasons


def _with_field(schema: Any, field: Any) -> Any:
    i = schema.get_field_index(field.name)
    return schema.set(i, field) if i >= 0 else schema.append(field)


def _with_column(pa: Any, table: Any, name: str, values: Any) -> Any:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, values) if i >= 0 else table.append_column(name, values)

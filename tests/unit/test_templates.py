"""The prompt template matrix include/prompts/<lang>/<format>.j2: every combination renders with
StrictUndefined, conditions on the seed, topic and audience, asks for the output language natively and
rotates its opening cue."""

from __future__ import annotations

import re
from itertools import combinations, product
from pathlib import Path

import jinja2
import pytest

PROMPTS = Path(__file__).resolve().parents[2] / "include" / "prompts"
LANGS = ("en", "fr", "de", "es", "it")
FORMATS = ("textbook", "blog_post", "wikihow", "story", "dialogue", "technical")
AUDIENCES = ("young_children", "high_school_students", "college_students", "professionals", "general_public")
SEED_KINDS = ("web", "outline", "instruction")
HEADER = "{#- version: 1 -#}"
OUTPUT_LANGUAGE = {
    "en": "Write in English.",
    "fr": "Écris en français.",
    "de": "Schreibe auf Deutsch.",
    "es": "Escribe en español.",
    "it": "Scrivi in italiano.",
}
ONCE_UPON_A_TIME = {
    "en": "Once upon a time", "fr": "Il était une fois", "de": "Es war einmal",
    "es": "Érase una vez", "it": "C'era una volta",
}
EXTRACT = "Pollination moves pollen from the anthers of one flower to the stigma of another."
OUTLINE = {"subject": "Biology", "course": "Life Science 101", "unit": "Pollination and plant reproduction"}
_WORD = re.compile(r"\w+", re.UNICODE)


@pytest.fixture(scope="module")
def env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(PROMPTS)), undefined=jinja2.StrictUndefined, autoescape=False
    )


def _render(env, lang, fmt, *, audience="general_public", seed_kind="web", topic=None, style_index=0,
            outline=True) -> str:
    ctx = OUTLINE if (seed_kind == "outline" and outline) else dict.fromkeys(OUTLINE)
    text = env.get_template(f"{lang}/{fmt}.j2").render(
        extract=EXTRACT, seed_kind=seed_kind, topic=topic, audience=audience, style_index=style_index,
        language=lang, **ctx,
    )
    return text.strip()


def _words(text: str) -> set[str]:
    return set(_WORD.findall(text.lower()))


def test_matrix_is_complete():
    found = {(p.parent.name, p.stem) for p in PROMPTS.glob("*/*.j2")}
    assert found >= set(product(LANGS, FORMATS))


@pytest.mark.parametrize("lang,fmt", list(product(LANGS, FORMATS)))
def test_header_is_first_line(lang, fmt):
    assert (PROMPTS / lang / f"{fmt}.j2").read_text(encoding="utf-8").splitlines()[0] == HEADER


@pytest.mark.parametrize("lang,fmt", list(product(LANGS, FORMATS)))
def test_every_combination_renders(env, lang, fmt):
    for audience, seed_kind, topic, outline in product(AUDIENCES, SEED_KINDS, (None, "Bees"), (True, False)):
        text = _render(env, lang, fmt, audience=audience, seed_kind=seed_kind, topic=topic, outline=outline)
        where = f"{lang}/{fmt} {audience} {seed_kind} topic={topic} outline={outline}"
        assert text, where
        assert EXTRACT in text, where
        assert ("Bees" in text) == (topic is not None), where
        assert "{{" not in text and "{%" not in text and "{#" not in text, where
        assert OUTPUT_LANGUAGE[lang] in text, where
        assert "None" not in text, where
        for key, value in OUTLINE.items():
            assert (value in text) == (seed_kind == "outline" and outline), f"{where}: {key}"
        # Instructions stay short for the small CPU model: roughly 80-180 words besides the extract.
        n = len(_WORD.findall(text.replace(EXTRACT, "")))
        assert 70 <= n <= 200, f"{where}: {n} instruction words"


@pytest.mark.parametrize("lang,fmt", list(product(LANGS, FORMATS)))
def test_audiences_change_instructions_substantively(env, lang, fmt):
    for seed_kind in SEED_KINDS:
        renders = {a: _words(_render(env, lang, fmt, audience=a, seed_kind=seed_kind)) for a in AUDIENCES}
        for a, b in combinations(AUDIENCES, 2):
            diff = len(renders[a] ^ renders[b])
            assert diff >= 15, f"{lang}/{fmt} {seed_kind}: {a} vs {b} differ by only {diff} words"


@pytest.mark.parametrize("lang,fmt", list(product(LANGS, FORMATS)))
def test_style_index_rotates_openings(env, lang, fmt):
    for audience in AUDIENCES:
        prompts = {_render(env, lang, fmt, audience=audience, style_index=i) for i in range(6)}
        assert len(prompts) >= 4, f"{lang}/{fmt} {audience}"
    # Large indices wrap around instead of failing.
    assert _render(env, lang, fmt, style_index=10_000)


@pytest.mark.parametrize("fmt", FORMATS)
def test_english_templates_forbid_once_upon_a_time(env, fmt):
    source = (PROMPTS / "en" / f"{fmt}.j2").read_text(encoding="utf-8")
    assert '"Once upon a time"' in source
    text = _render(env, "en", fmt)
    assert 'Do not begin with "Once upon a time"' in text
    assert '"Imagine"' in text and "In today's world" in text


@pytest.mark.parametrize("lang,fmt", list(product(LANGS, FORMATS)))
def test_stock_openings_are_forbidden_natively(env, lang, fmt):
    text = _render(env, lang, fmt)
    assert ONCE_UPON_A_TIME[lang] in text
    # The prohibition comes before the rotating cue, which is the last line.
    assert text.index(ONCE_UPON_A_TIME[lang]) < text.rindex("\n")

"""Seed hygiene (issue 14, item 6): web seeds cleaned before clustering -- markup stripped, boilerplate and
repeated-phrase rows dropped with the Gopher rules of quality/filters.py, counts per reason in the seeds
stats and lineage.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from synthcorpus import storage
from synthcorpus.lineage import build_lineage
from synthcorpus.quality.seed_clean import (
    SEED_CLEAN_REASONS,
    SeedCleaner,
    is_boilerplate,
    is_navigation,
    markup_lines,
    strip_markup,
)
from synthcorpus.seeds import SeedError, read_source
from synthcorpus.spec import load_spec
from synthcorpus.spec.seeds import SampleClean, SampleSource, SeedsSpec
from synthcorpus.spec.vocabulary import HEURISTIC_REASONS
from synthcorpus.stages.contract import RunContext, execute, fingerprint
from tests.conftest import INCLUDE, tiny_spec_dict, write_spec

FIELD = "seeds.web_samples"

# --------------------------------------------------------------------------------- the planted fixture

CLEAN = ("Garden soil that feels sticky when wet and cracks when dry is high in clay. It holds nutrients well "
         "but drains poorly, so dig in compost & leaf mould every autumn.")
ARTICLE = ("A compost heap turns kitchen scraps and garden waste into dark, crumbly soil food. Mix green material "
           "such as vegetable peelings with brown material such as dry leaves or cardboard, and turn it every few "
           "weeks so that air reaches the middle.")
HTML_PAGE = f"""<!DOCTYPE html><html><head><title>Composting at home | Green Thumb</title>
<style>body {{ font: 12px sans-serif }}</style><script>window.dataLayer = [];</script></head><body>
<header><a href="/">Green Thumb</a></header>
<nav><ul><li><a href="/">Home</a></li><li><a href="/garden">Garden</a></li><li><a href="/about">About</a></li></ul></nav>
<div id="cookie-banner">We use cookies to improve your experience. <button>Accept all</button></div>
<article><h1>Composting at home</h1>
<p>{ARTICLE.replace("and garden", "and <b>garden</b>")}</p></article>
<footer>&copy; 2024 Green Thumb. All rights reserved. <a href="/privacy">Privacy policy</a></footer>
</body></html>"""
NAV_PAGE = """<nav>Home | Recipes | Garden | Contact</nav>
<div class="cookie-consent"><p>This website uses cookies. By continuing to browse you accept our cookie policy.</p></div>
<p>Welcome to our site!</p>
<footer>Subscribe to our newsletter for weekly tips. All rights reserved.</footer>"""
REPEATED_PHRASE = "Buy cheap shoes online today. " * 8
REPEATED_LINES = "\n".join(["Best deals on garden tools this week only"] * 5 + ["Spades, rakes and hoes at low prices."])
MARKDOWN = """## Watering tomatoes

**Tomatoes** need deep, *regular* watering: about two litres per plant, twice a week in dry spells.
- Water the soil, not the leaves, to keep [blight](https://example.org/blight) away.
- A mulch of straw keeps the roots cool. ![mulch](mulch.png)
"""
MARKDOWN_CLEAN = ("Watering tomatoes Tomatoes need deep, regular watering: about two litres per plant, twice a week "
                  "in dry spells. Water the soil, not the leaves, to keep blight away. A mulch of straw keeps the "
                  "roots cool.")
WIKI = ("== Earthworms ==\n'''Earthworms''' drag fallen leaves into their burrows{{citation needed|date=May 2020}}, "
        "mixing [[organic matter|organic material]] into the [[soil]].[1]\n[[Category:Soil biology]]")
WIKI_CLEAN = "Earthworms Earthworms drag fallen leaves into their burrows, mixing organic material into the soil."
DUPLICATE_OF_CLEAN = f"<p>{CLEAN.replace('&', '&amp;').replace('clay.', '<em>clay</em>.')}</p>"
SHORT = "<div><p>Too short.</p></div>"
NUMBERS = "Order codes: " + " ".join(str(1000 + i) for i in range(30)) + " and more codes follow."
FRENCH_BANNER = "Nous utilisons des cookies pour améliorer votre expérience. Accepter les cookies · Tout refuser"

ROWS = [CLEAN, HTML_PAGE, NAV_PAGE, REPEATED_PHRASE, REPEATED_LINES, MARKDOWN, WIKI, DUPLICATE_OF_CLEAN, SHORT, None,
        NUMBERS, FRENCH_BANNER]
# What survives, in source order, exactly as stored in the seeds table.
SURVIVORS = [CLEAN, f"Composting at home {ARTICLE}", MARKDOWN_CLEAN, WIKI_CLEAN]
REMOVED = {"too_short": 2, "boilerplate": 2, "top_2_gram": 1, "dup_line_frac": 1, "alpha_words_ratio": 1,
           "duplicate": 1}


def write_jsonl(path: Path, values: list) -> Path:
    path.write_text("".join(json.dumps({"text": v, "url": f"https://example.org/{i}"}) + "\n"
                            for i, v in enumerate(values)), encoding="utf-8")
    return path


@pytest.fixture
def dirty(tmp_path) -> Path:
    return write_jsonl(tmp_path / "dirty.jsonl", ROWS)


def read(path: Path, clean: SampleClean | None = None, **kw):
    source = SampleSource(path=str(path), clean=clean or SampleClean(), **kw)
    return read_source(source, path.as_uri(), FIELD, SeedCleaner(source.clean, source.min_chars))


def expected_removed(**counts: int) -> dict[str, int]:
    return {r: counts.get(r, 0) for r in SEED_CLEAN_REASONS}


def test_planted_dirty_rows_exactly_which_survive_and_counts_per_reason(dirty):
    result = read(dirty)
    assert result.texts == SURVIVORS
    cleaned = result.stats()["cleaned"]
    assert cleaned == {"input": len(ROWS), "kept": len(SURVIVORS), "removed": expected_removed(**REMOVED)}
    # every reason is listed, zeros included, in the order the rules run
    assert list(cleaned["removed"]) == ["too_short", "boilerplate", *HEURISTIC_REASONS, "duplicate"]
    assert cleaned["kept"] + sum(cleaned["removed"].values()) == cleaned["input"]
    # the older counters agree
    stats = result.stats()
    assert (stats["too_short"], stats["duplicates"], stats["kept"]) == (2, 1, 4)


def test_each_planted_row_gets_its_reason():
    cleaner = SeedCleaner(SampleClean(), 20)
    reasons = [cleaner(v)[1] if v else "too_short" for v in ROWS]
    assert reasons == [None, None, "boilerplate", "top_2_gram", "dup_line_frac", None, None, None, "too_short",
                       "too_short", "alpha_words_ratio", "boilerplate"]
    # the duplicate is only a duplicate of the first row once both are cleaned
    assert cleaner(DUPLICATE_OF_CLEAN) == (CLEAN, None) and DUPLICATE_OF_CLEAN != CLEAN


def test_every_rule_can_be_turned_off(dirty):
    no_gopher = read(dirty, SampleClean(gopher=False))
    assert no_gopher.texts == SURVIVORS[:2] + [" ".join(REPEATED_PHRASE.split()), " ".join(REPEATED_LINES.split())] \
        + SURVIVORS[2:] + [NUMBERS]
    assert no_gopher.stats()["cleaned"]["removed"] == expected_removed(too_short=2, boilerplate=2, duplicate=1)

    no_boilerplate = read(dirty, SampleClean(boilerplate=False))
    kept = no_boilerplate.texts
    assert "We use cookies to improve your experience. Composting at home" in kept[1]
    assert FRENCH_BANNER in kept and any(t.startswith("Home | Recipes") for t in kept)
    assert no_boilerplate.stats()["cleaned"]["removed"]["boilerplate"] == 0

    raw = read(dirty, SampleClean(strip_markup=False, boilerplate=False, gopher=False))
    assert any("<nav>" in t for t in raw.texts) and any(t.startswith("## Watering") for t in raw.texts)
    assert raw.stats()["cleaned"]["removed"] == expected_removed(too_short=1)  # only the null row

    off = read(dirty, SampleClean(enabled=False))
    assert off.texts == [" ".join(v.split()) for v in ROWS if v and len(" ".join(v.split())) >= 20]
    assert off.stats()["cleaned"] == {"input": len(ROWS), "kept": len(off.texts),
                                      "removed": expected_removed(too_short=1)}


def test_sampling_fills_the_sample_from_clean_rows(tmp_path):
    good = [f"Paragraph number {i} explains how clay, sand and silt make up a garden soil." for i in range(40)]
    path = write_jsonl(tmp_path / "w.jsonl", good + [NAV_PAGE, REPEATED_PHRASE, SHORT] * 10)
    result = read(path, sample_size=30, seed=3)
    assert len(result.texts) == 30 and set(result.texts) <= set(good)
    cleaned = result.stats()["cleaned"]
    assert cleaned["input"] == result.examined == 30 + sum(cleaned["removed"].values())


def test_a_source_cleaned_to_nothing_names_the_reasons(tmp_path):
    path = write_jsonl(tmp_path / "w.jsonl", [NAV_PAGE, REPEATED_PHRASE, FRENCH_BANNER])
    with pytest.raises(SeedError, match=rf"^{re.escape(str(path))}: {FIELD}.min_chars: expected at least one usable "
                                        r"text.*3 rows read, 0 too short or null, 0 duplicates, removed by cleaning: "
                                        r"boilerplate 2, top_2_gram 1$"):
        read(path)


# ------------------------------------------------------------------------------------------- markup


def test_html_is_reduced_to_its_text_without_scripts_styles_or_head():
    lines = markup_lines(HTML_PAGE)
    texts = [t for t, _ in lines if t]
    assert "Composting at home" in texts and ARTICLE in texts  # entities decoded, inline tags removed
    # script, style and head (its <title>) are dropped with their content; no tag is left
    assert not any(re.search(r"dataLayer|font|\| Green Thumb|[<>]", t) for t in texts)
    # text of nav/header/footer and of a cookie banner is flagged as boilerplate, the article is not
    flagged = {t for t, boiler in lines if boiler}
    assert flagged == {"Green Thumb", "Home", "Garden", "About", "We use cookies to improve your experience.",
                       "© 2024 Green Thumb. All rights reserved. Privacy policy"}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Tom &amp; Jerry &eacute;t&eacute; &#8212; fine", "Tom & Jerry été — fine"),
        ("x<y and y>z stays text", "x<y and y>z stays text"),
        ("In Python, the __init__ method runs first", "In Python, the __init__ method runs first"),
        ("**bold**, __strong words__, *em*, _it is_, ~~old~~ and `code`", "bold, strong words, em, it is, old and code"),
        ("# Title #\n\n> quoted\n1. first\n* second\n```\nprint(1)\n```\n---", "Title\n\nquoted\n1. first\nsecond\nprint(1)"),
        ("See [the guide](http://x.org) and [docs][1].\n[1]: http://y.org", "See the guide and docs."),
        ("== Heading ==\n{{Infobox|a={{b}}}}[[Lyon]] and [[Paris|the capital]] [http://x.org site].[2]",
         "Heading\nLyon and the capital site."),
        ("<p>one</p><p>two<br>three</p><ul><li>four</li></ul>", "one\n\ntwo\n\nthree\n\nfour"),
        ("<div>unclosed <span>inline <b>bold</div> after", "unclosed inline bold\n\nafter"),
        ("<p>a <ref>Smith 2001, p. 4</ref>cited fact</p>", "a cited fact"),
    ],
)
def test_strip_markup(text, expected):
    assert strip_markup(text) == expected


# ------------------------------------------------------------------------------------------ boilerplate


@pytest.mark.parametrize(
    "line",
    [
        "We use cookies to give you the best experience. Accept all cookies",
        "© 2024 Example Ltd. All rights reserved.",
        "Subscribe to our newsletter!",
        "Skip to main content",
        "Read more",
        "Share",
        "Nous utilisons des cookies pour mesurer l'audience. Tous droits réservés.",
        "Abonnez-vous à notre newsletter",
        "Diese Website verwendet Cookies. Datenschutzerklärung | Impressum",
        "Anzeige",
        "Utilizamos cookies propias y de terceros. Política de privacidad",
        "Todos los derechos reservados",
        "Questo sito utilizza cookie tecnici. Informativa sulla privacy",
        "Iscriviti alla newsletter",
        "Home | About | Blog | Contact",
        "Home › Garden › Soil care",
    ],
)
def test_boilerplate_lines_in_every_language(line):
    assert is_boilerplate(line)


@pytest.mark.parametrize(
    "line",
    [
        CLEAN,
        "Cookies baked with brown sugar stay soft for days; store them in a tin with a slice of bread.",
        "The display (Anzeige) of the thermometer shows the temperature in degrees Celsius and Fahrenheit.",
        # a long paragraph that discusses privacy policies is content, not a banner
        "A privacy policy tells visitors which data a website collects, why it collects it, how long it keeps it "
        "and who it shares it with; in the European Union the GDPR requires one, written in plain language that "
        "ordinary readers can follow.",
        "Mix flour, sugar and butter / then add the eggs one at a time.",
    ],
)
def test_content_is_not_boilerplate(line):
    assert not is_boilerplate(line)


def test_navigation_lines():
    assert is_navigation("Home | Shop | Cart") and is_navigation("Accueil » Jardin » Sol")
    assert not is_navigation("Home | Shop")  # two items: could be anything
    assert not is_navigation("Rain | sun | wind all change how fast the soil dries out in spring and summer.")


def test_a_page_is_dropped_only_when_boilerplate_dominates():
    cleaner = SeedCleaner(SampleClean(), 20)
    assert cleaner(HTML_PAGE) == (f"Composting at home {ARTICLE}", None)
    assert cleaner(NAV_PAGE) == ("", "boilerplate")
    # the share is configurable: at 0.1 the article page is mostly boilerplate too
    assert SeedCleaner(SampleClean(max_boilerplate_share=0.1), 20)(HTML_PAGE) == ("", "boilerplate")
    # what is left after removing boilerplate must still be min_chars long
    assert SeedCleaner(SampleClean(), 20)("Subscribe to our newsletter today!\nShort text.") == ("", "boilerplate")


def test_gopher_quality_rules_apply_to_long_texts_repetition_to_all():
    cleaner = SeedCleaner(SampleClean(), 20)
    short_stats = "How do I fix a leak in my sink?"  # mean word length 2.9 < 3, but only 9 words
    assert cleaner(short_stats) == (short_stats, None)
    assert SeedCleaner(SampleClean(gopher_min_words=5), 20)(short_stats) == ("", "mean_word_length")
    assert cleaner("Tea and cake. " * 6)[1] is not None  # short, but repeated: the repetition rules see it


# ------------------------------------------------------------------------------------------- spec


def test_clean_section_defaults_and_strictness():
    spec = SeedsSpec.model_validate({"web_samples": {"path": "w.jsonl"}, "instructions": {"path": "i.jsonl"}})
    assert spec.web_samples.clean == SampleClean() and spec.web_samples.clean.model_dump() == {
        "enabled": True, "strip_markup": True, "boilerplate": True, "max_boilerplate_share": 0.5, "gopher": True,
        "gopher_min_words": 20}
    # instructions: short requests ("Write a privacy policy for my bakery"), no boilerplate phrases by default
    assert spec.instructions.clean == SampleClean(boilerplate=False)
    explicit = SeedsSpec.model_validate({"instructions": {"path": "i.jsonl", "clean": {"boilerplate": True, "gopher": False}}})
    assert explicit.instructions.clean == SampleClean(boilerplate=True, gopher=False)
    for bad in ({"bogus": 1}, {"max_boilerplate_share": 1.5}, {"gopher_min_words": 0}):
        with pytest.raises(ValueError, match="clean"):
            SeedsSpec.model_validate({"web_samples": {"path": "w.jsonl", "clean": bad}})


def test_the_demo_spec_is_valid_and_its_shipped_seeds_survive_cleaning():
    spec = load_spec(INCLUDE / "corpora" / "demo.yaml")
    assert spec.seeds.web_samples.clean == SampleClean()
    for name, path in (("web_samples", "demo_web_samples.jsonl"), ("instructions", "demo_instructions.jsonl")):
        source = getattr(spec.seeds, name)
        result = read_source(source.model_copy(update={"sample_size": None}), (INCLUDE / "seeds" / path).as_uri(),
                             f"seeds.{name}", SeedCleaner(source.clean, source.min_chars))
        assert sum(result.stats()["cleaned"]["removed"].values()) == 0, name
        assert result.texts == read_source(source.model_copy(update={"sample_size": None}),
                                           (INCLUDE / "seeds" / path).as_uri(), f"seeds.{name}").texts


# ------------------------------------------------------------------------------------ stage and lineage


def _run(tmp_path: Path, seeds: dict, run_id: str = "r1") -> RunContext:
    return RunContext.create(load_spec(write_spec(tmp_path, tiny_spec_dict(seeds=seeds))), run_id)


def test_seeds_stage_counts_per_reason_and_lineage_carries_them(tmp_path, storage_uri, dirty):
    instructions = tmp_path / "instr.jsonl"
    instructions.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in [
        "Write a privacy policy for a small bakery website.", "<b>Tell</b> a story about a fox who learns to swim.",
        "Tell a story about a fox who learns to swim."]), encoding="utf-8")
    run = _run(tmp_path, {"web_samples": {"path": "dirty.jsonl"},
                          "instructions": {"path": "instr.jsonl", "text_column": "instruction"}})
    marker = execute(run, "seeds")
    rows = storage.read_parquet(marker["outputs"]["seeds"]).to_pylist()
    assert [r["text"] for r in rows if r["kind"] == "web"] == SURVIVORS
    assert [r["text"] for r in rows if r["kind"] == "instruction"] == [
        "Write a privacy policy for a small bakery website.", "Tell a story about a fox who learns to swim."]
    sources = marker["stats"]["sources"]
    assert sources["web_samples"]["cleaned"] == {"input": len(ROWS), "kept": 4, "removed": expected_removed(**REMOVED)}
    assert sources["instructions"]["cleaned"] == {"input": 3, "kept": 2, "removed": expected_removed(duplicate=1)}
    assert marker["stats"]["by_kind"]["web"] == 4

    lineage = build_lineage(run.spec, run.run_id, {"seeds": [marker]}, gate=None, diversity=None)
    assert lineage["seeds"]["sources"]["web_samples"]["cleaned"]["removed"] == expected_removed(**REMOVED)
    assert lineage["spec"]["content"]["seeds"]["web_samples"]["clean"]["gopher"] is True
    json.dumps(lineage)  # what lineage.json holds


def test_a_clean_setting_is_part_of_the_seeds_fingerprint(tmp_path, storage_uri, dirty):
    before = fingerprint(_run(tmp_path, {"web_samples": {"path": "dirty.jsonl"}}), "seeds")
    after = fingerprint(_run(tmp_path, {"web_samples": {"path": "dirty.jsonl", "clean": {"gopher": False}}}), "seeds")
    assert before["sections"] != after["sections"] and before["files"] == after["files"]
    assert before["sha256"] != after["sha256"]

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.quality.filters import (
    HEURISTIC_REASONS,
    REASONS,
    has_refusal,
    heuristic_reason,
    normalize,
    reason_names,
    refusal_phrases,
    reject_reason,
    text_hash,
    word_count,
)
from synthcorpus.quality.langid import detect
from synthcorpus.spec import HeuristicsSpec, QualitySpec, SpecError, parse_spec
from synthcorpus.stages import filter_shard
from synthcorpus.stages.contract import RunContext, execute
from tests.conftest import tiny_spec_dict
from tests.stagekit import given, given_plan, given_history

Q = QualitySpec(min_words=5, max_words=20, drop_truncated=True, refusal_phrases=["lorem ipsum"])
PHRASES = refusal_phrases(Q)
GOOD = "Bees carry pollen from flower to flower so plants can make seeds."
H = HeuristicsSpec()  # the defaults: Gopher's thresholds, as datatrove ships them


def reason(text, finish="stop"):
    return reject_reason({"text": text, "finish_reason": finish}, Q, PHRASES)


def test_passing_row():
    assert reason(GOOD) is None


def test_each_rule():
    assert reason("   ") == "empty"
    assert reason(GOOD, finish="length") == "truncated"
    assert reason("Too few words here.") == "too_short"
    assert reason(" ".join(["word"] * 21)) == "too_long"
    assert reason("As an AI language model, I cannot write about bees and flowers today.") == "refusal"
    assert reason("Sure, here is a story about bees and the flowers they visit.") == "refusal"
    assert reason("Lorem ipsum dolor sit amet, consectetur adipiscing elit.") == "refusal"


def test_wrong_language_and_generation_failed():
    french = "Les abeilles transportent le pollen de fleur en fleur pour que les plantes puissent faire des graines."
    assert reject_reason({"text": french, "finish_reason": "stop", "language": "en"}, Q, PHRASES) == "wrong_language"
    assert reject_reason({"text": french, "finish_reason": "stop", "language": "fr"}, Q, PHRASES) is None
    assert reject_reason({"text": GOOD, "finish_reason": "stop", "language": "en"}, Q, PHRASES) is None


# ------------------------------------------------------------------------------------------ heuristics

# A normal, varied text: must pass every rule at the default thresholds.
ARTICLE = (
    "Honeybees live in colonies that can hold tens of thousands of workers, a single queen and, in summer, "
    "a few hundred drones. Each worker changes jobs as it ages: young bees clean cells and feed larvae, "
    "middle-aged ones build comb and guard the entrance, and the oldest fly out to collect nectar and pollen.\n\n"
    "A forager that finds a rich patch of flowers returns to the hive and performs a waggle dance. The angle "
    "of the dance tells her sisters the direction of the food relative to the sun, while its length encodes "
    "the distance. Researchers decoded this language in the 1940s, and it remains one of the best-studied "
    "examples of animal communication.\n\n"
    "Beekeepers watch for signs of disease, such as spotty brood or deformed wings, and inspect their hives "
    "every week or two during the warm months."
)
P = ARTICLE.split("\n\n")
SHORT = ["Wax comes from glands.", "Drones do not sting.", "Queens mate in flight.", "Honey keeps for years.",
         "Pollen feeds the brood."]
REPEATED = "The colony survives the winter by clustering tightly around its queen."

# name -> (text, the field that catches it, the reason, the reason once that field is None)
CRAFTED = {
    "dup_para_frac": ("\n\n".join([P[0], "Bees are busy.", P[1], "Bees are busy.", "Bees are busy.", P[2]]),
                      "dup_para_frac", "dup_para_frac", "dup_line_frac"),  # paragraphs are lines too
    "dup_para_char_frac": ("\n\n".join([P[1], *SHORT, P[1]]), "dup_para_char_frac", "dup_para_char_frac",
                           "dup_line_char_frac"),
    "dup_line_frac": ("\n".join([P[0], "Buzz buzz went the bees.", P[1], "Buzz buzz went the bees.",
                                 "Buzz buzz went the bees.", P[2]]), "dup_line_frac", "dup_line_frac", None),
    "dup_line_char_frac": ("\n".join([P[1], *SHORT, P[1]]), "dup_line_char_frac", "dup_line_char_frac",
                           "duplicated_5_n_grams"),  # the repeated line is also a run of repeated 5-grams
    "top_2_gram": (" ".join(f"Honey bees {v} the {n} today." for v, n in [
        ("visit", "garden"), ("leave", "hive"), ("find", "clover"), ("love", "lavender"), ("avoid", "rain"),
        ("guard", "entrance"), ("warm", "brood"), ("cool", "comb"), ("clean", "cells"), ("feed", "queen"),
        ("follow", "scouts"), ("sense", "flowers")]), "top_ngram_char_frac", "top_2_gram", None),
    "duplicated_5_n_grams": (f"{P[0]} {REPEATED} {P[2]} {REPEATED} {REPEATED}", "dup_ngram_char_frac",
                             "duplicated_5_n_grams", None),
    "hashes": ("Lovely morning at the apiary #bees #honey #beekeeping #summer #garden #nature #pollinators "
               "#savethebees #organic #local #farmlife. The colonies are strong and the supers are getting heavy.",
               "max_symbol_word_ratio", "symbol_word_ratio", None),
    "ellipses": ("Well... the bees... they left... all of them... one morning... without a sound... and the hive... "
                 "stood empty... for weeks.", "max_symbol_word_ratio", "symbol_word_ratio", None),
    "bullets": ("\n".join(f"- {line}" for line in [
        "Inspect the hive every week in spring", "Check the queen is laying eggs", "Look for swarm cells on the frames",
        "Add a super when the brood box is full", "Keep the entrance clear of dead bees", "Feed sugar syrup in a dearth",
        "Treat for varroa mites after the harvest", "Leave enough honey for the winter", "Write down what you saw",
        "Clean your tools between hives"]), "max_bullet_lines_ratio", "bullet_lines_ratio", None),
    "end_ellipsis_lines": ("\n".join(line + "..." for line in [
        "The bees were restless that morning and the air smelled of rain and cut grass",
        "Something was moving near the hives but nobody could see exactly what it was",
        "The old beekeeper put on his veil slowly and walked down the garden path alone",
        "He lifted the lid of the first hive and waited for the humming to settle down"]),
        "max_ellipsis_lines_ratio", "end_ellipsis_lines_ratio", None),
    "long_words": ("Internationalization telecommunications electroencephalography otorhinolaryngological "
                   "counterrevolutionaries institutionalization interdisciplinary characterization "
                   "photosynthesization incomprehensibilities uncharacteristically disproportionately.",
                   "max_mean_word_length", "mean_word_length", None),
    "short_words": ("I am so sad. It is a no go. We do it. He is up. So am I. Go on, do it. "
                    "Oh no, it is on me. We go to it. Is it ok? It is ok, so we go.",
                    "min_mean_word_length", "mean_word_length", None),
    "numeric": ("Hive weights in grams, spring 2024: 41250 39870 40115 42630 38890 40720 41905 39455 "
                "40380 42210 and in autumn 2024: 45120 44780 46015 43990 45560 44230 46480 45005 44675 45890.",
                "min_alpha_words_ratio", "alpha_words_ratio", None),
}


def test_a_normal_varied_text_passes_every_heuristic():
    assert heuristic_reason(ARTICLE, H) is None
    assert heuristic_reason(GOOD, H) is None
    assert reject_reason({"text": ARTICLE, "finish_reason": "stop", "language": "en"}, QualitySpec(), None) is None


@pytest.mark.parametrize("name", list(CRAFTED))
def test_each_heuristic_catches_its_crafted_text(name):
    text, field, expected, _ = CRAFTED[name]
    assert heuristic_reason(text, H) == expected
    # Through reject_reason too, with the word bounds out of the way.
    q = QualitySpec(min_words=1, max_words=10_000)
    assert reject_reason({"text": text, "finish_reason": "stop"}, q, None) == expected


@pytest.mark.parametrize("name", list(CRAFTED))
def test_each_threshold_set_to_none_disables_its_rule(name):
    text, field, expected, when_off = CRAFTED[name]
    assert heuristic_reason(text, H.model_copy(update={field: None})) == when_off


def test_single_ngram_sizes_can_be_turned_off():
    top2 = CRAFTED["top_2_gram"][0]
    assert heuristic_reason(top2, HeuristicsSpec(top_ngram_char_frac={2: None, 3: 0.18, 4: 0.16})) == "top_3_gram"
    assert heuristic_reason(top2, HeuristicsSpec(top_ngram_char_frac={})) is None
    dup5 = CRAFTED["duplicated_5_n_grams"][0]
    assert heuristic_reason(dup5, HeuristicsSpec(dup_ngram_char_frac={5: None, 6: 0.14})) is None
    # A size outside the defaults gets its own reason, counted like the others.
    assert heuristic_reason(dup5, HeuristicsSpec(dup_ngram_char_frac={11: 0.05})) == "duplicated_11_n_grams"
    names = reason_names(HeuristicsSpec(dup_ngram_char_frac={11: 0.05}))
    assert "duplicated_11_n_grams" in names and names[-2:] == ("wrong_language", "generation_failed")


def test_every_rule_off_passes_everything():
    off = HeuristicsSpec(**{f: None for f in HeuristicsSpec.model_fields})
    for text, *_ in CRAFTED.values():
        assert heuristic_reason(text, off) is None


def test_character_bounds():
    h = HeuristicsSpec(min_chars=100, max_chars=1000)
    assert heuristic_reason(GOOD, h) == "too_few_chars"
    assert heuristic_reason(ARTICLE, h) is None
    assert heuristic_reason(ARTICLE + " " + ARTICLE, h) == "too_many_chars"
    assert heuristic_reason(GOOD, HeuristicsSpec(min_chars=None)) is None
    assert heuristic_reason(ARTICLE * 2, HeuristicsSpec(max_chars=None, dup_para_frac=None, dup_para_char_frac=None,
                                                        dup_line_frac=None, dup_line_char_frac=None,
                                                        top_ngram_char_frac=None, dup_ngram_char_frac=None)) is None


def test_short_texts_with_no_repeated_ngram_pass():
    # datatrove counts a top n-gram that occurs once, which removes every text under ~5 n-grams long;
    # here a top n-gram must repeat to count.
    assert heuristic_reason("Bees dance.", H) is None
    assert heuristic_reason("bees bees bees bees.", H) == "top_2_gram"


def test_heuristics_apply_after_the_cheaper_rules():
    q = QualitySpec(min_words=5, max_words=2000)
    text = CRAFTED["hashes"][0]
    assert reject_reason({"text": text, "finish_reason": "length"}, q, None) == "truncated"
    assert reject_reason({"text": "As an AI " + text, "finish_reason": "stop"}, q, None) == "refusal"
    assert reject_reason({"text": text, "finish_reason": "stop"}, q, None) == "symbol_word_ratio"
    off = QualitySpec(min_words=5, heuristics={"max_symbol_word_ratio": None})
    assert reject_reason({"text": text, "finish_reason": "stop"}, off, None) is None


def test_reasons_list_every_rule_in_order():
    assert REASONS[:5] == ("empty", "truncated", "too_short", "too_long", "refusal")
    assert REASONS[-2:] == ("wrong_language", "generation_failed")
    assert set(HEURISTIC_REASONS) <= set(REASONS) and len(set(REASONS)) == len(REASONS)
    assert {c[2] for c in CRAFTED.values()} <= set(REASONS)


# ------------------------------------------------------------------------------------------ parity with datatrove


def _datatrove_filters():
    pytest.importorskip("spacy")  # datatrove's filter classes split words with spaCy (a dev dependency)
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    repetition = GopherRepetitionFilter()  # datatrove's defaults = HeuristicsSpec's defaults
    # The rules we do not have: datatrove's word bounds (ours are quality.min_words/max_words) and its
    # English-only stop-word rule.
    quality = GopherQualityFilter(min_doc_words=None, max_doc_words=None, min_stop_words=None)
    return repetition, quality


DATATROVE_QUALITY_REASONS = {
    "symbol_word_ratio": {"gopher_too_many_hashes", "gopher_too_many_ellipsis"},
    "bullet_lines_ratio": {"gopher_too_many_bullets"},
    "end_ellipsis_lines_ratio": {"gopher_too_many_end_ellipsis"},
    "mean_word_length": {"gopher_below_avg_threshold", "gopher_above_avg_threshold"},
    "alpha_words_ratio": {"gopher_below_alpha_threshold"},
}


def test_parity_with_datatrove_gopher_filters():
    from datatrove.data import Document

    repetition, quality = _datatrove_filters()
    docs = {"article": ARTICLE, "one_paragraph": P[0], **{k: v[0] for k, v in CRAFTED.items()}}
    for name, text in docs.items():
        doc = Document(text=text, id=name)
        rep, qual = repetition.filter(doc), quality.filter(doc)
        ours = heuristic_reason(text, H)
        assert (ours is None) == (rep is True and qual is True), (name, ours, rep, qual)
        if ours is None:
            continue
        if ours in DATATROVE_QUALITY_REASONS:  # our quality rules run before the repetition ones
            assert qual is not True and qual[1] in DATATROVE_QUALITY_REASONS[ours], (name, ours, qual)
        else:  # repetition rules: same order, same functions, same reason names
            assert qual is True and rep == (False, ours), (name, ours, rep)


def test_known_difference_from_datatrove_on_short_texts():
    from datatrove.data import Document

    repetition, _ = _datatrove_filters()
    text = "Queens mate in flight."
    assert repetition.filter(Document(text=text, id="short")) == (False, "top_2_gram")
    assert heuristic_reason(text, H) is None


# ------------------------------------------------------------------------------------------ refusals


def test_refusal_words_late_in_a_story_are_dialogue_not_refusal():
    story = GOOD + " " + ARTICLE + ' "I\'m sorry, but I cannot stay," said the bee.'
    q = QualitySpec(min_words=5, max_words=500)
    assert reject_reason({"text": story, "finish_reason": "stop"}, q, PHRASES) is None


REFUSALS = [
    ("fr", "En tant qu\u2019IA, je ne peux pas écrire un article complet sur les abeilles et leurs ruches."),
    ("fr", "Bien sûr\u202f! Voici un article de blog sur les abeilles, les fleurs et le miel de nos campagnes."),
    ("de", "Als KI-Sprachmodell kann ich keine persönlichen Erfahrungen über Bienen und Blumen teilen."),
    ("de", "Gerne! Hier ist ein Blogbeitrag über Bienen, die im Sommer von Blüte zu Blüte fliegen."),
    ("es", "Como modelo de lenguaje, no tengo experiencias propias sobre las abejas y las flores del campo."),
    ("es", "¡Claro! Aquí tienes una historia sobre una abeja que vivía en un jardín lleno de flores."),
    ("it", "Come modello linguistico, non posso avere esperienze personali sulle api e sui fiori di campo."),
    ("it", "Certo! Ecco un articolo sulle api e su come trasportano il polline da un fiore all'altro."),
    ("en", "**Certainly!** Here is a textbook unit about how bees carry pollen between the flowers."),
]


@pytest.mark.parametrize("lang,text", REFUSALS, ids=[f"{lang}-{i}" for i, (lang, _) in enumerate(REFUSALS)])
def test_refusal_and_meta_phrases_per_language(lang, text):
    q = QualitySpec(min_words=5)
    assert reject_reason({"text": text, "finish_reason": "stop", "language": lang}, q, None) == "refusal"
    assert has_refusal(text, None, refusal_phrases(q))  # a row without a language is checked against every list


def test_phrases_of_one_language_do_not_apply_to_another():
    phrases = refusal_phrases(QualitySpec())
    text = "Voici un article sur les abeilles et les fleurs."
    assert has_refusal(text, "fr", phrases) and not has_refusal(text, "de", phrases)
    # English meta-talk leaks into every language, so it is checked everywhere.
    assert has_refusal("As an AI, ich kann das nicht schreiben.", "de", phrases)


def test_phrases_match_whole_words_only():
    phrases = refusal_phrases(QualitySpec())
    assert not has_refusal("Honey has served as an aid to digestion for centuries.", "en", phrases)
    assert has_refusal("As an AI, I cannot do that.", "en", phrases)
    assert not has_refusal("Tecnologías como IA y robótica cambian la apicultura.", "es", phrases)


def test_refusal_phrases_in_the_spec_as_a_list_or_per_language():
    french = "Il était une fois une abeille qui vivait dans un grand jardin plein de fleurs et de soleil."
    per_lang = QualitySpec(min_words=5, refusal_phrases={"fr": ["Il était une fois"], "de": ["es war einmal"]})
    assert reject_reason({"text": french, "finish_reason": "stop", "language": "fr"}, per_lang, None) == "refusal"
    assert not has_refusal(french, "it", refusal_phrases(per_lang))
    shared = QualitySpec(min_words=5, refusal_phrases=["il était une fois"])
    assert all(has_refusal(french, lang, refusal_phrases(shared)) for lang in ("en", "fr", "de", "es", "it"))
    # A plain list still works as the phrases argument (every language).
    assert has_refusal("Lorem ipsum dolor sit amet.", "en", ["lorem ipsum"])


# ------------------------------------------------------------------------------------------ spec validation

BAD_HEURISTICS = [
    ({"quality.heuristics.dup_line_frac": 1.5}, "quality.heuristics.dup_line_frac", "less than or equal to 1"),
    ({"quality.heuristics.min_alpha_words_ratio": -0.1}, "quality.heuristics.min_alpha_words_ratio",
     "greater than or equal to 0"),
    ({"quality.heuristics.max_symbol_word_ratio": 2}, "quality.heuristics.max_symbol_word_ratio", "less than or equal to 1"),
    ({"quality.heuristics.top_ngram_char_frac": {2: 1.2}}, "quality.heuristics.top_ngram_char_frac",
     "expected a fraction between 0 and 1 for 2-grams, got 1.2"),
    ({"quality.heuristics.dup_ngram_char_frac": {0: 0.1}}, "quality.heuristics.dup_ngram_char_frac",
     "expected n-gram sizes between 1 and 50, got 0"),
    ({"quality.heuristics.min_mean_word_length": 12}, "quality.heuristics",
     "expected min_mean_word_length <= max_mean_word_length, got 12"),
    ({"quality.heuristics.min_chars": 500, "quality.heuristics.max_chars": 100}, "quality.heuristics",
     "expected min_chars <= max_chars, got 500 > 100"),
    ({"quality.heuristics.min_chars": 0}, "quality.heuristics.min_chars", "greater than or equal to 1"),
    ({"quality.heuristics.dup_word_frac": 0.2}, "quality.heuristics.dup_word_frac", "unknown field"),
    ({"quality.refusal_phrases": {"en": ["as an ai"], "jp": ["watashi"]}}, "quality.refusal_phrases",
     "expected languages among en, fr, de, es, it as keys, got jp"),
    ({"quality.refusal_phrases": "as an ai"}, "quality.refusal_phrases",
     "expected a list of phrases or a mapping language -> list of phrases, got str"),
    ({"quality.refusal_phrases": {"fr": "voici"}}, "quality.refusal_phrases", "expected non-empty strings"),
]


@pytest.mark.parametrize("overrides,field,expected", BAD_HEURISTICS, ids=[b[1] + ":" + b[2][:20] for b in BAD_HEURISTICS])
def test_bad_heuristic_thresholds_name_the_field(overrides, field, expected):
    with pytest.raises(SpecError) as info:
        parse_spec(tiny_spec_dict(**overrides))
    problems = info.value.problems
    assert any(p.field == field and expected in p.expected for p in problems), problems


def test_heuristics_in_the_spec_round_trip():
    spec = parse_spec(tiny_spec_dict(**{"quality.heuristics": {"dup_line_frac": None, "top_ngram_char_frac": {2: 0.25}}}))
    h = spec.quality.heuristics
    assert h.dup_line_frac is None and h.top_ngram_char_frac == {2: 0.25} and h.dup_para_frac == 0.3
    # The generator re-validates the canonical (JSON) form: n-gram keys come back as integers.
    again = QualitySpec.model_validate(spec.canonical()["quality"])
    assert again.heuristics == h


# ------------------------------------------------------------------------------------------ the stage


def test_normalized_hash_ignores_case_punctuation_and_spacing():
    assert normalize("Hello,   WORLD!\n") == "hello world"
    assert text_hash("Hello, world!") == text_hash("hello   world")
    assert text_hash("hello world") != text_hash("hello there world")


def _generated(run, index, table):
    """Generated shard ``index`` as the generate stage leaves it: its file, then its committed marker."""
    uri = run.layout.shard("generate", index)
    storage.write_parquet(uri, table)
    given(run, "generate", {"shard": uri}, shard=index, stats={"rows": table.num_rows})
    return uri


def _shard(run, index, texts, finish="stop"):
    name = run.layout.shard("generate", index).rsplit("/", 1)[-1]  # shard-00000.parquet
    rows = [{"prompt_id": f"{name}-{i}", "text": t, "finish_reason": finish} for i, t in enumerate(texts)]
    return _generated(run, index, pa.Table.from_pylist(rows))


def test_filter_shard_counts_reasons_and_keeps_removed_rows(storage_uri, monkeypatch):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 5, "quality.max_words": 20}))
    run = RunContext.create(spec, "r")
    _shard(run, 0, [GOOD, "short one", "As an AI, I cannot help with bees and flowers at all.", "",
                    "Bees bees bees bees bees bees bees bees."])
    result = execute(run, "filter_shard", 0)
    assert result["stats"]["reasons"] == {
        "empty": 1, "truncated": 0, "too_short": 1, "too_long": 0, "refusal": 1,
        "too_few_chars": 0, "too_many_chars": 0, "symbol_word_ratio": 0, "bullet_lines_ratio": 0,
        "end_ellipsis_lines_ratio": 0, "mean_word_length": 0, "alpha_words_ratio": 0, "dup_para_frac": 0,
        "dup_para_char_frac": 0, "dup_line_frac": 0, "dup_line_char_frac": 0, "top_2_gram": 1, "top_3_gram": 0,
        "top_4_gram": 0, "duplicated_5_n_grams": 0, "duplicated_6_n_grams": 0, "duplicated_7_n_grams": 0,
        "duplicated_8_n_grams": 0, "duplicated_9_n_grams": 0, "duplicated_10_n_grams": 0,
        "wrong_language": 0, "generation_failed": 0,
    }
    assert list(result["stats"]["reasons"]) == list(REASONS)
    kept = storage.read_parquet(result["outputs"]["documents"]).to_pylist()
    removed = storage.read_parquet(result["outputs"]["removed"]).to_pylist()
    assert [r["text"] for r in kept] == [GOOD]
    assert sorted(r["filter_reason"] for r in removed) == ["empty", "refusal", "too_short", "top_2_gram"]
    assert kept[0]["n_words"] == 12 and kept[0]["text_hash"] == text_hash(GOOD)
    assert "filter_reason" not in kept[0]
    # The shard's marker (filter_shard/shard-00000.commit.json) carries its outputs and stats.
    marker = storage.read_json(run.layout.marker("filter_shard", 0))
    assert marker["stats"]["kept"] == 1 and marker["outputs"] == {
        "documents": run.layout.shard("filter_shard", 0), "removed": run.layout.removed("filter_shard", 0)}
    assert marker["outputs"] == result["outputs"] and (marker["stage"], marker["shard"]) == ("filter_shard", 0)
    # Committed: a re-run returns the same stats without reading the shard again.
    monkeypatch.setattr(storage, "iter_batches", lambda *a, **k: pytest.fail("re-read a committed shard"))
    again = execute(run, "filter_shard", 0)
    assert again["stats"]["kept"] == 1 and again["outputs"] == result["outputs"]


def test_exact_dedup_across_shards_keeps_first(storage_uri):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 1}))
    run = RunContext.create(spec, "r")
    given_plan(run, 2)
    given_history(run)  # a first version: nothing published to dedup against
    _shard(run, 0, [GOOD, "Another distinct document about rivers."])
    _shard(run, 1, [GOOD.upper() + "!!", "A third one, about clouds."])
    execute(run, "filter_shard", 1)  # the order the shards finish in does not matter: the plan's order does
    execute(run, "filter_shard", 0)
    for i in (0, 1):  # the judge (off here) passes the filtered shards on
        execute(run, "judge", i)
    result = execute(run, "dedup")
    assert result["stats"] == {"input": 4, "kept": 3, "removed": 1, "removed_in_run": 1, "removed_published": 0}
    kept = [r["prompt_id"] for u in result["outputs"]["documents"] for r in storage.read_parquet(u).to_pylist()]
    assert "shard-00000.parquet-0" in kept and "shard-00001.parquet-0" not in kept


def test_language_confusion_counts(storage_uri):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 5}))
    run = RunContext.create(spec, "r")
    french = "Les abeilles transportent le pollen de fleur en fleur pour que les plantes puissent faire des graines."
    german = "Die Bienen tragen den Pollen von Blüte zu Blüte, damit die Pflanzen Samen bilden können."
    rows = [{"prompt_id": f"p{i}", "text": t, "finish_reason": "stop", "language": lang}
            for i, (t, lang) in enumerate([(GOOD, "en"), (french, "en"), (french, "fr"), (german, "fr")])]
    _generated(run, 0, pa.Table.from_pylist(rows))
    result = execute(run, "filter_shard", 0)
    assert result["stats"]["language_confusion"] == {"en": {"en": 1, "fr": 1}, "fr": {"de": 1, "fr": 1}}
    assert result["stats"]["reasons"]["wrong_language"] == 2


def test_empty_shard_gives_valid_files_with_the_input_schema(storage_uri):
    run = RunContext.create(parse_spec(tiny_spec_dict()), "r")
    schema = pa.schema([("prompt_id", pa.string()), ("text", pa.string()), ("finish_reason", pa.string()),
                        ("attempts", pa.int64())])
    _generated(run, 0, schema.empty_table())
    result = execute(run, "filter_shard", 0)
    assert result["stats"]["input"] == result["stats"]["kept"] == result["stats"]["removed"] == 0
    assert set(result["stats"]["reasons"].values()) == {0}
    kept = storage.read_parquet(result["outputs"]["documents"])
    removed = storage.read_parquet(result["outputs"]["removed"])
    assert kept.num_rows == removed.num_rows == 0
    assert kept.schema.names == ["prompt_id", "text", "finish_reason", "attempts", "n_words", "n_chars", "text_hash"]
    assert removed.schema.names == kept.schema.names + ["filter_reason"]
    assert kept.schema.field("n_words").type == pa.int64() and kept.schema.field("attempts").type == pa.int64()


VOCAB = ("the a of and to in is that for it as with on was by at from this are be or have an they which one you "
         "were her all she there would their we him been has when who will more no if out so said what up its about "
         "into than them can only other new some could time these two may then do first any my now such like our over "
         "man me even most made after also did many before must through back years where much your way well down "
         "should because each just those people how too little state good very make world still own see men work long "
         "get here between both life being under never day same another know while last might us great old year off "
         "come since against go came right used take three bees hive honey flowers pollen garden river forest").split()


def _rows(n):
    rng = random.Random(7)
    bad = [v[0] for v in CRAFTED.values()] + ["", "short", "As an AI, I cannot write about bees, " + ARTICLE[:200]]
    rows = []
    for i in range(n):
        kind = i % 10
        if kind < 6:  # varied text, most of which passes
            text = " ".join(rng.choice(VOCAB) for _ in range(rng.randint(40, 120))).capitalize() + "."
        elif kind < 9:
            text = bad[i % len(bad)]
        else:
            text = ARTICLE
        rows.append({"prompt_id": f"p{i:05d}", "text": text, "finish_reason": "length" if i % 97 == 0 else "stop",
                     "language": "en" if i % 3 == 0 else None, "status": "failed" if i % 211 == 0 else "ok",
                     "attempt_reasons": ["too_short"] if i % 5 == 0 else []})
    return rows


def test_streaming_gives_the_same_result_as_row_by_row_rules(storage_uri, monkeypatch):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 1, "quality.drop_truncated": True}))
    run = RunContext.create(spec, "r")
    rows = _rows(3000)
    _generated(run, 0, pa.Table.from_pylist(rows))

    batches = []
    iter_batches = storage.iter_batches

    def counting(*args, **kwargs):
        for batch in iter_batches(*args, **kwargs):
            batches.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(storage, "iter_batches", counting)
    result = filter_shard.run(run, 0, batch_size=256)  # the stage function, with a smaller batch
    assert len(batches) == 12 and max(batches) == 256  # streamed, one batch at a time

    quality, phrases = spec.quality, refusal_phrases(spec.quality)
    expected_kept, expected_removed = [], []
    for row in rows:
        text = row["text"]
        if row["status"] == "failed":
            why = "generation_failed"
        else:
            detected = detect(text) if text.strip() and row["language"] else None
            why = reject_reason(row, quality, phrases, detected)
        (expected_kept if why is None else expected_removed).append((row["prompt_id"], why))
    kept = storage.read_parquet(result.outputs["documents"]).to_pylist()
    removed = storage.read_parquet(result.outputs["removed"]).to_pylist()
    assert [(r["prompt_id"], None) for r in kept] == expected_kept
    assert [(r["prompt_id"], r["filter_reason"]) for r in removed] == expected_removed
    assert 1000 < len(kept) < 2500  # a real mix of kept and removed rows
    counts = {r: sum(1 for _, why in expected_removed if why == r) for r in REASONS}
    assert result.stats["reasons"] == counts
    assert result.stats["input"] == 3000 and result.stats["kept"] == len(kept)
    assert len({why for _, why in expected_removed}) >= 12
    by_id = {r["prompt_id"]: r for r in rows}
    for r in kept[:50] + removed[:50]:  # every input column kept as it was, plus the added ones
        src = by_id[r["prompt_id"]]
        assert {k: r[k] for k in src} == src
        assert r["n_words"] == word_count(src["text"])
        assert r["n_chars"] == len(src["text"]) and r["text_hash"] == text_hash(src["text"])

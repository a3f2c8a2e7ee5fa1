from __future__ import annotations

import pyarrow as pa

from synthcorpus import storage
from synthcorpus.quality.dedup import dedup_exact
from synthcorpus.quality.filters import DEFAULT_REFUSAL_PHRASES, filter_shard, normalize, reject_reason, text_hash
from synthcorpus.run import RunContext
from synthcorpus.spec import QualitySpec, parse_spec
from tests.conftest import tiny_spec_dict

Q = QualitySpec(min_words=5, max_words=20, drop_truncated=True, refusal_phrases=["lorem ipsum"])
PHRASES = DEFAULT_REFUSAL_PHRASES + ("lorem ipsum",)
GOOD = "Bees carry pollen from flower to flower so plants can make seeds."


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


def test_refusal_words_late_in_a_story_are_dialogue_not_refusal():
    story = GOOD + " " + " ".join(["buzz"] * 0) + "x " * 100 + '"I\'m sorry, but I cannot stay," said the bee.'
    q = QualitySpec(min_words=5, max_words=500)
    assert reject_reason({"text": story, "finish_reason": "stop"}, q, PHRASES) is None


def test_normalized_hash_ignores_case_punctuation_and_spacing():
    assert normalize("Hello,   WORLD!\n") == "hello world"
    assert text_hash("Hello, world!") == text_hash("hello   world")
    assert text_hash("hello world") != text_hash("hello there world")


def _shard(run, name, texts, finish="stop"):
    rows = [{"prompt_id": f"{name}-{i}", "text": t, "finish_reason": finish} for i, t in enumerate(texts)]
    uri = run.run_uri("generate", name)
    storage.commit(uri, pa.Table.from_pylist(rows), {})
    return uri


def test_filter_shard_counts_reasons_and_keeps_removed_rows(storage_uri):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 5, "quality.max_words": 20}))
    run = RunContext.create(spec, "r")
    uri = _shard(run, "shard-00000.parquet", [GOOD, "short one", "As an AI, I cannot help with bees and flowers at all.", ""])
    result = filter_shard(run, uri)
    assert result.stats["reasons"] == {"empty": 1, "truncated": 0, "too_short": 1, "too_long": 0, "refusal": 1,
                                       "wrong_language": 0, "generation_failed": 0}
    kept = storage.read_parquet(result.outputs["kept"]).to_pylist()
    removed = storage.read_parquet(result.outputs["removed"]).to_pylist()
    assert [r["text"] for r in kept] == [GOOD]
    assert sorted(r["filter_reason"] for r in removed) == ["empty", "refusal", "too_short"]
    assert kept[0]["n_words"] == 12 and kept[0]["text_hash"] == text_hash(GOOD)
    # Committed: a re-run returns the same stats without recomputing.
    again = filter_shard(run, uri)
    assert again.stats["kept"] == 1 and again.outputs == result.outputs


def test_exact_dedup_across_shards_keeps_first(storage_uri):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 1}))
    run = RunContext.create(spec, "r")
    a = filter_shard(run, _shard(run, "shard-00000.parquet", [GOOD, "Another distinct document about rivers."])).outputs["kept"]
    b = filter_shard(run, _shard(run, "shard-00001.parquet", [GOOD.upper() + "!!", "A third one, about clouds."])).outputs["kept"]
    result = dedup_exact(run, [b, a])  # order given does not matter
    assert result.stats == {"input": 4, "kept": 3, "removed": 1}
    kept = [r["prompt_id"] for u in result.outputs["documents"] for r in storage.read_parquet(u).to_pylist()]
    assert "shard-00000.parquet-0" in kept and "shard-00001.parquet-0" not in kept


def test_language_confusion_counts(storage_uri):
    spec = parse_spec(tiny_spec_dict(**{"quality.min_words": 5}))
    run = RunContext.create(spec, "r")
    french = "Les abeilles transportent le pollen de fleur en fleur pour que les plantes puissent faire des graines."
    german = "Die Bienen tragen den Pollen von Blüte zu Blüte, damit die Pflanzen Samen bilden können."
    rows = [{"prompt_id": f"p{i}", "text": t, "finish_reason": "stop", "language": lang}
            for i, (t, lang) in enumerate([(GOOD, "en"), (french, "en"), (french, "fr"), (german, "fr")])]
    uri = run.run_uri("generate", "shard-00000.parquet")
    storage.commit(uri, pa.Table.from_pylist(rows), {})
    result = filter_shard(run, uri)
    assert result.stats["language_confusion"] == {"en": {"en": 1, "fr": 1}, "fr": {"de": 1, "fr": 1}}
    assert result.stats["reasons"]["wrong_language"] == 2

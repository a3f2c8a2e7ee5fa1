"""Topic stage without the real models: a hashing bag-of-words embedder stands in for MiniLM (the real
model is tested in tests/integration/test_topics_embed.py) and scripted engines stand in for the LLM."""

from __future__ import annotations

import hashlib
import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from synthcorpus import storage, topics
from synthcorpus.engines import Completion, Engine, EngineError, SamplingParams
from synthcorpus.spec import parse_spec
from synthcorpus.stages.contract import RunContext, execute
from synthcorpus.topics import (
    EmbeddingStore,
    TopicError,
    candidate_ks,
    cluster,
    ctfidf_keywords,
    decide,
    denied,
    parse_label_reply,
)
from tests.conftest import tiny_spec_dict
from tests.stagekit import given

# ------------------------------------------------------------------------------------------ fixtures

GROUP_WORDS = {
    "bees": "bees honey hive pollen flowers queen colony nectar beekeeper swarm".split(),
    "football": "football striker goal league match referee penalty stadium team coach".split(),
    "gossip": "celebrity gossip rumours star scandal paparazzi tabloid romance divorce party".split(),
}


def _texts(group: str, n: int) -> list[str]:
    words = GROUP_WORDS[group]
    return [" ".join(words[(i + j) % len(words)] for j in range(6)) + f" the and of {i}" for i in range(n)]


class HashEmbedder:
    """Bag of words hashed into 384 dims, L2-normalised: texts sharing words are close."""

    def encode(self, texts, batch_size=None, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False):
        out = np.zeros((len(texts), 384), dtype=np.float32)
        for r, text in enumerate(texts):
            for w in re.findall(r"[a-z]+", text.lower()):
                out[r, int(hashlib.md5(w.encode()).hexdigest()[:6], 16) % 384] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    monkeypatch.setattr(topics, "load_embedder", lambda: HashEmbedder())


@pytest.fixture(autouse=True)
def no_real_engine(monkeypatch):
    def refuse(cfg):
        raise AssertionError("the stage must not load the real engine in this test")

    monkeypatch.setattr(topics, "load_engine", refuse)


class ScriptedEngine(Engine):
    """Replies chosen by ``reply(prompt, attempt_no_for_this_prompt)``; records prompts, seeds and params."""

    name = "scripted"

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[tuple[str, int, SamplingParams]] = []
        self.closed = False

    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        attempt = sum(1 for p, _, _ in self.calls if p == prompt)
        self.calls.append((prompt, seed, params))
        text = self.reply(prompt, attempt)
        if isinstance(text, Exception):
            raise text
        return Completion(text, "stop", 10, 5, 0.001)

    def model_info(self) -> dict:
        return {"engine": "scripted", "model": "scripted"}

    def close(self) -> None:
        self.closed = True


def _group_of(prompt: str) -> str:
    counts = {g: sum(prompt.count(w) for w in words) for g, words in GROUP_WORDS.items()}
    return max(counts, key=counts.get)


def _run(tmp_path, run_id="r1", **topic_overrides):
    overrides = {f"topics.{k}": v for k, v in topic_overrides.items()}
    spec = parse_spec(tiny_spec_dict(**overrides))
    return RunContext.create(spec, run_id)


def _write_seeds(run, web_groups=(), per_group=12, outline=2, instructions=3) -> str:
    rows = []
    for i in range(outline):
        rows.append({"seed_id": f"o{i}", "kind": "outline", "text": f"Unit {i} description.", "subject": "Biology",
                     "course": "Bio 101", "unit": f"Unit title {i}"})
    for i in range(instructions):
        rows.append({"seed_id": f"i{i}", "kind": "instruction", "text": f"Write a story about {i}.", "subject": None,
                     "course": None, "unit": None})
    for g in web_groups:
        for i, text in enumerate(_texts(g, per_group)):
            rows.append({"seed_id": f"{g}-{i}", "kind": "web", "text": text, "subject": None, "course": None, "unit": None})
    uri = run.layout.output("seeds", "seeds")
    storage.write_parquet(uri, pa.Table.from_pylist(rows))
    return uri


def extract_topics(run, seeds_uri, engine=None):
    """The topics stage on a seeds table: the seeds marker committed as the seeds stage would have, then
    the stage run under the completion protocol with ``engine`` injected through the run context.
    Returns the topics marker."""
    given(run, "seeds", {"seeds": seeds_uri})
    return execute(RunContext.create(run.spec, run.run_id, run.params, engine), "topics")


def _read(result):
    rows = storage.read_parquet(result["outputs"]["topics"]).to_pylist()
    assigned = storage.read_parquet(result["outputs"]["assignments"]).to_pylist()
    return {t["topic_id"]: t for t in rows}, assigned


def _topic_of_group(tops, assigned, group):
    ids = {a["topic_id"] for a in assigned if a["seed_id"].startswith(group + "-")}
    assert len(ids) == 1, (group, ids)
    return tops[ids.pop()]


# ------------------------------------------------------------------------------------------ parsing


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Topic: Bees\nEducational value: 7", ("Bees", 7.0)),
        ("Topic: **Bees**\nEducational value: 7/10", ("Bees", 7.0)),
        ("**Topic:** Honey bees\n**Educational Value:** 8", ("Honey bees", 8.0)),
        ("topic: the solar system\neducational value: 0", ("the solar system", 0.0)),
        ("Sure! Here you go.\nTopic: \"Plate tectonics\".\nEducational value (0-10): 9 out of 10. Hope it helps!",
         ("Plate tectonics", 9.0)),
        ("Topic: Photosynthesis (biology), Educational value: 6.5", ("Photosynthesis (biology)", 6.5)),
        ("- Topic: Baking bread\n- Educational value: 10/10\nScore: 3", ("Baking bread", 10.0)),
        ("Topic: Knots\nEducational value: 3/5", ("Knots", 6.0)),
        ("Topic: 2. Crypto mining\nEducational value: 4", ("Crypto mining", 4.0)),
        ("Topic: 3D printing\nEducational value: 4", ("3D printing", 4.0)),
    ],
)
def test_parse_label_reply_accepts(reply, expected):
    assert parse_label_reply(reply) == expected


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "Topic: Bees",  # missing score
        "Educational value: 7",  # missing label
        "Topic: Bees\nEducational value: 11",  # out of range
        "Topic: Bees\nEducational value: -1",
        "Topic: Bees\nEducational value: high",
        "Topic: \nEducational value: 5",  # empty label
        "Topic: **  **\nEducational value: 5",
        "Topic: <short label, 2-6 words>\nEducational value: <integer 0-10>",  # the template echoed back
        "Topic: <topic>\nEducational value: <score>",
        "Topic: 2\nEducational value: 5",  # no letter in the label
        "Topic: Moons\nEducational value: 2.5%",
        "Topic: x\nEducational value: 10+3 = 13",
        "Topic: Whisk the eggs with sugar until pale, fold in the flour and bake the sponge cake for 25 minutes\n"
        "Educational value: 5",  # a sentence, not a label
        "I cannot help with that.",
    ],
)
def test_parse_label_reply_rejects(reply):
    assert parse_label_reply(reply) is None


# ------------------------------------------------------------------------------------------ keywords


def test_ctfidf_keywords_tiny_fixture():
    texts = [
        "Bees make honey in the hive.", "The hive of bees and their queen.", "Honey bees collect pollen.",
        "The striker scored a goal.", "A goal in the league match.", "The league striker missed a penalty.",
    ]
    kws = ctfidf_keywords(texts, [0, 0, 0, 1, 1, 1], top_n=3)
    assert len(kws) == 2
    assert set(kws[0]) <= {"bees", "honey", "hive"} and len(kws[0]) == 3
    assert set(kws[1]) <= {"striker", "goal", "league"} and len(kws[1]) == 3
    assert not {"the", "and", "of", "in", "a"} & set(kws[0] + kws[1])  # stop words removed


def test_ctfidf_keywords_shared_words_rank_low_and_empty_class():
    texts = ["apple banana shared", "apple banana shared shared", "cherry shared", "the and of"]
    kws = ctfidf_keywords(texts, [0, 0, 1, 2], top_n=2)
    assert kws[0] == ["apple", "banana"]
    assert kws[1][0] == "cherry"
    assert kws[2] == []  # only stop words


# ------------------------------------------------------------------------------------------ clustering


def test_embedding_store_chunks_and_take(tmp_path):
    rows = np.arange(10 * 4, dtype=np.float32).reshape(10, 4)
    with EmbeddingStore(dim=4, directory=str(tmp_path)) as store:
        store.append(rows[:3])
        store.append(rows[3:])
        got = list(store.chunks(4))
        assert [s for s, _ in got] == [0, 4, 8]
        np.testing.assert_array_equal(np.concatenate([c for _, c in got]), rows)
        np.testing.assert_array_equal(store.take(np.array([1, 5, 9]), rows=4), rows[[1, 5, 9]])
        with pytest.raises(ValueError):
            store.append(np.zeros((2, 3), dtype=np.float32))


def test_cluster_separates_blobs_over_many_chunks():
    rng = np.random.default_rng(0)
    centers = np.eye(8, dtype=np.float32)[:3] * 5
    truth = np.repeat(np.arange(3), [50, 40, 30])
    points = centers[truth] + rng.normal(scale=0.3, size=(120, 8)).astype(np.float32)
    perm = rng.permutation(120)
    with EmbeddingStore(dim=8) as store:
        for part in np.array_split(points[perm], 7):
            store.append(part)
        for k in (3, "auto"):
            result = cluster(store, k, max_clusters=10, seed=1, nearest=4, chunk_rows=16)
            assert result.k == 3, result.how
            assert result.sizes == [50, 40, 30]  # numbered by decreasing size
            for c in range(3):
                assert len(set(truth[perm][result.labels == c])) == 1
                assert len(result.nearest[c]) == 4 and all(result.labels[i] == c for i in result.nearest[c])
        clamped = cluster(store, 500, max_clusters=10, seed=1, nearest=1)
        assert "clamped" in clamped.how and sum(clamped.sizes) == 120
        # More extracts asked than a cluster holds: only that cluster's own rows.
        wide = cluster(store, 3, max_clusters=10, seed=1, nearest=45)
        assert [len(x) for x in wide.nearest] == [45, 40, 30]
        assert all(wide.labels[i] == c for c, rows in enumerate(wide.nearest) for i in rows)


def test_candidate_ks_are_small_and_bounded():
    assert candidate_ks(60, 40, 60)[0] == 2 and 3 in candidate_ks(60, 40, 60)
    big = candidate_ks(100_000, 40, 2000)
    assert max(big) == 40 and min(big) > 2 and len(big) <= 8
    assert candidate_ks(2, 40, 2) == []
    assert max(candidate_ks(10_000, 5, 2000)) == 5


# ------------------------------------------------------------------------------------------ drop rules


def test_deny_list_matches_at_word_starts_case_insensitively():
    deny = ["gossip", "celebrit", "dating", "sex"]
    assert denied(["Celebrity news"], deny) == "celebrit"
    assert denied(["Hollywood GOSSIP"], deny) == "gossip"
    assert denied(["Online dating tips"], deny) == "dating"
    assert denied(["Updating software", "Essex history"], deny) is None
    assert denied(["Bees"], deny) is None


def test_decide_order_and_reasons():
    kw = dict(min_score=3.0, deny=["gossip"])
    assert decide("Bees", [], 7.0, source="engine", **kw) == (True, "kept")
    assert decide("Bees", [], 2.0, source="engine", **kw) == (False, "score 2.0 < 3.0")
    assert decide("Bees", [], 3.0, source="engine", **kw) == (True, "kept")
    assert decide("Celebrity gossip", [], 9.0, source="engine", **kw) == (False, "deny-list: gossip")
    assert decide("stars, news", ["stars", "gossip"], None, source="fallback", **kw) == (False, "deny-list: gossip")
    assert decide("bees, honey", ["bees"], None, source="fallback", **kw) == (True, "kept (label fallback: keywords)")
    assert decide("bees, honey", ["bees"], None, source="keywords", **kw) == (True, "kept (labeler: keywords)")


# ------------------------------------------------------------------------------------------ the stage


def test_outline_and_instructions_without_web_need_no_model(tmp_path, storage_uri, monkeypatch):
    monkeypatch.setattr(topics, "load_embedder", lambda: (_ for _ in ()).throw(AssertionError("no embedding")))
    run = _run(tmp_path)
    result = extract_topics(run, _write_seeds(run, outline=3, instructions=4))
    tops, assigned = _read(result)
    assert set(tops) == {"o0", "o1", "o2", "instructions"}
    o = tops["o1"]
    assert (o["kind"], o["label"], o["label_source"], o["kept"], o["size"], o["score"], o["label_attempts"]) == (
        "outline", "Unit title 1", "outline", True, 1, None, 0)
    assert o["reason"] == "outline unit" and (o["subject"], o["course"]) == ("Biology", "Bio 101")
    i = tops["instructions"]
    assert (i["kind"], i["label"], i["label_source"], i["kept"], i["size"]) == (
        "instruction", "instructions", "instruction", True, 4)
    assert Counter(a["topic_id"] for a in assigned) == {"o0": 1, "o1": 1, "o2": 1, "instructions": 4}
    assert result["stats"]["seeds_by_kind"] == {"instruction": 4, "outline": 3}
    assert storage.read_json(run.layout.marker("topics"))["outputs"] == result["outputs"] == {
        "topics": run.layout.output("topics", "topics"), "assignments": run.layout.output("topics", "assignments")}


def test_every_seed_assigned_exactly_once(tmp_path, storage_uri):
    run = _run(tmp_path, n_clusters=3, labeler="keywords", deny=GROUP_WORDS["gossip"])
    seeds_uri = _write_seeds(run, web_groups=("bees", "football", "gossip"), per_group=15)
    result = extract_topics(run, seeds_uri)
    tops, assigned = _read(result)
    seed_ids = storage.read_parquet(seeds_uri).column("seed_id").to_pylist()
    assert sorted(a["seed_id"] for a in assigned) == sorted(seed_ids)
    assert {a["topic_id"] for a in assigned} <= set(tops)
    for t in tops.values():
        assert t["size"] == sum(a["topic_id"] == t["topic_id"] for a in assigned)
    web = [t for t in tops.values() if t["kind"] == "web"]
    assert len(web) == 3 and all(t["label_source"] == "keywords" and t["label_attempts"] == 0 for t in web)
    gossip = _topic_of_group(tops, assigned, "gossip")
    assert not gossip["kept"] and gossip["reason"].startswith("deny-list: ")
    bees = _topic_of_group(tops, assigned, "bees")
    assert bees["kept"] and bees["reason"] == "kept (labeler: keywords)" and bees["score"] is None
    assert bees["label"] == ", ".join(bees["keywords"][:3]) and set(bees["keywords"]) <= set(GROUP_WORDS["bees"])
    assert bees["extract"] in _texts("bees", 15)
    assert result["stats"]["web"]["k_how"] == "fixed" and result["stats"]["dropped_by_reason"] == {"deny-list": 1}


def test_retry_then_fallback_counts_attempts(tmp_path, storage_uri):
    def reply(prompt, attempt):
        group = _group_of(prompt)
        if group == "bees":  # garbage, then a good reply
            return ["Sure, here is a topic for you!", "Topic: Honey bees\nEducational value: 8/10"][min(attempt, 1)]
        if group == "football":  # always garbage, one engine error on the way
            return EngineError("llamacpp: generation failed (boom)") if attempt == 1 else "Topic: football"
        return "Topic: Celebrity gossip\nEducational value: 9"

    engine = ScriptedEngine(reply)
    run = _run(tmp_path, n_clusters=3, label_retries=2, label_samples=4, label_max_tokens=40, seed=7)
    result = extract_topics(run, _write_seeds(run, web_groups=("bees", "football", "gossip")), engine=engine)
    tops, assigned = _read(result)
    bees = _topic_of_group(tops, assigned, "bees")
    assert (bees["label"], bees["score"], bees["label_source"], bees["label_attempts"], bees["kept"], bees["reason"]) == (
        "Honey bees", 8.0, "engine", 2, True, "kept")
    foot = _topic_of_group(tops, assigned, "football")
    assert (foot["score"], foot["label_source"], foot["label_attempts"], foot["kept"]) == (None, "keywords", 3, True)
    assert foot["reason"] == "kept (label fallback: keywords)" and foot["label"] == ", ".join(foot["keywords"][:3])
    gossip = _topic_of_group(tops, assigned, "gossip")
    assert (gossip["label_attempts"], gossip["kept"], gossip["reason"]) == (1, False, "deny-list: gossip")

    assert len(engine.calls) == 2 + 3 + 1
    foot_calls = [(p, s) for p, s, _ in engine.calls if _group_of(p) == "football"]
    assert len({s for _, s in foot_calls}) == 3  # a different seed per attempt
    prompt, _, params = engine.calls[0]
    assert params.temperature == 0.3 and params.max_tokens == 40
    assert prompt.count("\n1. ") == 1 and "\n4. " in prompt and "\n5. " not in prompt  # label_samples extracts
    web = result["stats"]["web"]
    assert web["label_calls"] == 6 and web["label_fallbacks"] == 1 and web["label_template"]["version"] == "1"
    assert any("boom" in e for e in web["label_errors"])
    assert result["stats"]["label_sources"] == {"engine": 2, "instruction": 1, "keywords": 1, "outline": 2}
    assert not engine.closed  # the caller's engine stays open

    # Same spec and seeds: same labels and the same sampling seeds.
    again = ScriptedEngine(reply)
    extract_topics(_run(tmp_path, "r2", n_clusters=3, label_retries=2, label_samples=4, label_max_tokens=40, seed=7),
                   _write_seeds(run, web_groups=("bees", "football", "gossip")), engine=again)
    assert [s for _, s, _ in again.calls] == [s for _, s, _ in engine.calls]


def test_min_score_drops_and_engine_is_created_lazily(tmp_path, storage_uri, monkeypatch):
    scores = {"bees": 8, "football": 2, "gossip": 5}
    created: list[ScriptedEngine] = []

    def make(cfg):
        assert cfg["engine"] == "llamacpp" and "base_dir" in cfg
        created.append(ScriptedEngine(lambda p, a: f"Topic: {_group_of(p).title()} things\nEducational value: {scores[_group_of(p)]}"))
        return created[-1]

    monkeypatch.setattr(topics, "load_engine", make)
    run = _run(tmp_path, n_clusters=3, min_score=3.0, deny=[])
    result = extract_topics(run, _write_seeds(run, web_groups=("bees", "football", "gossip")))
    tops, assigned = _read(result)
    assert len(created) == 1 and created[0].closed  # one engine, created by the stage, closed by it
    foot = _topic_of_group(tops, assigned, "football")
    assert (foot["kept"], foot["reason"], foot["score"]) == (False, "score 2.0 < 3.0", 2.0)
    gossip = _topic_of_group(tops, assigned, "gossip")
    assert (gossip["kept"], gossip["label"]) == (True, "Gossip things")  # empty deny-list
    assert result["stats"]["kept"] == 2 + 1 + 2 and result["stats"]["dropped"] == 1
    assert result["stats"]["web"]["label_engine"] == {"engine": "scripted", "model": "scripted"}

    # No web seeds: no engine at all.
    created.clear()
    extract_topics(_run(tmp_path, "r3"), _write_seeds(run))
    assert created == []


def test_keywords_labeler_never_calls_the_engine(tmp_path, storage_uri):
    engine = ScriptedEngine(lambda p, a: AssertionError("called"))
    run = _run(tmp_path, labeler="keywords", n_clusters=2)
    result = extract_topics(run, _write_seeds(run, web_groups=("bees", "football")), engine=engine)
    assert engine.calls == [] and result["stats"]["web"]["label_calls"] == 0


def test_missing_label_template_names_the_file(tmp_path, storage_uri, copy_include):
    (copy_include / "prompts" / "topic_label.j2").unlink()
    data = tiny_spec_dict(**{"prompts.template_dir": str(copy_include / "prompts"), "topics.n_clusters": 2})
    run = RunContext.create(parse_spec(data), "r1")
    with pytest.raises(TopicError, match="topic_label.j2"):
        extract_topics(run, _write_seeds(run, web_groups=("bees", "football")), engine=ScriptedEngine(lambda p, a: ""))


def test_bad_seeds_tables_are_rejected(tmp_path, storage_uri):
    run = _run(tmp_path)
    uri = storage.join(run.layout.stage_dir("seeds"), "bad.parquet")
    storage.write_parquet(uri, pa.Table.from_pylist([{"seed_id": "a", "kind": "tweet", "text": "x", "unit": None}]))
    with pytest.raises(TopicError, match="kind: expected one of outline, web, instruction, got 'tweet'"):
        extract_topics(run, uri)
    storage.write_parquet(uri, pa.Table.from_pylist([{"seed_id": "a", "kind": "instruction", "text": "x"}] * 2))
    with pytest.raises(TopicError, match="more than once"):
        extract_topics(run, uri)


def test_walking_skeleton_outline_table_still_reads(tmp_path, storage_uri):
    """The old outline-only seeds table (no kind, description instead of text) is read as outline seeds."""
    run = _run(tmp_path)
    uri = storage.join(run.layout.stage_dir("seeds"), "old.parquet")
    storage.write_parquet(uri, pa.Table.from_pylist(
        [{"seed_id": "s1", "subject": "Math", "course": "Algebra", "unit": "Fractions", "description": "Parts of a whole."}]))
    tops, _ = _read(extract_topics(run, uri))
    assert tops["s1"]["label"] == "Fractions" and tops["s1"]["extract"] == "Parts of a whole."

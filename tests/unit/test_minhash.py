from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from synthcorpus import storage
from synthcorpus.quality.minhash import (
    MinHashParams,
    estimated_jaccard,
    find_clusters,
    signatures,
    write_signatures,
)
from synthcorpus.spec import parse_spec
from synthcorpus.stages.contract import RunContext, execute, read_marker
from tests.conftest import ROOT, tiny_spec_dict
from tests.stagekit import given_documents

TOPICS = {
    "bees": "bee hive pollen flower nectar queen worker honey wax colony swarm garden bloom meadow",
    "ships": "ship sail harbor captain anchor deck wave storm mast crew port voyage compass island",
    "stars": "star galaxy telescope orbit planet comet nebula light year gravity moon solar sky dust",
    "bread": "flour yeast dough oven crust knead loaf butter salt water rise bake wheat kitchen",
    "code": "python function loop variable compiler bug test library server syntax class module error api",
}
FILLER = "the a of and to in is for with on that it was as are by from very also then".split()
BOILERPLATE = ("In this lesson we will learn about an important topic step by step with clear examples "
               "and questions at the end so that every student can follow along and review the key ideas.")


def doc(topic: str, seed: int, words: int = 200) -> str:
    rng = random.Random(f"{topic}-{seed}")
    vocab = TOPICS[topic].split()
    return " ".join(rng.choice(vocab) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(words))


def edit(text: str, n_edits: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), n_edits):
        words[i] = f"changed{i}"
    return " ".join(words)


def swap_paragraphs(text: str) -> str:
    words = text.split()
    third = len(words) // 3
    return " ".join(words[third : 2 * third] + words[:third] + words[2 * third :])


@pytest.fixture
def corpus() -> tuple[list[str], list[str], dict[str, str]]:
    """Distinct documents, planted near-duplicates (expected keep id for each), boilerplate-sharing docs."""
    texts, ids, planted = [], [], {}
    for t, topic in enumerate(TOPICS):
        for s in range(4):
            texts.append(doc(topic, s))
            ids.append(f"{topic}-{s}")
            texts.append(BOILERPLATE + " " + doc(topic, 100 + s, 150))  # template opening, own body
            ids.append(f"{topic}-tpl-{s}")
    base = texts[ids.index("bees-0")]
    for name, text in [("bees-0-edit", edit(base, 4)), ("bees-0-swap", swap_paragraphs(base)),
                       ("bees-0-punct", base.upper().replace(" hive ", ", Hive! "))]:
        texts.append(text)
        ids.append(name)
        planted[name] = "bees-0"
    other = texts[ids.index("stars-2")]
    texts.insert(3, edit(other, 3, seed=7))  # earlier in global order than stars-2: it is the one kept
    ids.insert(3, "stars-2-early-edit")
    planted["stars-2"] = "stars-2-early-edit"
    return texts, ids, planted


def _run(storage_uri: str, name: str) -> RunContext:
    return RunContext.create(parse_spec(tiny_spec_dict()), name)


def _write_shards(run: RunContext, texts: list[str], ids: list[str], n_shards: int) -> list[str]:
    bounds = np.linspace(0, len(texts), n_shards + 1).astype(int)
    uris = []
    for k in range(n_shards):
        lo, hi = bounds[k], bounds[k + 1]
        uri = run.layout.shard("dedup", k)
        storage.write_parquet(uri, pa.table({"prompt_id": pa.array(ids[lo:hi], pa.string()),
                                             "text": pa.array(texts[lo:hi], pa.string())}))
        uris.append(uri)
    return uris


def _signatures(run: RunContext, uris: list[str], params: MinHashParams,
                indexes: list[int] | None = None) -> tuple[list[str], list[dict]]:
    """Signature files of document shards (shard index: ``indexes``, else the position in ``uris``) and their stats."""
    out, stats = [], []
    for k, uri in zip(indexes or range(len(uris)), uris):
        sig_uri = run.layout.shard("minhash_signatures", k)
        stats.append(write_signatures(uri, sig_uri, k, params))
        out.append(sig_uri)
    return out, stats


def _clusters(run, texts, ids, n_shards, params=None):
    params = params or MinHashParams()
    sig_uris, _ = _signatures(run, _write_shards(run, texts, ids, n_shards), params)
    return find_clusters(list(reversed(sig_uris)), params), sig_uris  # the order given does not matter


def test_params_threshold():
    assert MinHashParams().threshold() == pytest.approx((1 / 14) ** (1 / 8))
    assert 0.71 < MinHashParams().threshold() < 0.73
    with pytest.raises(ValueError):
        MinHashParams(bands=0)


def test_signature_estimates_jaccard_and_ignores_formatting():
    base = doc("bees", 0)
    sig = signatures([base, base.upper() + " !!", edit(base, 4), doc("ships", 0), doc("bees", 1)])
    assert sig.shape == (5, 112) and sig.dtype == np.uint32
    assert (sig[0] == sig[1]).all()  # normalize(): case and punctuation do not matter
    assert estimated_jaccard(sig[0], sig[2]) > 0.7
    assert estimated_jaccard(sig[0], sig[3]) < 0.1
    assert estimated_jaccard(sig[0], sig[4]) < 0.3  # same topic, different words


def test_unrelated_documents_share_almost_no_minhash_values():
    # Guards against a degenerate hash family (e.g. (a*x+b) mod 2^61-1 with a, x < 2^32 is monotonic in x,
    # so every function picks the same shingle and unrelated documents look identical).
    rng = random.Random(5)
    vocab = [f"w{i}" for i in range(3000)]
    sig = signatures([" ".join(rng.choices(vocab, k=150)) for _ in range(40)])
    eq = (sig[:, None, :] == sig[None, :, :]).mean(axis=2)
    np.fill_diagonal(eq, 0)
    assert eq.max() < 0.1
    assert len({tuple(r[:4]) for r in sig}) == 40


def test_signatures_accept_tables_and_batches_identically():
    texts = [doc("code", i) for i in range(7)] + ["", "two words"]
    table = pa.table({"text": texts})
    a = signatures(texts, MinHashParams(batch_size=3))
    b = signatures(table, MinHashParams())
    c = signatures(iter(table.to_batches(max_chunksize=2)), MinHashParams())
    assert (a == b).all() and (b == c).all()


def test_planted_near_duplicates_found_distinct_kept(storage_uri, corpus):
    texts, ids, planted = corpus
    clusters, _ = _clusters(_run(storage_uri, "r"), texts, ids, 3)
    found = {d: keep for keep, dups in clusters for d in dups}
    assert found == planted
    assert [k for k, _ in clusters] == ["bees-0", "stars-2-early-edit"]  # ordered by global position


def test_one_vs_eight_shards_identical(storage_uri, corpus):
    texts, ids, _ = corpus
    one, _ = _clusters(_run(storage_uri, "one"), texts, ids, 1)
    eight, uris = _clusters(_run(storage_uri, "eight"), texts, ids, 8)
    assert one == eight and len(one) == 2 and len(uris) == 8


def test_empty_shard_and_short_documents(storage_uri):
    run = _run(storage_uri, "r")
    texts = ["tiny doc", "Tiny doc!", "", "   ", "another tiny one", doc("bread", 1), doc("bread", 1) + " extra"]
    ids = [f"d{i}" for i in range(len(texts))]
    uris = _write_shards(run, texts, ids, 2)
    empty = run.layout.shard("dedup", 7)
    storage.write_parquet(empty, pa.table({"prompt_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    params = MinHashParams()
    sig_uris, stats = _signatures(run, uris + [empty], params, [0, 1, 7])
    assert storage.read_parquet(sig_uris[-1]).num_rows == 0
    assert sum(s["no_shingles"] for s in stats) == 2  # "" and "   " are never clustered
    # Short docs (< ngram words) are one shingle of all their words: identical after normalize() -> cluster.
    assert find_clusters(sig_uris, params) == [("d0", ["d1"]), ("d5", ["d6"])]
    assert find_clusters([sig_uris[-1]], params) == []
    assert find_clusters([], params) == []


def test_minhash_signatures_shard_is_idempotent_and_near_dedup_writes_clusters(storage_uri, corpus):
    texts, ids, planted = corpus
    run = _run(storage_uri, "r")
    uri = _write_shards(run, texts, ids, 1)[0]
    given_documents(run, "dedup", [uri])  # the exact-dedup stage produced this one shard
    out = execute(run, "minhash_signatures", 0)["outputs"]["signatures"]
    assert out.endswith("minhash_signatures/shard-00000.parquet") and out == run.layout.shard("minhash_signatures", 0)
    cols = storage.read_parquet(out).column_names
    assert cols[:4] == ["shard", "row", "prompt_id", "n_shingles"] and "band_13" in cols and cols[-1] == "sig"
    marker = read_marker(run.layout.marker("minhash_signatures", 0))
    assert marker["stats"]["source"] == uri and marker["stats"]["params"] == MinHashParams().signature_key()
    again = execute(run, "minhash_signatures", 0)  # committed: not recomputed, marker untouched
    assert again["outputs"]["signatures"] == out and again["skipped"] is True
    assert read_marker(run.layout.marker("minhash_signatures", 0)) == marker
    result = execute(run, "near_dedup")
    table = storage.read_parquet(result["outputs"]["clusters"]).to_pylist()
    assert {r["dup_id"]: r["keep_id"] for r in table} == planted
    assert result["stats"]["duplicates"] == len(planted)
    with pytest.raises(ValueError):
        find_clusters([out], MinHashParams(rows=4, bands=28))


def test_verification_can_be_disabled(storage_uri, corpus):
    texts, ids, planted = corpus
    clusters, _ = _clusters(_run(storage_uri, "r"), texts, ids, 2, MinHashParams(verify_threshold=None))
    assert {d: k for k, ds in clusters for d in ds} == planted


def test_signatures_are_identical_across_processes():
    code = ("from synthcorpus.quality.minhash import signatures;"
            "from tests.unit.test_minhash import doc;"
            "print(signatures([doc('ships', 3), 'short text']).sum(axis=1, dtype='uint64').tolist())")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout for seed in (1, 2)}
    here = signatures([doc("ships", 3), "short text"]).sum(axis=1, dtype="uint64").tolist()
    assert outs == {f"{here}\n"}

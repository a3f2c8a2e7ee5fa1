"""The published-document index (synthcorpus.quality.published_index): segments written from real MinHash
signatures of small synthetic texts, queried for published prompt ids, exact and near duplicates."""

from __future__ import annotations

import hashlib
import json
import random
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem

from synthcorpus import storage
from synthcorpus.quality import published_index as pidx
from synthcorpus.quality.filters import text_hash
from synthcorpus.quality.minhash import MinHashParams, band_columns, band_hashes, batch_signatures
from synthcorpus.quality.published_index import PublishedIndex, PublishedIndexError, write_segment

PARAMS = MinHashParams()
VOCAB = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]  # 520 words


def text(rng: random.Random, words: int = 120) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(words))


def edit(t: str, rng: random.Random, changes: int) -> str:
    words = t.split()
    for j in rng.sample(range(len(words)), changes):
        words[j] = rng.choice(VOCAB)
    return " ".join(words)


def features(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sig, counts = batch_signatures(texts, PARAMS)
    return sig, band_hashes(sig, PARAMS), counts


def table(ids: list[str], texts: list[str]) -> pa.Table:
    sig, bands, counts = features(texts)
    cols = {"prompt_id": pa.array(ids, pa.string()), "text_hash": pa.array([text_hash(t) for t in texts]),
            "n_shingles": pa.array(counts.astype(np.int32))}
    for i, c in enumerate(band_columns(PARAMS)):
        cols[c] = pa.array(bands[:, i])
    cols["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), PARAMS.num_perm)
    return pa.table(cols)


@pytest.fixture(params=["memory", "file"])
def root(request, tmp_path) -> str:
    if request.param == "memory":
        uri = f"memory://published-index-{uuid.uuid4().hex}"
        yield uri
        storage.delete(uri)
    else:
        yield (tmp_path / "corpus" / "index").as_uri()


@pytest.fixture
def history(root):
    """Two published versions: v1 (40 docs a0..a39, one empty) and v2 (30 docs b0..b29, b0 a 12-word
    edit of a5)."""
    rng = random.Random(7)
    v1 = [text(rng) for _ in range(40)]
    v1[39] = ""
    v2 = [edit(v1[5], rng, 12)] + [text(rng) for _ in range(29)]
    write_segment(root, "v1", [table([f"a{i}" for i in range(40)], v1)], PARAMS, partitions=4)
    write_segment(root, "v2", table([f"b{i}" for i in range(30)], v2).to_batches(max_chunksize=8), PARAMS, partitions=3)
    return root, v1, v2


def test_published_prompts_in_either_segment(history):
    root, _, _ = history
    index = PublishedIndex.open(root, ["v1", "v2"], PARAMS)
    assert index.published_prompts(["a0", "a39", "b29", "b30", "a40", "zzz", "a0"]) == {"a0", "a39", "b29"}
    assert index.stats()["segments"] == 2 and index.stats()["documents"] == 70
    assert PublishedIndex.open(root, ["v2"], PARAMS).published_prompts(["a0", "b3"]) == {"b3"}


def test_exact_duplicates_use_the_normalized_text_hash(history):
    root, v1, v2 = history
    index = PublishedIndex.open(root, ["v1", "v2"], PARAMS)
    rng = random.Random(1)
    copy_v1 = "  " + v1[3].upper().replace(" ", "   ") + "\n"  # same normal form as a3
    unrelated = text(rng)
    got = index.exact_duplicates([text_hash(copy_v1), text_hash(v2[17]), text_hash(unrelated)])
    assert got == {text_hash(copy_v1): "a3", text_hash(v2[17]): "b17"}
    with pytest.raises(PublishedIndexError, match=r"text_hashes\[0\]: expected a hex string"):
        index.exact_duplicates(["not-hex"])


def test_near_duplicates_found_in_either_segment_and_unrelated_not_flagged(history):
    root, v1, v2 = history
    index = PublishedIndex.open(root, ["v1", "v2"], PARAMS)
    rng = random.Random(3)
    new = [text(rng), edit(v1[12], rng, 3), edit(v2[20], rng, 3), text(rng), "", edit(v1[30], rng, 2), text(rng)]
    sig, bands, counts = features(new)
    got = index.near_duplicates(sig, bands, counts)
    assert [(row, pid) for row, pid, _ in got] == [(1, "a12"), (2, "b20"), (5, "a30")]
    assert all(PARAMS.verify_threshold <= j < 1.0 for _, _, j in got)
    # an exact copy is a near-duplicate with estimated Jaccard 1
    sig, bands, counts = features([v2[4]])
    assert index.near_duplicates(sig, bands, counts) == [(0, "b4", 1.0)]


def test_near_duplicates_one_best_match_per_row(history):
    """b0 (v2) is a 12-word edit of a5 (v1); a 2-word edit of b0 collides with both: b0 is the closer."""
    root, v1, v2 = history
    index = PublishedIndex.open(root, ["v1", "v2"], PARAMS)
    sig, bands, counts = features([edit(v2[0], random.Random(5), 2)])
    pub, _, _ = features([v1[5], v2[0]])
    got = index.near_duplicates(sig, bands, counts)
    assert len(got) == 1 and got[0][1] == "b0"
    assert got[0][2] == pytest.approx(float(np.mean(sig[0] == pub[1])))
    assert got[0][2] > float(np.mean(sig[0] == pub[0]))


def test_verify_threshold_drops_candidates_and_none_keeps_them(history):
    root, v1, _ = history
    rng = random.Random(11)
    new = [edit(v1[8], rng, 2)]
    sig, bands, counts = features(new)
    strict = MinHashParams(verify_threshold=0.99)
    assert PublishedIndex.open(root, ["v1"], strict).near_duplicates(sig, bands, counts) == []
    loose = PublishedIndex.open(root, ["v1"], MinHashParams(verify_threshold=None)).near_duplicates(sig, bands, counts)
    assert [(r, p) for r, p, _ in loose] == [(0, "a8")] and loose[0][2] < 0.99


def test_empty_documents_never_match(history):
    root, v1, _ = history
    index = PublishedIndex.open(root, ["v1", "v2"], PARAMS)
    sig, bands, counts = features(["", "   "])
    assert counts.tolist() == [0, 0]
    assert index.near_duplicates(sig, bands, counts) == []  # a39 is empty too: no band keys for it
    assert index.exact_duplicates([text_hash("")]) == {text_hash(""): "a39"}  # but its text hash is indexed


def test_empty_index(root):
    index = PublishedIndex.open(root, [], PARAMS)
    sig, bands, counts = features(["some words here for a document of several words"])
    assert index.published_prompts(["a0"]) == set()
    assert index.exact_duplicates([text_hash("x")]) == {}
    assert index.near_duplicates(sig, bands, counts) == []
    assert index.stats() == {"segments": 0, "documents": 0, "bytes": 0, "partitions": 0}
    write_segment(root, "v0", [], PARAMS, partitions=2)  # a version that published nothing
    empty = PublishedIndex.open(root, ["v0"], PARAMS)
    assert empty.stats()["documents"] == 0 and empty.near_duplicates(sig, bands, counts) == []
    assert empty.published_prompts(["a0"]) == set()


def test_params_mismatch_names_segment_json_and_both_param_sets(history):
    root, _, _ = history
    other = MinHashParams(seed=99)
    with pytest.raises(PublishedIndexError) as err:
        PublishedIndex.open(root, ["v1", "v2"], other)
    msg = str(err.value)
    assert storage.join(root, "v1", "segment.json") in msg
    assert json.dumps(PARAMS.signature_key(), sort_keys=True) in msg and '"seed": 99' in msg and "full rebuild" in msg
    # verify_threshold does not change signatures: not a mismatch
    PublishedIndex.open(root, ["v1"], MinHashParams(verify_threshold=0.9))


def test_missing_segment_names_its_commit(root):
    with pytest.raises(PublishedIndexError, match=r"v9/segment.json: missing"):
        PublishedIndex.open(root, ["v9"], PARAMS)


@pytest.mark.parametrize("rel", [pidx.partition_file(1), pidx.SIGS_FILE, pidx.DOCS_FILE])
def test_deleted_file_is_named(history, rel):
    root, _, _ = history
    uri = storage.join(root, "v2", rel)
    storage.delete(uri)
    with pytest.raises(PublishedIndexError, match=rf"{rel}: missing; expected \d+ bytes") as err:
        PublishedIndex.open(root, ["v1", "v2"], PARAMS)
    assert uri in str(err.value)


@pytest.mark.parametrize("rel", [pidx.partition_file(2), pidx.SIGS_FILE])
def test_truncated_file_is_named(history, rel):
    root, _, _ = history
    uri = storage.join(root, "v1", rel)
    data = storage.read_bytes(uri)
    storage.write_bytes(uri, data[: len(data) // 2])
    with pytest.raises(PublishedIndexError, match=rf"{rel}: \d+ bytes, expected \d+") as err:
        PublishedIndex.open(root, ["v1"], PARAMS)
    assert uri in str(err.value) and "segment.json" in str(err.value)


def test_corrupt_file_of_the_same_size(history):
    root, _, _ = history
    index = PublishedIndex.open(root, ["v1"], PARAMS)
    index.verify()
    uri = storage.join(root, "v1", pidx.DOCS_FILE)
    data = bytearray(storage.read_bytes(uri))
    data[4:40] = bytes(36)  # inside the first data page, same size
    storage.write_bytes(uri, bytes(data))
    with pytest.raises(PublishedIndexError, match=r"docs.parquet: sha256 [0-9a-f]{64} \(\d+ bytes\), expected"):
        PublishedIndex.open(root, ["v1"], PARAMS).verify()
    storage.write_bytes(uri, b"not parquet at all" * (len(data) // 18) + b"x" * (len(data) % 18))
    with pytest.raises(PublishedIndexError, match=r"docs.parquet: expected a Parquet file"):
        PublishedIndex.open(root, ["v1"], PARAMS).published_prompts(["a1"])


def test_many_small_batches_equal_one_big_batch(root):
    rng = random.Random(2)
    texts = [text(rng, 60) for _ in range(50)]
    big = table([f"p{i}" for i in range(50)], texts)
    one = write_segment(root, "one", [big], PARAMS, partitions=5)
    sizes = [1, 7, 0, 13, 2, 27]
    batches, start = [], 0
    for n in sizes:
        batches.append(big.slice(start, n).to_batches()[0] if n else big.slice(0, 0))
        start += n
    many = write_segment(root, "many", iter(batches), PARAMS, partitions=5)
    assert {k: v for k, v in one.items() if k != "name"} == {k: v for k, v in many.items() if k != "name"}
    assert one["documents"] == 50 and one["keys"] == {"prompt": 50, "text": 50, "band": 50 * PARAMS.bands}


def test_rewrite_replaces_the_segment(root):
    rng = random.Random(4)
    write_segment(root, "v1", [table(["x0", "x1"], [text(rng), text(rng)])], PARAMS, partitions=6)
    commit = write_segment(root, "v1", [table(["y0"], [text(rng)])], PARAMS, partitions=2)
    index = PublishedIndex.open(root, ["v1"], PARAMS)
    assert index.segment("v1") == commit == storage.read_json(storage.join(root, "v1", "segment.json"))
    assert index.published_prompts(["x0", "x1", "y0"]) == {"y0"}
    names = sorted(u.rsplit("/v1/", 1)[1] for u in storage.list_files(storage.join(root, "v1")))
    assert names == ["docs.parquet", "keys/partition-00000.parquet", "keys/partition-00001.parquet", "segment.json", "sigs.bin"]
    index.verify()


def test_bad_input_names_the_segment_and_the_column_and_keeps_the_commit(root):
    rng = random.Random(6)
    t = table(["x0"], [text(rng)])
    committed = write_segment(root, "v1", [t], PARAMS, partitions=2)
    with pytest.raises(PublishedIndexError, match=r"v1: input batch 0: column 'band_03' missing; expected uint64"):
        write_segment(root, "v1", [t.drop_columns(["band_03"])], PARAMS)
    with pytest.raises(PublishedIndexError, match=r"column 'sig': expected fixed_size_list<item: uint32>\[56\], got fixed_size_list<item: uint32>\[112\]"):
        write_segment(root, "v1", [t], MinHashParams(bands=7, rows=8))
    with pytest.raises(PublishedIndexError, match=r"column 'prompt_id': expected no nulls"):
        write_segment(root, "v1", [t.set_column(0, "prompt_id", pa.array([None], pa.string()))], PARAMS)
    with pytest.raises(PublishedIndexError, match=r"segment name 'a/b': expected one path component"):
        write_segment(root, "a/b", [t], PARAMS)
    # a failed rewrite leaves the committed segment as it was
    index = PublishedIndex.open(root, ["v1"], PARAMS)
    assert index.segment("v1") == committed and index.published_prompts(["x0"]) == {"x0"}
    index.verify()


def fake_hash(i: int) -> str:
    return hashlib.sha256(f"doc {i}".encode()).hexdigest()


def random_table(n: int, start: int = 0, seed: int = 0) -> pa.Table:
    """n documents with random signatures and derived band hashes (no MinHash: cheap)."""
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32, size=(n, PARAMS.num_perm), dtype=np.uint32)
    bands = band_hashes(sig, PARAMS)
    cols = {"prompt_id": pa.array([f"r{i}" for i in range(start, start + n)]),
            "text_hash": pa.array([fake_hash(i) for i in range(start, start + n)]),
            "n_shingles": pa.array(np.full(n, 50, np.int32))}
    for i, c in enumerate(band_columns(PARAMS)):
        cols[c] = pa.array(bands[:, i])
    cols["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), PARAMS.num_perm)
    return pa.table(cols)


def test_queries_read_only_the_row_groups_they_need(tmp_path, monkeypatch):
    """20 000 docs: docs.parquet in row groups of 8192, the keys in row groups of 16384 sorted by (kind,
    key); a one-document query reads <= 2 of the ~20 key row groups, one row group of docs.parquet and,
    for near-duplicates, only the candidate's bytes of sigs.bin."""
    root = tmp_path.as_uri()
    n = 20_000
    write_segment(root, "big", (random_table(5000, s, s) for s in range(0, n, 5000)), PARAMS, partitions=1)
    md = pq.ParquetFile(tmp_path / "big" / "docs.parquet").metadata
    assert [md.row_group(g).num_rows for g in range(md.num_row_groups)] == [8192, 8192, n - 16384]
    part = pq.ParquetFile(tmp_path / "big" / pidx.partition_file(0)).metadata
    assert part.num_row_groups == -(-n * (PARAMS.bands + 2) // pidx.KEY_ROW_GROUP)
    reads: list[tuple[str, list[int]]] = []
    real_read = pq.ParquetFile.read_row_group

    def read_row_group(self, g, columns=None, **kw):
        reads.append(("keys" if columns and columns[0] == "kind" else "docs", [g]))
        return real_read(self, g, columns=columns, **kw)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", read_row_group)
    index = PublishedIndex.open(root, ["big"], PARAMS)
    assert index.published_prompts(["r12345", "nope"]) == {"r12345"}
    key_reads = [g for kind, gs in reads if kind == "keys" for g in gs]
    assert len(key_reads) <= 2 and ("docs", [1]) in reads and len([r for r in reads if r[0] == "docs"]) == 1
    reads.clear()
    assert index.exact_duplicates([fake_hash(7), fake_hash(n)]) == {fake_hash(7): "r7"}
    assert sum(len(gs) for kind, gs in reads if kind == "keys") <= 2 and ("docs", [0]) in reads
    reads.clear()
    ranges: list[tuple[int, int]] = []
    real_ranges = LocalFileSystem.cat_ranges
    monkeypatch.setattr(LocalFileSystem, "cat_ranges", lambda self, paths, starts, ends, **kw:
                        ranges.extend(zip(starts, ends)) or real_ranges(self, paths, starts, ends, **kw))
    last = random_table(5000, 15_000, 15_000).slice(4999, 1)  # doc 19 999, regenerated from its batch's seed
    sig = last.column("sig").combine_chunks().flatten().to_numpy().reshape(1, -1)
    assert index.near_duplicates(sig, band_hashes(sig, PARAMS), np.array([50])) == [(0, "r19999", 1.0)]
    width = PARAMS.num_perm * 4
    assert ranges == [(19_999 * width, 20_000 * width)]  # the one candidate's signature, nothing else
    assert [r for r in reads if r[0] == "docs"] == [("docs", [2])]  # its prompt id


def test_automatic_partitions_follow_the_segment_size(root, monkeypatch):
    rng = random.Random(9)
    texts = [text(rng) for _ in range(40)]
    ids = [f"p{i}" for i in range(40)]
    assert write_segment(root, "small", [table(ids, texts)], PARAMS)["partitions"] == 1
    monkeypatch.setattr(pidx, "KEYS_PER_PARTITION", 100)  # 40 docs x 16 keys = 640 keys -> 8 partitions
    commit = write_segment(root, "split", table(ids, texts).to_batches(max_chunksize=9), PARAMS)
    assert commit["partitions"] == 8 and pidx.partition_file(7) in commit["files"]
    monkeypatch.undo()  # the same keys held in memory, not spilled to disk, give the same files
    same = write_segment(root, "same", [table(ids, texts)], PARAMS, partitions=8)
    assert same["files"] == commit["files"]
    index = PublishedIndex.open(root, ["split"], PARAMS)
    assert index.published_prompts(ids) == set(ids)
    sig, bands, counts = features([edit(texts[i], rng, 2) for i in range(0, 40, 5)])
    assert [(r, p) for r, p, _ in index.near_duplicates(sig, bands, counts)] == [(k, f"p{5 * k}") for k in range(8)]

from __future__ import annotations

import difflib
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synthcorpus.quality.decontam import (
    DecontamError,
    Hit,
    NgramIndex,
    ReferenceSet,
    contaminated,
    decontaminate_shard,
    load_references,
    report,
)
from synthcorpus.quality.filters import normalize
from synthcorpus.seeds import SeedError
from tests.conftest import INCLUDE

BENCH = INCLUDE / "seeds" / "demo_benchmark.jsonl"
DOCS = INCLUDE / "seeds" / "demo_contaminated_docs.jsonl"
DEMO_CONFIG = {
    "name": "demo",
    "path": str(BENCH),
    "text_columns": ["question", "choices"],
    "id_column": "id",
    "benchmark_column": "benchmark",
}


@pytest.fixture(scope="module")
def refs() -> list[ReferenceSet]:
    return load_references([DEMO_CONFIG])


@pytest.fixture(scope="module")
def index(refs) -> NgramIndex:
    return NgramIndex(refs, n=10)


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return [json.loads(line) for line in DOCS.read_text().splitlines() if line.strip()]


def _item(refs: list[ReferenceSet], item_id: str) -> str:
    for ref in refs:
        if item_id in ref.ids:
            return ref.texts[ref.ids.index(item_id)]
    raise KeyError(item_id)


# -------------------------------------------------------------------------------------------- demo data


def test_demo_benchmark_loads_into_two_benchmarks(refs):
    assert {r.name: len(r.texts) for r in refs} == {"demo_mmlu": 20, "demo_arc": 20}
    arc = next(r for r in refs if r.name == "demo_arc")
    # question and choices joined with a space
    assert arc.texts[arc.ids.index("arc-006")].startswith("Which gas do green plants take in from the air")
    assert "A) oxygen B) carbon dioxide" in arc.texts[arc.ids.index("arc-006")]


def test_demo_docs_planted_items_caught_clean_docs_kept(index, docs):
    planted = [d for d in docs if d["planted"]]
    clean = [d for d in docs if not d["planted"]]
    assert len(planted) == 6 and len(clean) == 6
    for doc in planted:
        hits = contaminated(doc["text"], index, 0.5)
        assert {(h.benchmark, h.item_id) for h in hits} == {(p["benchmark"], p["item_id"]) for p in doc["planted"]}
        assert all(0.5 < h.ratio <= 1.0 for h in hits), doc["id"]
    for doc in clean:
        assert contaminated(doc["text"], index, 0.5) == [], doc["id"]


def test_light_edits_still_caught(index, refs):
    item = _item(refs, "mmlu-002")
    edited = item.replace("often cited", "frequently described").replace("modern", "today's").upper()
    text = f"Before the lecture, consider this. {edited} Discuss with a partner."
    hits = contaminated(text, index)
    assert [(h.benchmark, h.item_id) for h in hits] == [("demo_mmlu", "mmlu-002")]
    assert 0.5 < hits[0].ratio < 1.0


# ---------------------------------------------------------------------------------- below threshold


def test_paraphrase_sharing_a_10gram_below_threshold_is_kept(index, refs):
    item = _item(refs, "arc-010")  # students roll a toy car down ramps ...
    words = normalize(item).split()
    shared = " ".join(words[:10])
    text = (
        f"{shared} on a rainy afternoon, while a teacher asked them to predict what would change "
        "if the slope were steeper and to write their guesses in notebooks before testing."
    )
    # It shares a 10-gram, so the item is a candidate ...
    assert any(index.items[i][1] == "arc-010" for i in index.candidates(normalize(text).split()))
    # ... but the matched share of the item is below 0.5, so it is not contaminated.
    scored = [h for h in contaminated(text, index, threshold=0.0) if h.item_id == "arc-010"]
    assert len(scored) == 1 and 10 / len(words) <= scored[0].ratio < 0.5
    assert contaminated(text, index, threshold=0.5) == []


def test_demo_near_miss_doc_is_a_candidate_below_threshold(index, docs):
    doc = next(d for d in docs if d["id"] == "doc-k5")
    [hit] = contaminated(doc["text"], index, threshold=0.0)
    assert hit.item_id == "arc-006" and hit.ratio < 0.5


def test_threshold_is_strict_and_tunable(index, docs):
    doc = next(d for d in docs if d["id"] == "doc-k5")
    ratio = contaminated(doc["text"], index, threshold=0.0)[0].ratio
    assert contaminated(doc["text"], index, threshold=ratio) == []
    assert contaminated(doc["text"], index, threshold=ratio - 0.01)[0].item_id == "arc-006"


def test_long_document_common_words_do_not_inflate_ratio(index, refs):
    """Aligning a whole long document would find every remaining item word somewhere, in order; the
    window around the shared n-grams keeps such scattered words out of the ratio."""
    words = normalize(_item(refs, "arc-010")).split()
    neutral = " ".join(f"w{i}" for i in range(30))
    scattered = " ".join(f"{neutral} {w}" for w in words[10:])  # each remaining item word, 30 words apart
    text = f"{' '.join(words[:10])} {scattered}"
    whole = difflib.SequenceMatcher(None, normalize(text).split(), words, autojunk=False)
    assert sum(b.size for b in whole.get_matching_blocks()) / len(words) > 0.9
    [hit] = contaminated(text, index, threshold=0.0)
    assert hit.item_id == "arc-010" and hit.ratio < 0.5


def test_items_shorter_than_n_are_skipped():
    idx = NgramIndex([ReferenceSet("tiny", ["too short to index", "one two three four five six seven eight nine ten"])])
    assert idx.skipped_short == {"tiny": 1} and len(idx) == 1
    assert contaminated("and one two three four five six seven eight nine ten!", idx) == [Hit("tiny", "1", 1.0)]


# ----------------------------------------------------------------------------------- shards and report


def test_decontaminate_shard_and_report_counts(index, docs):
    rows = [{"doc_id": d["id"], "text": d["text"]} for d in docs]
    # A second copy of doc-c1 in another shard: more removed docs, same unique item.
    first, second = rows[:6], [*rows[6:], {"doc_id": "doc-c1-copy", "text": rows[0]["text"]}]
    kept1, removed1, stats1 = decontaminate_shard(first, index, 0.5)
    kept2, removed2, stats2 = decontaminate_shard(pa.Table.from_pylist(second), index, 0.5)
    assert (stats1["input"], stats1["kept"], stats1["removed"]) == (6, 0, 6)
    assert (stats2["input"], stats2["kept"], stats2["removed"]) == (7, 6, 1)
    assert {r["doc_id"] for r in kept2} == {d["id"] for d in docs if not d["planted"]}
    assert all(r["filter_reason"] == "contaminated" for r in removed1 + removed2)
    assert removed2[0]["decontam_hits"] == [{"benchmark": "demo_arc", "item_id": "arc-006", "ratio": 1.0}]
    assert stats1["benchmarks"]["demo_arc"] == {"removed_docs": 4, "items": ["arc-001", "arc-006"]}
    # the removed rows round-trip through Parquet
    assert pa.Table.from_pylist(removed1 + removed2).num_rows == 7
    json.dumps([stats1, stats2])
    assert report([stats1, stats2]) == {
        "demo_arc": {"removed_docs": 5, "unique_items_hit": 2},
        "demo_mmlu": {"removed_docs": 2, "unique_items_hit": 1},
    }


def test_doc_hitting_two_benchmarks_counts_once_in_each(index, refs):
    text = _item(refs, "mmlu-009") + " and also " + _item(refs, "arc-015")
    _, removed, stats = decontaminate_shard([{"text": text}], index)
    assert {h["item_id"] for h in removed[0]["decontam_hits"]} == {"mmlu-009", "arc-015"}
    assert report([stats]) == {
        "demo_arc": {"removed_docs": 1, "unique_items_hit": 1},
        "demo_mmlu": {"removed_docs": 1, "unique_items_hit": 1},
    }


# ----------------------------------------------------------------------------------------- loading


def test_parquet_reference_with_two_text_columns(tmp_path, refs):
    path = tmp_path / "mmlu.parquet"
    table = pa.table(
        {
            "question": ["Which data structure processes elements in the order first in, first out?", None],
            "choices": [["stack", "queue", "binary tree", "hash table"], ["x", "y"]],
            "answer": [1, 0],
        }
    )
    pq.write_table(table, path)
    [ref] = load_references([{"name": "mmlu_pq", "path": str(path), "text_columns": ["question", "choices"]}])
    assert ref.name == "mmlu_pq" and ref.ids == ["0", "1"]
    assert ref.texts[0] == (
        "Which data structure processes elements in the order first in, first out? stack queue binary tree hash table"
    )
    assert ref.texts[1] == "x y"
    idx = NgramIndex([ref])
    hits = contaminated("Quiz: which data structure processes elements in the order first in first out? "
                        "Stack, queue, binary tree or hash table?", idx)
    assert hits == [Hit("mmlu_pq", "0", 1.0)]


def test_hf_dataset_dir_with_struct_choices_and_ids(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {
            "id": ["q1"],
            "question": ["Which gas do green plants take in from the air to make their food?"],
            "choices": [{"text": ["oxygen", "carbon dioxide"], "label": ["A", "B"]}],
        }
    )
    ds.save_to_disk(str(tmp_path / "arc"))
    [ref] = load_references(
        [{"name": "arc_hf", "path": str(tmp_path / "arc"), "format": "hf", "text_columns": ["question", "choices"],
          "id_column": "id"}]
    )
    assert ref.ids == ["q1"]
    assert ref.texts == ["Which gas do green plants take in from the air to make their food? oxygen carbon dioxide A B"]
    with pytest.raises(DecontamError, match=r"data-00000-of-00001\.arrow: quality\.decontamination\.references\[0\]\.text_columns: expected a column 'prompt'"):
        load_references([{"name": "x", "path": str(tmp_path / "arc"), "text_columns": ["prompt"]}])


def test_parquet_missing_text_column_names_file_and_field(tmp_path):
    path = tmp_path / "bench.parquet"
    pq.write_table(pa.table({"question": ["q"]}), path)
    with pytest.raises(DecontamError) as exc:
        load_references([{"name": "b", "path": str(path), "text_columns": ["question", "choices"]}])
    msg = str(exc.value)
    assert str(path) in msg and "quality.decontamination.references[0].text_columns" in msg and "'choices'" in msg


def test_jsonl_missing_text_column_names_file_line_and_field(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text('{"question": "a", "choices": "b"}\n{"question": "c"}\n')
    with pytest.raises(SeedError, match=re.escape(f"{path}: quality.decontamination.references[1].text_columns: line 2")):
        load_references([DEMO_CONFIG, {"name": "b", "path": str(path), "text_columns": ["question", "choices"]}])


def test_jsonl_bad_line_names_file_line_and_field(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(DecontamError, match=re.escape(f"{path}: quality.decontamination.references[0].path: line 3")):
        load_references([{"name": "b", "path": str(path)}])


def test_missing_id_column_and_non_string_values(tmp_path):
    path = tmp_path / "bench.jsonl"
    path.write_text('{"text": "fine"}\n')
    with pytest.raises(DecontamError, match=r"references\[0\]\.id_column: line 1: expected a key 'uid'"):
        load_references([{"name": "b", "path": str(path), "id_column": "uid"}])
    path.write_text('{"text": 3}\n')
    with pytest.raises(DecontamError, match=re.escape(f"{path}: line 1: quality.decontamination.references[0].text_columns")):
        load_references([{"name": "b", "path": str(path)}])


def test_missing_file_and_bad_config(tmp_path):
    with pytest.raises(SeedError, match=r"references\[0\]\.path: expected an existing file"):
        load_references([{"name": "b", "path": str(tmp_path / "nope.jsonl")}])
    with pytest.raises(DecontamError, match=r"references\[0\]\.text_columns: expected a non-empty list"):
        load_references([{"name": "b", "path": str(BENCH), "text_columns": []}])
    with pytest.raises(DecontamError, match=r"expected unique benchmark names, repeated: \['demo_arc', 'demo_mmlu'\]"):
        load_references([DEMO_CONFIG, DEMO_CONFIG])

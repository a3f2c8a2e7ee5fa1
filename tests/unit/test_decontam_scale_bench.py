"""benchmarks/decontam_scale.py at a tiny size, so the benchmark cannot rot: its data generator is
deterministic and plants what it says, and both arms (our decontaminate stage, datatrove's n-gram
decontamination) run in their own processes on the same data and report the same structure; ours finds
the planted near-copies and removes nothing clean."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))  # the module imports quality_bench / minhash_bench from there
_spec = importlib.util.spec_from_file_location("decontam_scale", ROOT / "benchmarks" / "decontam_scale.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_generator_is_deterministic_and_plants_what_it_says():
    words = bench.Words()
    items = bench.reference_items(120, words=words)
    assert items == bench.reference_items(120, words=bench.Words())
    assert {len(it["choices"]) for it in items} == {4} and all(0 <= it["answer"] < 4 for it in items)
    assert all(len(bench.item_words(it)) >= 10 for it in items)  # every item is indexable at n = 10
    corpus = bench.Corpus(200, items, planted=24, fragments=6, vocab=words)
    assert len(corpus.planted) == 24 and len(corpus.fragments) == 6
    assert not set(corpus.planted) & set(corpus.fragments)
    assert {k for _, k in corpus.planted.values()} == set(bench.KINDS)
    assert corpus.text(5) == bench.Corpus(200, items, planted=24, fragments=6, vocab=words).text(5)
    d, (j, kind) = next((d, v) for d, v in corpus.planted.items() if v[1] == "reformatted")
    assert items[j]["question"] in corpus.text(d)
    f, j = next(iter(corpus.fragments.items()))
    assert "As one quiz put it, " in corpus.text(f)


def test_both_arms_run_and_ours_finds_the_planted_copies(tmp_path):
    out = tmp_path / "decontam_scale.json"
    res = bench.decontam_scale(docs=240, items=150, planted=30, fragments=10, out=out, quiet=True)
    assert json.loads(out.read_text()) == res
    assert res["corpus"]["docs"] == 240 and res["corpus"]["planted"] == 30 and res["corpus"]["fragments"] == 10
    keys = {"seconds", "docs_per_s", "cpu_s", "docs_per_cpu_s", "peak_mb", "index_s", "planted", "caught", "recall", "per_kind",
            "fragments", "fragments_removed", "removed", "false_positives", "kept"}
    ours, theirs = res["ours"], res["datatrove"]
    assert keys <= set(ours) and keys <= set(theirs), (ours, theirs)
    assert set(ours["per_kind"]) == set(theirs["per_kind"]) == set(bench.KINDS)
    for arm in (ours, theirs):
        assert arm["docs_per_s"] > 0 and arm["kept"] + arm["removed"] == 240
        assert arm["removed"] == arm["caught"] + arm["fragments_removed"] + arm["false_positives"]
    # Ours: the planted near-copies are found (those of a question_only copy may fall under the 0.5 ratio,
    # as may copies whose edits leave no intact 10-gram), attributed to the right item, nothing clean removed.
    assert ours["caught"] >= 0.7 * ours["planted"], ours
    for kind in ("reformatted", "truncated"):
        assert ours["per_kind"][kind]["caught"] >= ours["per_kind"][kind]["planted"] - 1, ours["per_kind"]
    assert ours["right_item"] == ours["caught"]
    assert ours["false_positives"] == 0 and ours["fragments_removed"] == 0
    # datatrove's filter ran on its own index of the same items (any shared n-gram removes a document).
    assert theirs["index_hashes"] > 0 and theirs["caught"] >= ours["caught"] - 2, theirs

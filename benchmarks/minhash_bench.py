"""Benchmark of MinHash near-dedup (synthcorpus.quality.minhash) on synthetic documents.

minhash: n synthetic 300-word documents (Zipf-like vocabulary of 30 k words) of which ~5 % are planted
near-duplicates of an earlier document (3-8 word edits, sometimes a paragraph moved), split into 8
shards. Measured in a fresh single-threaded process (OMP/OPENBLAS/MKL threads = 1): write_signatures
over every shard + find_clusters, as docs/s, the stage's peak RSS over the process baseline after the
corpus is built, and recall / precision on the planted pairs (a planted copy counts as found when it
is listed as a duplicate of its source, or of the same cluster's kept document).

Until a fix here, a copy in no cluster counted as found when its source was in none either, so the
earlier recall (997/997) was an overcount. quality_bench.quality_throughput measures at 100 k / 1 M docs.

If ``datatrove`` is importable, its MinHash stages (MinhashDedupSignature -> MinhashDedupBuckets ->
MinhashDedupCluster -> MinhashDedupFilter, LocalPipelineExecutor, 1 task/worker) run on the same
documents written as JSONL with the same n-gram / bands / rows and the docs/s ratio is printed (its
xxhash call is patched as in quality_bench). It is never installed by this benchmark.

Run: .venv/bin/python -c "import sys; sys.path.insert(0,'benchmarks'); import minhash_bench; minhash_bench.minhash()"
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DUP_SHARE = 0.05
SHARDS = 8
WORDS = 300


def near_copy(text: str, rng: random.Random, vocab: list[str]) -> str:
    """A planted near-duplicate: 3-8 words replaced, and in 30 % of cases a block of words moved."""
    words = text.split()
    for j in rng.sample(range(len(words)), rng.randint(3, 8)):
        words[j] = rng.choice(vocab)
    if rng.random() < 0.3:
        cut = rng.randrange(50, 250)
        words = words[cut:] + words[:cut]
    return " ".join(words)


def synthetic_docs(n: int, seed: int = 0) -> tuple[list[str], dict[int, int]]:
    """(texts, {planted index: source index})."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(30_000)]
    weights = [1.0 / (i + 10) for i in range(len(vocab))]
    texts: list[str] = []
    planted: dict[int, int] = {}
    for i in range(n):
        if i > 10 and rng.random() < DUP_SHARE:
            src = rng.randrange(i)
            while src in planted:
                src = rng.randrange(i)
            texts.append(near_copy(texts[src], rng, vocab))
            planted[i] = src
        else:
            texts.append(" ".join(rng.choices(vocab, weights=weights, k=WORDS)))
    return texts, planted


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _child(n: int, tmp: str) -> None:
    import pyarrow as pa

    from synthcorpus import storage
    from synthcorpus.quality.minhash import MinHashParams, find_clusters, write_signatures
    from synthcorpus.layout import RunLayout

    texts, planted = synthetic_docs(n)
    ids = [f"doc-{i:07d}" for i in range(n)]
    layout = RunLayout(Path(tmp).as_uri(), "bench", "minhash")
    per = -(-n // SHARDS)
    shard_uris = []
    for k in range(SHARDS):
        uri = layout.shard("dedup", k)
        storage.write_parquet(uri, pa.table({"prompt_id": ids[k * per : (k + 1) * per], "text": texts[k * per : (k + 1) * per]}))
        shard_uris.append(uri)
    with open(os.path.join(tmp, "docs.jsonl"), "w") as fh:
        for i, t in zip(ids, texts):
            fh.write(json.dumps({"id": i, "text": t}) + "\n")
    del texts
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base_rss = _rss_mb("VmRSS")
    params = MinHashParams()
    sig_uris = [layout.shard("minhash_signatures", k) for k in range(SHARDS)]
    t0 = time.perf_counter()
    for k, (uri, sig_uri) in enumerate(zip(shard_uris, sig_uris)):
        write_signatures(uri, sig_uri, k, params)
    t1 = time.perf_counter()
    clusters = find_clusters(sig_uris, params)
    t2 = time.perf_counter()
    peak = _rss_mb("VmHWM") - base_rss
    keep_of = {d: k for k, ds in clusters for d in ds}
    # A planted copy is found when it is listed as a duplicate of its source or of its source's keeper
    # (keep_of.get(copy) must not be None: None == keep_of.get(source) for an unclustered source).
    found = sum(1 for p, s in planted.items()
                if keep_of.get(ids[p]) is not None and keep_of[ids[p]] in (ids[s], keep_of.get(ids[s])))
    false = sum(1 for d in keep_of if int(d.split("-")[1]) not in planted)
    print(json.dumps({"n": n, "sig_s": t1 - t0, "cluster_s": t2 - t1, "docs_per_s": n / (t2 - t0), "peak_mb": peak,
                      "planted": len(planted), "found": found, "false_dups": false, "dups": len(keep_of),
                      "threshold": params.threshold()}))


def _datatrove(n: int, tmp: str) -> dict | None:
    """datatrove's four MinHash stages on the same JSONL, if installed; None if not importable."""
    try:
        import datatrove  # noqa: F401
    except ImportError:
        return None
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from quality_bench import _patch_datatrove_xxhash

    _patch_datatrove_xxhash()  # datatrove 0.10.1's default xxhash call breaks on xxhash >= 4 (see there)
    cfg = MinhashConfig(n_grams=5, num_buckets=14, hashes_per_bucket=8)
    d = os.path.join(tmp, "dt")
    reader = lambda: JsonlReader(tmp, glob_pattern="docs.jsonl")  # noqa: E731
    stages = [
        [reader(), MinhashDedupSignature(output_folder=f"{d}/sigs", config=cfg)],
        [MinhashDedupBuckets(input_folder=f"{d}/sigs", output_folder=f"{d}/buckets", config=cfg)],
        [MinhashDedupCluster(input_folder=f"{d}/buckets", output_folder=f"{d}/remove_ids", config=cfg)],
        [reader(), MinhashDedupFilter(input_folder=f"{d}/remove_ids"), JsonlWriter(f"{d}/out")],
    ]
    t0 = time.perf_counter()
    for i, pipe in enumerate(stages):
        tasks = cfg.num_buckets if i == 1 else 1
        LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1, logging_dir=f"{d}/logs{i}").run()
    dt = time.perf_counter() - t0
    return {"docs_per_s": n / dt, "seconds": dt}


def _child_main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _child(n, tmp)
        dt = _datatrove(n, tmp)
        print(json.dumps({"datatrove": dt}))


def minhash(sizes: tuple[int, ...] = (20_000,)) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])}
    for n in sizes:
        proc = subprocess.run([sys.executable, "-c", f"import minhash_bench; minhash_bench._child_main({n})"],
                              capture_output=True, text=True, env=env, cwd=ROOT)
        if proc.returncode:
            print(f"minhash n={n}: failed\n{proc.stderr[-3000:]}")
            continue
        lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
        ours, theirs = lines[0], lines[1]["datatrove"]
        print(f"minhash n={n} (1 thread, {SHARDS} shards, 5-gram, 14x8, threshold {ours['threshold']:.3f}): "
              f"{ours['docs_per_s']:.0f} docs/s (signatures {ours['sig_s']:.2f} s, clusters {ours['cluster_s']:.2f} s), "
              f"stage peak +{ours['peak_mb']:.0f} MB; recall {ours['found']}/{ours['planted']} = "
              f"{ours['found'] / max(ours['planted'], 1):.3f}, false duplicates {ours['false_dups']}")
        if theirs is None:
            print("  datatrove: not installed in this venv -> comparison skipped (not installed on purpose)")
        else:
            print(f"  datatrove: {theirs['docs_per_s']:.0f} docs/s ({theirs['seconds']:.1f} s); "
                  f"ratio ours/datatrove = {ours['docs_per_s'] / theirs['docs_per_s']:.2f}")


if __name__ == "__main__":
    minhash(tuple(int(a) for a in sys.argv[1:]) or (20_000,))

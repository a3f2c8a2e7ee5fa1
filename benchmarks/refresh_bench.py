"""Benchmark of a corpus refresh against the published-document index (synthcorpus.quality.published_index).

refresh: 10 k new 300-word documents on top of H = 0, 100 k and 1 M published ones. The history is built
first (not measured) as segments of 100 k documents each (one per published version: 1 M = 10 segments)
under a temporary file:// root in /tmp, deleted afterwards:

- ``REAL`` (2 000) real documents (Zipf-like 30 k-word vocabulary, as in minhash_bench) with real MinHash
  signatures, spread evenly over the history (every H/2000-th document), so the docs row groups that
  verification reads are spread like they would be;
- every other published document has a random uint32 signature with its band hashes derived by
  ``minhash.band_hashes`` (cheap to make; such documents collide with nothing, like unrelated text),
  a random text hash and prompt id ``h{i}``.

The 10 k new documents are the same for every H: ``NEAR`` (1 000) near-copies of real history documents
(3-8 word edits, 30 % also a paragraph moved, like minhash_bench), ``EXACT`` (100) exact copies up to
case and spacing, ``REPUBLISHED`` (100) new documents whose prompt id is already published, the rest
fresh text. At H = 0 nothing is published, so nothing should match.

Measured in a fresh single-threaded child process per H (OMP / OPENBLAS / MKL threads = 1), after the new
texts are generated: MinHash signatures + band hashes + text hashes of the new docs, PublishedIndex.open,
published_prompts, exact_duplicates, near_duplicates, and write_segment of the new version (the new docs
minus the ones found), as wall time per step; peak RSS = VmHWM (reset with /proc/self/clear_refs just
before) minus VmRSS then. Recall: a planted near-copy counts when its match is its source document.

Run: .venv/bin/python benchmarks/run.py refresh (full: ~2.5 min here, 3 measured processes per H),
or .venv/bin/python benchmarks/refresh_bench.py [--quick] [--new N] [--history 0,100000,1000000]
(--quick: 2 k new docs on 0 / 20 k / 100 k published, one measured process each, ~25 s).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEW = 10_000
HISTORY = (0, 100_000, 1_000_000)
VERSION_DOCS = 100_000  # documents per published version = per segment
REAL = 2_000
NEAR = 1_000
EXACT = 100
REPUBLISHED = 100
WORDS = 300
BATCH = 8192


def _vocab() -> tuple[list[str], list[float]]:
    vocab = [f"w{i}" for i in range(30_000)]
    return vocab, [1.0 / (i + 10) for i in range(len(vocab))]


def real_texts(n: int = REAL, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    vocab, weights = _vocab()
    return [" ".join(rng.choices(vocab, weights=weights, k=WORDS)) for _ in range(n)]


def real_positions(h: int, n: int = REAL) -> list[int]:
    """Where the real documents sit in a history of h: spread evenly."""
    return [j * h // n for j in range(n)] if h >= n else []


def new_batch(n: int, real: list[str], seed: int = 1) -> tuple[list[str], list[str], dict[int, int], dict[int, int], dict[int, int]]:
    """(prompt ids, texts, {row: real index} near-copies, {row: real index} exact copies,
    {row: history position} republished prompt ids (positions valid for any h >= REAL))."""
    from minhash_bench import near_copy

    rng = random.Random(seed)
    vocab, weights = _vocab()
    near, exact, republished = {}, {}, {}
    sources = rng.sample(range(len(real)), NEAR + EXACT)
    ids, texts = [], []
    for row in range(n):
        ids.append(f"new-{row:06d}")
        if row < NEAR:
            src = sources[row]
            texts.append(near_copy(real[src], rng, vocab))
            near[row] = src
        elif row < NEAR + EXACT:
            src = sources[row]
            texts.append("  " + real[src].upper().replace(" ", "  ") + "\n")
            exact[row] = src
        else:
            texts.append(" ".join(rng.choices(vocab, weights=weights, k=WORDS)))
            if row < NEAR + EXACT + REPUBLISHED:
                republished[row] = row * 7 + 1  # a random (non-real) published doc's index
    return ids, texts, near, exact, republished


def history_id(i: int, real_at: dict[int, int]) -> str:
    return f"real-{real_at[i]:05d}" if i in real_at else f"h{i}"


def _arrays(sig, counts, hashes, ids, params):
    import numpy as np
    import pyarrow as pa

    from synthcorpus.quality.minhash import band_columns, band_hashes

    bands = band_hashes(sig, params)
    cols = {"prompt_id": pa.array(ids, pa.string()), "text_hash": pa.array(hashes, pa.string()),
            "n_shingles": pa.array(np.asarray(counts, np.int32))}
    for i, c in enumerate(band_columns(params)):
        cols[c] = pa.array(bands[:, i])
    cols["sig"] = pa.FixedSizeListArray.from_arrays(pa.array(sig.reshape(-1)), params.num_perm)
    return pa.table(cols)


def _history_batches(lo: int, hi: int, real: list[str], real_at: dict[int, int], params):
    """Published docs lo..hi-1 in batches: random signatures, real MinHash at the real positions."""
    import numpy as np

    from synthcorpus.quality.filters import text_hash
    from synthcorpus.quality.minhash import batch_signatures

    for s in range(lo, hi, BATCH):
        e = min(hi, s + BATCH)
        rng = np.random.default_rng(s)
        sig = rng.integers(0, 2**32, size=(e - s, params.num_perm), dtype=np.uint32)
        counts = np.full(e - s, WORDS - params.ngram + 1, np.int32)
        hashes = [hashlib.sha256(b"h%d" % i).hexdigest() for i in range(s, e)]
        rows = [i for i in range(s, e) if i in real_at]
        if rows:
            texts = [real[real_at[i]] for i in rows]
            rsig, rcounts = batch_signatures(texts, params)
            sig[[i - s for i in rows]] = rsig
            counts[[i - s for i in rows]] = rcounts
            for i, t in zip(rows, texts):
                hashes[i - s] = text_hash(t)
        yield _arrays(sig, counts, hashes, [history_id(i, real_at) for i in range(s, e)], params)


def build_history(root: str, h: int, version_docs: int = VERSION_DOCS) -> list[str]:
    from synthcorpus.quality.minhash import MinHashParams
    from synthcorpus.quality.published_index import write_segment

    params = MinHashParams()
    real = real_texts()
    real_at = {p: j for j, p in enumerate(real_positions(h))}
    names = []
    for k, lo in enumerate(range(0, h, version_docs)):
        name = f"v{k + 1:03d}"
        write_segment(root, name, _history_batches(lo, min(h, lo + version_docs), real, real_at, params), params)
        names.append(name)
    return names


def _child(root: str, names: list[str], h: int, n_new: int) -> None:
    import numpy as np

    from minhash_bench import _rss_mb
    from synthcorpus.quality.filters import text_hash
    from synthcorpus.quality.minhash import MinHashParams, band_hashes, batch_signatures
    from synthcorpus.quality.published_index import PublishedIndex, write_segment

    params = MinHashParams()
    real = real_texts()
    real_at = {p: j for j, p in enumerate(real_positions(h))}
    pos_of_real = {j: p for p, j in real_at.items()}
    ids, texts, near, exact, republished = new_batch(n_new, real)
    if h:  # republished prompt ids: ids of random published docs
        for row, pos in republished.items():
            ids[row] = history_id(pos % h, real_at)
    _warm_up(params)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_mb("VmRSS")
    t = {}
    t0 = time.perf_counter()
    sigs, counts = [], []
    for s in range(0, n_new, params.batch_size):
        sg, ct = batch_signatures(texts[s : s + params.batch_size], params)
        sigs.append(sg)
        counts.append(ct)
    sig, counts = np.concatenate(sigs), np.concatenate(counts)
    bands = band_hashes(sig, params)
    hashes = [text_hash(x) for x in texts]
    t["signatures"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    index = PublishedIndex.open(root, names, params)
    t["open"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    published = index.published_prompts(ids)
    t["prompts"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    dups = index.exact_duplicates(hashes)
    t["exact"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    matches = index.near_duplicates(sig, bands, counts)
    t["near"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    drop = {i for i, p in enumerate(ids) if p in published} | {i for i, x in enumerate(hashes) if x in dups}
    drop |= {row for row, _, _ in matches}
    keep = np.array([i for i in range(n_new) if i not in drop], np.int64)
    import pyarrow as pa

    table = pa.table({"prompt_id": pa.array(ids).take(pa.array(keep)), "text_hash": pa.array(hashes).take(pa.array(keep))})
    batch = _arrays(sig[keep], counts[keep], table.column("text_hash").to_pylist(), table.column("prompt_id").to_pylist(), params)
    write_segment(root, "new", [batch], params)
    t["write"] = time.perf_counter() - t1
    total = time.perf_counter() - t0
    peak = _rss_mb("VmHWM") - base
    expected_near = {row: f"real-{src:05d}" for row, src in near.items() if src in pos_of_real}
    found_near = sum(1 for row, pid, _ in matches if expected_near.get(row) == pid)
    false_near = sum(1 for row, _, _ in matches if row not in near and row not in exact)
    found_exact = sum(1 for row, src in exact.items() if dups.get(hashes[row]) == f"real-{src:05d}")
    found_prompts = sum(1 for row in republished if ids[row] in published)
    print(json.dumps({"h": h, "segments": len(names), "index_bytes": index.stats()["bytes"], "total_s": total,
                      "steps": t, "peak_mb": peak, "near_planted": len(expected_near), "near_found": found_near,
                      "false_near": false_near, "exact_planted": len(exact) if h else 0, "exact_found": found_exact,
                      "prompts_planted": len(republished) if h else 0, "prompts_found": found_prompts,
                      "kept": int(len(keep))}))


def _warm_up(params) -> None:
    """Import and run every code path once on two documents (in memory://), so that imports and first-call
    allocations are in the baseline, not in the measured peak."""
    from synthcorpus import storage
    from synthcorpus.quality.filters import text_hash
    from synthcorpus.quality.minhash import band_hashes, batch_signatures
    from synthcorpus.quality.published_index import PublishedIndex, write_segment

    texts = real_texts(2, seed=99)
    sig, counts = batch_signatures(texts, params)
    hashes = [text_hash(t) for t in texts]
    write_segment("memory://warm-up", "w", [_arrays(sig, counts, hashes, ["a", "b"], params)], params, partitions=2)
    index = PublishedIndex.open("memory://warm-up", ["w"], params)
    index.published_prompts(["a"]), index.exact_duplicates(hashes), index.near_duplicates(sig, band_hashes(sig, params), counts)
    storage.delete("memory://warm-up")


def _child_main(root: str, names_json: str, h: int, n_new: int) -> None:
    _child(root, json.loads(names_json), h, n_new)


def _run(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)


def refresh(history: tuple[int, ...] = HISTORY, n_new: int = NEW, version_docs: int = VERSION_DOCS, repeats: int = 3) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks")])}
    rows = []
    for h in history:
        tmp = tempfile.mkdtemp(prefix="refresh-bench-", dir="/tmp")
        try:
            root = Path(tmp, "index").as_uri()
            t0 = time.perf_counter()
            build = _run(f"import json, refresh_bench as b; print(json.dumps(b.build_history({root!r}, {h}, {version_docs})))", env)
            if build.returncode:
                print(f"refresh H={h}: building the history failed\n{build.stderr[-3000:]}")
                continue
            names = json.loads(build.stdout.strip().splitlines()[-1])
            built = time.perf_counter() - t0
            runs = []
            for _ in range(repeats):  # each in a fresh process; the median run (by wall time) is reported
                proc = _run(f"import refresh_bench as b; b._child_main({root!r}, {json.dumps(names)!r}, {h}, {n_new})", env)
                if proc.returncode:
                    print(f"refresh H={h}: failed\n{proc.stderr[-3000:]}")
                    break
                runs.append(json.loads([x for x in proc.stdout.splitlines() if x.startswith("{")][-1]))
            if len(runs) < repeats:
                continue
            runs.sort(key=lambda x: x["total_s"])
            r = runs[len(runs) // 2]
            r["build_s"], r["all_s"], r["all_mb"] = built, [x["total_s"] for x in runs], [x["peak_mb"] for x in runs]
            rows.append(r)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if not rows:
        return
    print(f"refresh: {n_new} new {WORDS}-word docs on top of H published (segments of {version_docs}; 1 thread; "
          f"median of {repeats} fresh processes; wall s and peak RSS over the process baseline)")
    print("| published H | segments | index size | refresh wall (all runs) | signatures / open / prompts / exact / near / write | "
          "index work | peak RSS Δ (all runs) | near recall | exact copies | republished ids | false near | history build |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = r["steps"]
        r["index_s"] = sum(s[k] for k in ("open", "prompts", "exact", "near", "write"))
        steps = " / ".join(f"{s[k]:.2f}" for k in ("signatures", "open", "prompts", "exact", "near", "write"))
        recall = f"{r['near_found']}/{r['near_planted']} = {r['near_found'] / r['near_planted']:.3f}" if r["near_planted"] else "— (none published)"
        all_s = ", ".join(f"{x:.2f}" for x in r["all_s"])
        all_mb = ", ".join(f"{x:.0f}" for x in r["all_mb"])
        print(f"| {r['h']:,} | {r['segments']} | {r['index_bytes'] / 1e6:.0f} MB | {r['total_s']:.2f} s ({all_s}) | {steps} | "
              f"{r['index_s']:.2f} s | +{r['peak_mb']:.0f} MB ({all_mb}) | {recall} | {r['exact_found']}/{r['exact_planted']} | "
              f"{r['prompts_found']}/{r['prompts_planted']} | {r['false_near']} | {r['build_s']:.0f} s |")
    first, last = rows[0], rows[-1]
    if first is not last:
        print(f"ratio H={last['h']:,} / H={first['h']:,}: time ×{last['total_s'] / first['total_s']:.2f} "
              f"(index work alone {first['index_s']:.2f} s -> {last['index_s']:.2f} s), "
              f"memory ×{last['peak_mb'] / max(first['peak_mb'], 1e-9):.2f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 k new docs on 0 / 20 k / 100 k published (~25 s)")
    ap.add_argument("--new", type=int, default=None, help=f"new documents (default {NEW})")
    ap.add_argument("--history", default=None, help="comma-separated history sizes (default 0,100000,1000000)")
    ap.add_argument("--repeats", type=int, default=None, help="measured runs per H, median reported (default 3; --quick 1)")
    ap.add_argument("--version-docs", type=int, default=None, help=f"documents per published segment (default {VERSION_DOCS})")
    a = ap.parse_args()
    hist = (0, 20_000, 100_000) if a.quick else HISTORY
    if a.history:
        hist = tuple(int(x) for x in a.history.split(","))
    refresh(hist, a.new or (2_000 if a.quick else NEW), a.version_docs or (20_000 if a.quick else VERSION_DOCS),
            a.repeats or (1 if a.quick else 3))

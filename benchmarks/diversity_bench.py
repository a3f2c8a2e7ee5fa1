"""Benchmark of the prompt plan's near-duplicate check (synthcorpus.quality.diversity.near_duplicates, run by
the ``prompts`` stage's diversity report over every planned prompt) vs the implementation it replaced.

diversity_near_dups: N prompt-shaped texts (default 111 112: the 100 k load run's plan) in 15 groups
(template x audience). Each is a group's fixed instruction text (~45 words, so prompts of a group share many
5-grams, as rendered templates do), a topic of 2-4 words and one of 350 60-word excerpts of the shipped web
samples (include/seeds/demo_web_samples.jsonl; the demo has ~350 seeds, so each excerpt serves ~300
prompts), 0-3 words changed; 2 % more are near-copies of an earlier prompt of the group (one word changed).
At 111 112 texts 42 % near-duplicate an earlier one (47 181; the real 100 k plan: 96.5 %, so this is the milder
case for the previous implementation, whose bucket lists grow with every repeat). Both implementations run on the
same texts, each in a fresh single-threaded process: wall time and peak memory (VmHWM reset with
/proc/self/clear_refs after the texts are built, minus VmRSS then); the two must return the same indexes.

- ``current``: chunked signatures (1 024 texts at a time), band keys only, buckets as runs of a stable sort,
  shingles as sorted uint32 arrays for candidate texts only;
- ``previous`` (until 2026-12-04, kept here verbatim as ``previous_near_duplicates``): every text's
  signature at once, a dict of bucket lists, a Python set of shingles for every text.

Run: .venv/bin/python benchmarks/run.py diversity_near_dups   (or: python benchmarks/diversity_bench.py --n N)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N = 111_112
GROUPS = 15
DUP_SHARE = 0.02
SEEDS = 350  # as many seed excerpts as the demo's seeds: most prompts near-duplicate an earlier one, as in the real plan


def previous_near_duplicates(texts, groups=None, threshold=0.8):
    """synthcorpus.quality.diversity.near_duplicates as it was before 2026-12-04 (commit 3ce6196)."""
    from synthcorpus.quality.diversity import _BANDS, _ROWS, _SEED, _SHINGLE, _shingles
    from synthcorpus.quality.minhash import MinHashParams, band_hashes, batch_signatures

    params = MinHashParams(ngram=_SHINGLE, bands=_BANDS, rows=_ROWS, seed=_SEED)
    sig, _ = batch_signatures(list(texts), params)
    bands = band_hashes(sig, params)
    buckets: dict[tuple, list[int]] = {}
    shingles: list[set[int]] = []
    dups = []
    for i, text in enumerate(texts):
        sh = _shingles(text)
        shingles.append(sh)
        group = groups[i] if groups else ""
        candidates: set[int] = set()
        for band in range(_BANDS):
            key = (group, band, int(bands[i, band]))
            candidates.update(buckets.setdefault(key, []))
            buckets[key].append(i)
        for j in candidates:
            other = shingles[j]
            if len(sh & other) / len(sh | other) >= threshold:
                dups.append(i)
                break
    return dups


def prompts(n: int, seed: int = 7) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    web = [json.loads(line)["text"] for line in (ROOT / "include/seeds/demo_web_samples.jsonl").read_text().splitlines()
           if line.strip()]
    words = " ".join(web).split()
    vocab = sorted(set(w.strip(".,;:!?\"'()").lower() for w in words) - {""})
    preambles = [" ".join(rng.choice(vocab) for _ in range(45)) for _ in range(GROUPS)]
    starts = [rng.randrange(max(1, len(words) - 60)) for _ in range(SEEDS)]
    pool = [words[i : i + 60] for i in starts]  # the seed excerpts: each is used by ~n / SEEDS prompts
    texts, groups = [], []
    for i in range(n):
        if texts and rng.random() < DUP_SHARE:
            j = rng.randrange(len(texts))
            w = texts[j].split()
            w[rng.randrange(len(w))] = rng.choice(vocab)
            texts.append(" ".join(w))
            groups.append(groups[j])
            continue
        g = rng.randrange(GROUPS)
        excerpt = list(pool[rng.randrange(SEEDS)])
        for _ in range(rng.randint(0, 3)):
            excerpt[rng.randrange(len(excerpt))] = rng.choice(vocab)
        topic = " ".join(rng.choice(vocab) for _ in range(rng.randint(2, 4)))
        texts.append(f"{preambles[g]} Topic: {topic}. Use this extract as inspiration: {' '.join(excerpt)}")
        groups.append(f"template{g % 5}|audience{g // 5}")
    return texts, groups


def _kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def child(arm: str, n: int) -> dict:
    texts, groups = prompts(n)
    from synthcorpus.quality.diversity import near_duplicates

    fn = near_duplicates if arm == "current" else previous_near_duplicates
    Path("/proc/self/clear_refs").write_text("5")
    base = _kb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    dups = fn(texts, groups)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"arm": arm, "n": n, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_mib": round((_kb("VmHWM") - base) / 1024, 1), "dups": len(dups), "dups_sha": hash(tuple(dups))}


def diversity_near_dups(n: int = N) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONHASHSEED": "0"}
    out = {}
    for arm in ("current", "previous"):
        proc = subprocess.run([sys.executable, __file__, "--child", arm, "--n", str(n)], capture_output=True, text=True,
                              env=env, cwd=ROOT)
        if proc.returncode:
            raise SystemExit(f"{arm} failed:\n{proc.stderr[-3000:]}")
        out[arm] = json.loads(proc.stdout.strip().splitlines()[-1])
    cur, prev = out["current"], out["previous"]
    same = (cur["dups"], cur["dups_sha"]) == (prev["dups"], prev["dups_sha"])
    print(f"diversity_near_dups: {n} prompt-shaped texts in {GROUPS} groups, {cur['dups']} near-duplicates found "
          f"({'the same indexes' if same else 'DIFFERENT indexes'} in both)")
    for r in (cur, prev):
        print(f"  {r['arm']:8}: {r['wall_s']:7.1f} s wall ({r['cpu_s']:.1f} s CPU), peak +{r['peak_mib']:.0f} MiB")
    print(f"  current / previous: time x{cur['wall_s'] / prev['wall_s']:.2f}, peak x{cur['peak_mib'] / max(prev['peak_mib'], 1):.3f}"
          f" (load average {os.getloadavg()[0]:.1f})")
    if not same:
        raise SystemExit("the implementations disagree")
    path = ROOT / ".artifacts/bench" / f"diversity_near_dups-{n}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**out, "load_average": os.getloadavg()[0]}, indent=2))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=N)
    ap.add_argument("--child", choices=("current", "previous"))
    a = ap.parse_args()
    if a.child:
        sys.path.insert(0, str(ROOT / "src"))
        print(json.dumps(child(a.child, a.n)))
    else:
        diversity_near_dups(a.n)

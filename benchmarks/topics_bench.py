"""Benchmark of the topic stage on web seeds: throughput and peak memory at two corpus sizes.

topic_extraction: the topics stage (MiniLM embedding -> spill file -> silhouette choice of k ->
MiniBatchKMeans partial_fit -> c-TF-IDF keywords) on synthetic short texts built from word lists,
labeler="keywords" (no LLM). Each size runs in a fresh Python process so the RSS high-water marks are
independent; the embedding model is loaded before the measurement starts (it is the same ~0.2-0.5 GB
at every size) and the peak is reset after it, so "stage peak" is what the stage itself adds.
Target: the stage's peak grows far less than the number of seeds (embeddings stay on disk; what is
O(n) in memory is the texts, one label and one distance per seed, and the output tables).

Run: .venv/bin/python -c "import sys; sys.path.insert(0,'benchmarks'); import topics_bench; topics_bench.topic_extraction()"
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

THEMES = {
    "baking": "flour sugar butter oven dough yeast bread cake cookies pastry whisk eggs vanilla crust knead loaf",
    "football": "striker goal league match referee penalty stadium coach midfielder defender keeper derby fans",
    "astronomy": "planet galaxy telescope star orbit moon comet nebula supernova solar universe gravity eclipse",
    "gardening": "soil compost seeds tomatoes pruning roses watering mulch shovel greenhouse weeds bulbs harvest",
    "finance": "interest loan mortgage savings budget credit investment stocks bonds inflation tax pension bank",
    "medicine": "doctor patient symptoms diagnosis vaccine infection fever treatment hospital nurse dose clinic",
    "programming": "python function variable loop compiler debugging code library bug repository syntax api server",
    "history": "empire king revolution war treaty medieval dynasty castle battle ancient monarchy colony century",
    "travel": "flight hotel passport luggage beach tour museum itinerary airport train backpack visa hostel",
    "music": "guitar piano chord melody rhythm concert orchestra singer album drums lyrics tempo harmony",
    "chemistry": "molecule atom reaction acid electron bond element compound solution catalyst oxygen periodic",
    "pets": "puppy kitten leash litter vet grooming treats aquarium hamster parrot collar kennel training",
}
FILLER = "the a of and to in is for with on this that it was as are by from very really also new".split()


def synthetic_texts(n: int, seed: int = 0) -> list[str]:
    """n short texts (10-22 words): mostly words of one theme, some filler, a few words of another theme."""
    rng = random.Random(seed)
    names = sorted(THEMES)
    vocab = {k: v.split() for k, v in THEMES.items()}
    out = []
    for i in range(n):
        theme = names[i % len(names)]
        other = rng.choice(names)
        words = rng.choices(vocab[theme], k=rng.randint(7, 14)) + rng.choices(FILLER, k=rng.randint(2, 6))
        words += rng.choices(vocab[other], k=rng.randint(0, 2))
        rng.shuffle(words)
        out.append(" ".join(words).capitalize() + ".")
    return out


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _child(n: int, batch_size: int = 256) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyarrow as pa

    from synthcorpus import storage
    from synthcorpus.spec import CorpusSpec
    from synthcorpus.stages.contract import RunContext, StageResult, commit_once, execute
    from synthcorpus.topics import load_embedder

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SYNTHCORPUS_STORAGE_URI"] = Path(tmp).as_uri()
        spec = CorpusSpec.model_validate({
            "name": "bench",
            "documents": 1,
            "seeds": {"web_samples": {"path": "unused.parquet"}},
            "topics": {"labeler": "keywords", "n_clusters": "auto", "max_clusters": 40, "embed_batch_size": batch_size},
            "prompts": {"formats": ["textbook"], "audiences": ["college_students"],
                        "template_dir": str(ROOT / "include" / "prompts")},
        })
        run = RunContext.create(spec, f"bench-{n}")
        seeds_uri = run.layout.output("seeds", "seeds")
        texts = synthetic_texts(n)
        storage.write_parquet(seeds_uri, pa.table({
            "seed_id": [f"w{i:07d}" for i in range(n)], "kind": ["web"] * n, "text": texts,
            "subject": pa.nulls(n, pa.string()), "course": pa.nulls(n, pa.string()), "unit": pa.nulls(n, pa.string()),
        }))
        del texts
        # The seeds marker, as the seeds stage would have committed it: the topics stage reads it.
        commit_once(run.layout.marker("seeds"), lambda: StageResult("seeds", {"seeds": seeds_uri}, {"seeds": n}))
        load_embedder()  # model load is outside the measurement: same cost at every size
        baseline = _rss_mb("VmRSS")
        reset = _reset_peak()
        started = time.perf_counter()
        result = execute(run, "topics")
        seconds = time.perf_counter() - started
        peak = _rss_mb("VmHWM") if reset else None
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    web = result["stats"]["web"]
    print(json.dumps({
        "n": n, "seconds": seconds, "samples_per_s": n / seconds, "embed_samples_per_s": web["embed_samples_per_s"],
        "embed_seconds": web["embed_seconds"], "cluster_seconds": web["cluster_seconds"],
        "keywords_seconds": web["keywords_seconds"], "k": web["k"], "clusters": web["clusters"],
        "baseline_mb": baseline, "peak_mb": peak if peak is not None else maxrss, "peak_source": "VmHWM" if reset else "ru_maxrss",
        "full_matrix_mb": n * 384 * 4 / 2**20,
    }))


def _measure(n: int, batch_size: int) -> dict:
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import topics_bench; "
            f"topics_bench._child({n}, {batch_size})")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT))
    if proc.returncode != 0:
        raise RuntimeError(f"topics_bench child for n={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def topic_extraction(sizes: tuple[int, ...] = (10_000, 100_000), batch_size: int = 256) -> None:
    """Throughput and peak RSS of the topics stage per size, each size in a fresh process."""
    rows = [_measure(n, batch_size) for n in sizes]
    print(f"topic_extraction (labeler=keywords, embed_batch_size={batch_size}, n_clusters=auto, max_clusters=40)")
    print(f"{'seeds':>8} {'total s':>8} {'seeds/s':>8} {'embed/s':>8} {'cluster s':>9} {'k':>3} "
          f"{'base MB':>8} {'peak MB':>8} {'stage MB':>8} {'n x 384 f32 MB':>14}")
    for r in rows:
        stage = r["peak_mb"] - r["baseline_mb"]
        print(f"{r['n']:>8} {r['seconds']:>8.1f} {r['samples_per_s']:>8.0f} {r['embed_samples_per_s']:>8.0f} "
              f"{r['cluster_seconds']:>9.1f} {r['k']:>3} {r['baseline_mb']:>8.0f} {r['peak_mb']:>8.0f} {stage:>8.0f} "
              f"{r['full_matrix_mb']:>14.0f}")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        sa, sb = a["peak_mb"] - a["baseline_mb"], b["peak_mb"] - b["baseline_mb"]
        print(f"seeds x{b['n'] / a['n']:.0f}: process peak x{b['peak_mb'] / a['peak_mb']:.2f}, "
              f"stage peak (above the loaded model) x{sb / max(sa, 1e-9):.2f} "
              f"(+{sb - sa:.0f} MB, vs +{b['full_matrix_mb'] - a['full_matrix_mb']:.0f} MB if the embeddings were held in memory)")
    print(f"peak = {rows[0]['peak_source']} (RSS high-water, reset after the model load); "
          "embeddings live in a temporary file, not in RSS")


if __name__ == "__main__":
    topic_extraction(tuple(int(a) for a in sys.argv[1:]) or (10_000, 100_000))

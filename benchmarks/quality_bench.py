"""Benchmarks of the quality stages at corpus scale (issue 5, "Benchmark").

quality_throughput: for each size (100 k and 1 M documents by default) a synthetic corpus is written
once, streaming, as Parquet shards of SHARD_DOCS documents (``generate/shard-XXXXX.parquet`` of a real
run layout, each committed with its ``generate`` marker after a committed ``plan_shards`` marker, as the
pipeline's stages do), by a generator child process. Then three
fresh single-threaded child processes (OMP/OPENBLAS/MKL threads = 1) each measure one thing on the
same shards, so that each one's peak memory is its own:

(a) ``filter``: our filter stage (``synthcorpus.stages.filter_shard``, run with its marker commit by
    ``stages.contract.execute``) over every shard;
(b) ``ours``: our MinHash (``synthcorpus.quality.minhash.write_signatures`` over every shard +
    ``find_clusters``);
(c) ``datatrove``: datatrove's four MinHash stages (MinhashDedupSignature -> MinhashDedupBuckets ->
    MinhashDedupCluster -> MinhashDedupFilter; LocalPipelineExecutor, workers=1, so everything runs in
    the child process) reading the same Parquet shards with the same n-gram (5) / bands (14) /
    rows (8); kept documents go to a ParquetWriter, removed ones to the filter's exclusion writer.

Each child reports docs/s (documents / wall time of the measured part, excluding interpreter start and
imports) and its peak RSS over its own baseline: VmHWM, reset with /proc/self/clear_refs right before
the measured part, minus VmRSS at that point. Recall is measured on the planted near-duplicates (5 %
of the documents; a planted pair counts as caught when either of its two documents is removed; a
"false removal" is a removed document that is neither a planted copy nor its source), the same rule
for both MinHash implementations.

The documents: DEFAULT_WORDS = 100 words each by default (``--words 300`` for 300; at 300 words
datatrove's signature stage runs at ~200 docs/s on one core, so 1 M docs would take ~1.5 h for it
alone; the same size is used for all three measurements) from a Zipf-like vocabulary of 30 k words whose most frequent ranks are
English function words (so that language id says "en" and stop-word style quality rules pass) and the
rest pronounceable pseudo-words, with a full stop every 15 words and a paragraph break every 105.
Each document's words come from its own RNG (seeded by its index), so a planted copy regenerates its
source instead of keeping the corpus in memory: the generator holds one shard at a time. A planted
copy is an earlier document with 3-8 words per 300 replaced (1-3 at 100 words) and, with
probability 0.3, its words rotated (a paragraph moved), as in minhash_bench.synthetic_docs. The copies
sit on the LSH S-curve (Jaccard ~0.73-0.85, threshold 0.719 at 14 x 8), so recall < 1 is expected.

datatrove 0.10.1 calls ``xxhash.xxh64_intdigest`` with a ``str``, which the pinned xxhash 4 rejects;
``_patch_datatrove_xxhash`` encodes to UTF-8 first (what xxhash < 4 did), so datatrove runs its default
hash unchanged otherwise.

gate_vs_pandas: one 1 M-row documents frame (short text, n_words, unique text_hash, 10 rows with
n_words out of range so one expectation fails and both sides must count the same 10 unexpected
values) and a one-row run_metrics; ``quality.gate.validate`` (two GX checkpoints + Data Docs) versus the
same five checks in plain pandas, same data, same process, GX import timed separately.

Run: .venv/bin/python benchmarks/run.py quality_throughput    (or gate_vs_pandas)
     .venv/bin/python benchmarks/quality_bench.py quality_throughput 20000 --words 300 --only ours,datatrove
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Self

from minhash_bench import _rss_mb  # benchmarks/ is on sys.path for every entry point

ROOT = Path(__file__).resolve().parents[1]
DUP_SHARE = 0.05
SHARD_DOCS = 12_500  # 8 shards at 100 k, 80 at 1 M
WORDS = 300
DEFAULT_WORDS = 100  # see the module docstring: 300-word docs make datatrove at 1 M take ~1.5 h on one core
VOCAB_SIZE = 30_000
SENTENCE, PARAGRAPH = 15, 105
NGRAM, BANDS, ROWS = 5, 14, 8
RUN_ID = "bench"
REPEATS = 5  # gate_vs_pandas: runs of each side
FUNCTION_WORDS = (  # noqa: SIM905
    "the of and to a in is that it was for on are as with his they be at one have this from or had by "
    "but some what there we can out other were all your when up use word how said an each she which do "
    "their time if will way about many then them would write like so these her long make thing see him "
    "two has look more day could go come did my sound no most number who over know water than call first "
    "people may down side been now find"
).split()


# ------------------------------------------------------------------------------------- synthetic corpus


def vocabulary(size: int = VOCAB_SIZE) -> list[str]:
    """Function words first (the most frequent ranks), then distinct pseudo-words, deterministic."""
    onsets = "b c d f g h j k l m n p r s t v w z br ch cl dr fl gr pl sh st tr".split()  # noqa: SIM905
    nuclei = "a e i o u ai ea ee oa ou".split()  # noqa: SIM905
    codas = ["", "n", "r", "s", "t", "l", "m", "nd", "st"]
    syllables = [o + n + c for o, n, c in itertools.product(onsets, nuclei, codas)]
    rng = random.Random(0)
    rng.shuffle(syllables)
    words, seen = list(FUNCTION_WORDS), set(FUNCTION_WORDS)
    while len(words) < size:
        w = rng.choice(syllables) + rng.choice(syllables)
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


class Corpus:
    """n documents, each a pure function of (seed, index); ``planted`` = {copy index: source index}."""

    def __init__(self, n: int, seed: int = 0, words: int = WORDS):
        import numpy as np

        self.n, self.seed, self.words = n, seed, words
        self.vocab = vocabulary()
        w = 1.0 / (np.arange(len(self.vocab)) + 10.0)
        self.cdf = np.cumsum(w / w.sum())
        self.cdf[-1] = 1.0
        rng = random.Random(seed)
        self.planted: dict[int, int] = {}
        for i in range(n):
            if i > 10 and rng.random() < DUP_SHARE:
                src = rng.randrange(i)
                while src in self.planted:
                    src = rng.randrange(i)
                self.planted[i] = src
        seps = [" "] * words
        for k in range(SENTENCE - 1, words, SENTENCE):
            seps[k] = ".\n\n" if (k + 1) % PARAGRAPH == 0 else ". "
        seps[-1] = "."
        self.seps = seps

    def _own_words(self, i: int):
        import numpy as np

        rng = np.random.Generator(np.random.PCG64([self.seed, i]))
        return np.searchsorted(self.cdf, rng.random(self.words), side="right")

    def word_ids(self, i: int):
        src = self.planted.get(i)
        if src is None:
            return self._own_words(i)
        import numpy as np

        ids = self._own_words(src).copy()
        rng = random.Random(self.seed * 1_000_003 + i)
        lo, hi = max(1, round(3 * self.words / 300)), max(1, round(8 * self.words / 300))  # 3-8 edits per 300 words
        for j in rng.sample(range(len(ids)), rng.randint(lo, hi)):
            ids[j] = rng.randrange(len(self.vocab))
        if rng.random() < 0.3:
            cut = rng.randrange(self.words // 6, self.words * 5 // 6)
            ids = np.concatenate([ids[cut:], ids[:cut]])
        return ids

    def text(self, i: int) -> str:
        v = self.vocab
        body = "".join(v[k] + s for k, s in zip(self.word_ids(i).tolist(), self.seps))
        return body[0].upper() + body[1:]


def prompt_id(i: int) -> str:
    return f"doc-{i:07d}"


# ------------------------------------------------------------------------------------------ measuring


class _Meter:
    """Wall time and peak RSS over the RSS at the start of the measured part."""

    def __enter__(self) -> Self:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        self.base = _rss_mb("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        self.peak_mb = _rss_mb("VmHWM") - self.base


def _spec(n: int):
    sys.path.insert(0, str(ROOT))
    from synthcorpus.spec import parse_spec
    from tests.conftest import tiny_spec_dict

    return parse_spec(tiny_spec_dict(**{"documents": n, "quality.min_words": 50, "quality.max_words": 5000,
                                        "quality.drop_truncated": True, "quality.max_filtered_share": 0.5}))


def _run(n: int):
    from synthcorpus.stages.contract import RunContext

    return RunContext.create(_spec(n), RUN_ID)


def _shard_uris(run) -> list[str]:
    """The generated shards, as their committed ``generate`` markers name them (in plan order)."""
    from synthcorpus.stages.contract import results

    return [m["outputs"]["shard"] for m in results(run, "generate")]


def _recall(removed: set[int], planted: dict[int, int]) -> dict:
    sources = set(planted.values())
    caught = sum(1 for p, s in planted.items() if p in removed or s in removed)
    false = sum(1 for d in removed if d not in planted and d not in sources)
    return {"planted": len(planted), "caught": caught, "removed": len(removed), "false_removals": false}


def _load_planted(tmp: str) -> dict[int, int]:
    return {int(k): v for k, v in json.loads(Path(tmp, "planted.json").read_text()).items()}


# -------------------------------------------------------------------------------------- child processes


def _child_generate(n: int, tmp: str, words: int = WORDS) -> dict:
    import pyarrow as pa

    from synthcorpus import storage
    from tests.stagekit import given, given_plan

    run = _run(n)
    corpus = Corpus(n, words=words)
    given_plan(run, -(-n // SHARD_DOCS))  # the shards every mapped stage expands over
    t0 = time.perf_counter()
    uris = []
    for k, start in enumerate(range(0, n, SHARD_DOCS)):
        idx = range(start, min(n, start + SHARD_DOCS))
        texts = [corpus.text(i) for i in idx]
        table = pa.table({"prompt_id": [prompt_id(i) for i in idx], "text": texts,
                          "language": ["en"] * len(idx), "finish_reason": ["stop"] * len(idx),
                          "status": ["ok"] * len(idx)})
        uri = run.layout.shard("generate", k)
        storage.write_parquet(uri, table)
        given(run, "generate", {"shard": uri}, shard=k, stats={"rows": table.num_rows})  # committed, as generate does
        uris.append(uri)
    Path(tmp, "planted.json").write_text(json.dumps(corpus.planted))
    words = sum(len(corpus.text(i).split()) for i in range(min(n, 200))) / min(n, 200)
    return {"seconds": time.perf_counter() - t0, "shards": len(uris), "planted": len(corpus.planted),
            "words_per_doc": words, "peak_rss_mb": _rss_mb("VmHWM")}


def _preload_filter() -> None:
    """Load what the filter stage loads lazily once per process (language-id model, Gopher filters), so
    that the measured part is the per-document work."""
    from synthcorpus.quality import filters
    from synthcorpus.quality.langid import detect

    detect("The bees carry pollen from one flower to the next.")
    if hasattr(filters, "_gopher"):
        filters._gopher()


def _child_filter(n: int, tmp: str) -> dict:
    from synthcorpus.stages.contract import execute, shards

    _preload_filter()
    run = _run(n)
    indexes = shards(run)
    reasons: dict[str, int] = {}
    kept = 0
    with _Meter() as m:
        for index in indexes:  # the filter_shard task of each shard: the stage + its marker commit
            stats = execute(run, "filter_shard", index)["stats"]
            kept += stats["kept"]
            for r, c in stats.get("reasons", {}).items():
                reasons[r] = reasons.get(r, 0) + c
    return {"seconds": m.seconds, "docs_per_s": n / m.seconds, "peak_mb": m.peak_mb, "kept": kept,
            "reasons": {r: c for r, c in reasons.items() if c}}


def _child_ours(n: int, tmp: str) -> dict:
    # imports that the stage does lazily, done here so they are outside the measured part
    import pyarrow.compute
    import pyarrow.parquet  # noqa: F401
    import scipy.sparse.csgraph  # noqa: F401
    import xxhash  # noqa: F401

    from synthcorpus.quality.minhash import (
        MinHashParams,
        find_clusters,
        write_signatures,
    )

    run = _run(n)
    uris = _shard_uris(run)
    sig_uris = [run.layout.shard("minhash_signatures", i) for i in range(len(uris))]
    params = MinHashParams(ngram=NGRAM, bands=BANDS, rows=ROWS)
    with _Meter() as m:
        t0 = time.perf_counter()
        for i, (uri, sig_uri) in enumerate(zip(uris, sig_uris)):
            write_signatures(uri, sig_uri, i, params)
        t1 = time.perf_counter()
        clusters = find_clusters(sig_uris, params)
    removed = {int(d.split("-")[1]) for _, dups in clusters for d in dups}
    return {"seconds": m.seconds, "sig_s": t1 - t0, "cluster_s": m.seconds - (t1 - t0), "docs_per_s": n / m.seconds,
            "peak_mb": m.peak_mb, "threshold": params.threshold(), "verify_threshold": params.verify_threshold,
            **_recall(removed, _load_planted(tmp))}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _patch_datatrove_xxhash() -> None:
    """datatrove 0.10.1 hashes shingles with its default HashConfig (xxhash, 64 bit) by passing a ``str``
    to ``xxhash.xxh64_intdigest``; xxhash >= 4 (4.1.0 is pinned here) accepts bytes only and raises
    TypeError. Encode first (UTF-8, what xxhash < 4 did implicitly) so datatrove runs its default hash."""
    import datatrove.utils.hashes.xxhash as dx
    import xxhash

    def _enc(f):
        return lambda data: f(data.encode() if isinstance(data, str) else data)

    dx.xxhash32, dx.xxhash64 = _enc(xxhash.xxh32_intdigest), _enc(xxhash.xxh64_intdigest)


def _child_datatrove(n: int, tmp: str) -> dict:
    import resource
    from importlib.util import find_spec

    if find_spec("datatrove") is None:
        return {"skipped": "datatrove is not importable in this venv"}
    import pyarrow.parquet as pq
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    _patch_datatrove_xxhash()
    run = _run(n)
    gen_dir = run.layout.stage_dir("generate").removeprefix("file://")
    cfg = MinhashConfig(n_grams=NGRAM, num_buckets=BANDS, hashes_per_bucket=ROWS)
    d = os.path.join(tmp, "datatrove")

    def reader() -> ParquetReader:
        return ParquetReader(gen_dir, glob_pattern="shard-*.parquet", text_key="text", id_key="prompt_id")

    stages = [
        ("signatures", [reader(), MinhashDedupSignature(output_folder=f"{d}/sigs", config=cfg)], 1),
        ("buckets", [MinhashDedupBuckets(input_folder=f"{d}/sigs", output_folder=f"{d}/buckets", config=cfg)], BANDS),
        ("cluster", [MinhashDedupCluster(input_folder=f"{d}/buckets", output_folder=f"{d}/remove_ids", config=cfg)], 1),
        ("filter", [reader(), MinhashDedupFilter(input_folder=f"{d}/remove_ids", exclusion_writer=ParquetWriter(f"{d}/removed")),
                    ParquetWriter(f"{d}/out")], 1),
    ]
    times = {}
    with _Meter() as m:
        for i, (name, pipe, tasks) in enumerate(stages):
            t = time.perf_counter()
            LocalPipelineExecutor(pipeline=pipe, tasks=tasks, workers=1, logging_dir=f"{d}/logs{i}").run()
            times[name] = time.perf_counter() - t
    removed: set[int] = set()
    for f in sorted(Path(d, "removed").glob("*.parquet")):
        removed.update(int(x.split("-")[1]) for x in pq.read_table(f, columns=["id"]).column("id").to_pylist())
    kept = sum(pq.ParquetFile(f).metadata.num_rows for f in Path(d, "out").glob("*.parquet"))
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"version": _version("datatrove"), "seconds": m.seconds,
            "stage_s": times, "docs_per_s": n / m.seconds, "peak_mb": m.peak_mb, "children_peak_rss_mb": children_mb,
            "kept": kept, **_recall(removed, _load_planted(tmp))}


def _child_main(kind: str, n: int, tmp: str, *args) -> None:
    os.environ["SYNTHCORPUS_STORAGE_URI"] = Path(tmp, "storage").as_uri()
    result = globals()[f"_child_{kind}"](n, tmp, *args)
    print("RESULT " + json.dumps(result), flush=True)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
            "RAYON_NUM_THREADS": "1", "POLARS_MAX_THREADS": "1", "HF_HUB_OFFLINE": "1", "GX_ANALYTICS_ENABLED": "false",
            "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "benchmarks"), str(ROOT)])}


def _spawn(kind: str, n: int, tmp: str, *args) -> dict | None:
    log = Path(tmp, f"{kind}.log")
    call = ", ".join(repr(a) for a in (kind, n, tmp, *args))
    with log.open("w") as err:
        proc = subprocess.run([sys.executable, "-c", f"import quality_bench as q; q._child_main({call})"],
                              stdout=subprocess.PIPE, stderr=err, text=True, env=_env(), cwd=ROOT, check=False)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        print(f"  {kind} n={n}: failed (exit {proc.returncode})\n{log.read_text()[-3000:]}", flush=True)
        return None
    return json.loads(lines[-1].removeprefix("RESULT "))


def _report(kind: str, n: int, res: dict) -> None:
    r = res.get(kind)
    if r is None:
        return
    if kind == "filter":
        print(f"  filter stage (ours, 1 thread): {r['docs_per_s']:.0f} docs/s ({r['seconds']:.1f} s), "
              f"peak +{r['peak_mb']:.0f} MB; kept {r['kept']}/{n}, removed by reason {r['reasons'] or '{}'}", flush=True)
    elif kind == "ours":
        print(f"  minhash (ours, 1 thread, {NGRAM}-gram, {BANDS}x{ROWS}, threshold {r['threshold']:.3f}, "
              f"verify {r['verify_threshold']}): {r['docs_per_s']:.0f} docs/s ({r['seconds']:.1f} s: signatures "
              f"{r['sig_s']:.1f} s, clusters {r['cluster_s']:.1f} s), peak +{r['peak_mb']:.0f} MB; recall "
              f"{r['caught']}/{r['planted']} = {r['caught'] / max(r['planted'], 1):.4f}, "
              f"false removals {r['false_removals']}", flush=True)
    elif kind == "datatrove" and "skipped" in r:
        print(f"  datatrove: {r['skipped']} -> comparison skipped", flush=True)
    elif kind == "datatrove":
        stages = ", ".join(f"{k} {v:.0f} s" for k, v in r["stage_s"].items())
        print(f"  minhash (datatrove {r['version']}, 4 stages, 1 worker, same params): {r['docs_per_s']:.0f} docs/s "
              f"({r['seconds']:.0f} s: {stages}), peak +{r['peak_mb']:.0f} MB; recall "
              f"{r['caught']}/{r['planted']} = {r['caught'] / max(r['planted'], 1):.4f}, "
              f"false removals {r['false_removals']}", flush=True)
    o, t = res.get("ours"), res.get("datatrove")
    if kind in ("ours", "datatrove") and o and t and "skipped" not in t:
        three = n / sum(v for k, v in t["stage_s"].items() if k != "filter")
        print(f"  ratio ours/datatrove (n={n}): docs/s x{o['docs_per_s'] / t['docs_per_s']:.1f} over its 4 stages "
              f"(x{o['docs_per_s'] / three:.1f} against its first 3, i.e. without the filter stage's re-read + write); "
              f"peak memory {o['peak_mb']:.0f} MB vs {t['peak_mb']:.0f} MB (x{o['peak_mb'] / max(t['peak_mb'], 1e-9):.2f}); "
              f"recall {o['caught'] / max(o['planted'], 1):.4f} vs {t['caught'] / max(t['planted'], 1):.4f}", flush=True)


def quality_throughput(sizes: tuple[int, ...] = (100_000, 1_000_000), words: int = DEFAULT_WORDS,
                       order: tuple[str, ...] = ("ours", "datatrove", "filter"), keep: bool = False) -> dict:
    """Filter stage, our MinHash and datatrove's MinHash on the same synthetic shards; returns the figures."""
    out = {}
    for n in sizes:
        tmp = tempfile.mkdtemp(prefix=f"quality-bench-{n}-")
        print(f"quality_throughput n={n}, {words} words/doc: work dir {tmp} (child logs there)", flush=True)
        try:
            gen = _spawn("generate", n, tmp, words)
            if gen is None:
                continue
            print(f"  corpus: {n} docs x {gen['words_per_doc']:.0f} words in {gen['shards']} Parquet shards of "
                  f"{SHARD_DOCS}, {gen['planted']} planted near-duplicates (generated in {gen['seconds']:.0f} s, "
                  f"generator peak RSS {gen['peak_rss_mb']:.0f} MB)", flush=True)
            res = {"corpus": gen}
            for kind in order:
                res[kind] = _spawn(kind, n, tmp)
                _report(kind, n, res)
            out[n] = res
        finally:
            if not keep:
                shutil.rmtree(tmp, ignore_errors=True)
    return out


# ----------------------------------------------------------------------------------------- gate vs pandas


def _gate_frame(rows: int):
    import hashlib

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n_words = rng.integers(60, 900, rows)
    bad = rng.choice(rows, 10, replace=False)
    n_words[bad] = 6000  # above max_words: one documents expectation fails, 10 unexpected values
    return pd.DataFrame({
        "text": [f"document {i} about bees" for i in range(rows)],
        "n_words": n_words,
        "text_hash": [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)],
    })


# The same five checks on both sides: these bounds, in plain pandas and as the GX adapter test's suite.
GATE_BOUNDS = {"min_documents": 1000, "max_filtered_share": 0.5, "min_words": 50, "max_words": 5000}


def _pandas_checks(docs, run_metrics: dict, t) -> dict:
    import pandas as pd

    metrics = pd.DataFrame([run_metrics])
    return {
        "row_count": len(docs) >= t.min_documents,
        "text_not_null": int(docs["text"].isna().sum()),
        "n_words_between": int((~docs["n_words"].between(t.min_words, t.max_words)).sum()),
        "text_hash_unique": int(docs["text_hash"].duplicated(keep=False).sum()),
        "filtered_share": bool(metrics["filtered_share"].between(0, t.max_filtered_share).all()),
    }


def _child_gate(rows: int, tmp: str) -> dict:
    import pandas as pd  # imported for the frames; not part of either figure

    from types import SimpleNamespace

    from synthcorpus.quality.gate import validate

    docs = _gate_frame(rows)
    run_metrics = {"generated": rows + 1000, "documents": rows, "filtered_share": 1000 / (rows + 1000)}
    from tests.integration.test_gate import suite as gx_suite

    t = SimpleNamespace(**GATE_BOUNDS)
    suite = gx_suite(**GATE_BOUNDS)
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    t0 = time.perf_counter()
    import great_expectations  # noqa: F401
    import_s = time.perf_counter() - t0
    pandas_s, gx_s = [], []
    for r in range(REPEATS):  # interleaved, so load from other processes hits both alike
        t0 = time.perf_counter()
        checks = _pandas_checks(docs, run_metrics, t)
        pandas_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        report = validate({"documents": docs, "run_metrics": pd.DataFrame([run_metrics])}, suite, Path(tmp, f"gx-{r}"), "bench")
        gx_s.append(time.perf_counter() - t0)
    n_words_gx = next(e["observed"] for e in report.expectations if e["column"] == "n_words")
    return {"rows": rows, "import_s": import_s, "pandas_s": pandas_s, "gx_s": gx_s, "pandas": checks,
            "gx_passed": report.passed, "gx_failed": [f"{e['expectation']}({e['column']})" for e in report.failures()],
            "gx_n_words_unexpected": n_words_gx.get("unexpected_count") if isinstance(n_words_gx, dict) else n_words_gx,
            "gx_expectations": len(report.expectations)}


def gate_vs_pandas(rows: int = 1_000_000) -> dict | None:
    tmp = tempfile.mkdtemp(prefix="gate-bench-")
    try:
        r = _spawn("gate", rows, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if r is None:
        return None
    gx, pdx = r["gx_s"], r["pandas_s"]
    agree = r["pandas"]["n_words_between"] == r["gx_n_words_unexpected"]

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    print(f"gate_vs_pandas rows={rows}: GX gate (2 checkpoints, {r['gx_expectations']} expectations, Data Docs) "
          f"{' / '.join(f'{x:.2f}' for x in gx)} s; plain pandas, same 5 checks {' / '.join(f'{x:.3f}' for x in pdx)} s "
          f"(interleaved runs); ratio GX/pandas x{med(gx) / med(pdx):.1f} (medians {med(gx):.2f} / {med(pdx):.3f} s), "
          f"x{min(gx) / min(pdx):.1f} (best runs); GX import {r['import_s']:.1f} s (not in the GX figure)")
    print(f"  same verdict: GX failed {r['gx_failed']} with {r['gx_n_words_unexpected']} unexpected n_words, "
          f"pandas counted {r['pandas']['n_words_between']} -> {'agree' if agree else 'DISAGREE'}")
    return r


if __name__ == "__main__":
    import argparse

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ap = argparse.ArgumentParser()
    ap.add_argument("name", choices=["quality_throughput", "gate_vs_pandas"])
    ap.add_argument("sizes", nargs="*", type=int, help="documents (quality_throughput) or rows (gate_vs_pandas)")
    ap.add_argument("--words", type=int, default=DEFAULT_WORDS)
    ap.add_argument("--only", default="ours,datatrove,filter", help="comma-separated, in this order")
    a = ap.parse_args()
    if a.name == "quality_throughput":
        quality_throughput(tuple(a.sizes) or (100_000, 1_000_000), words=a.words, order=tuple(a.only.split(",")))
    else:
        gate_vs_pandas(*a.sizes)

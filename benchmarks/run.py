"""Benchmarks, run by `make bench` (all) or `python benchmarks/run.py NAME`. Each prints figures measured
side by side in the same run.

topic_extraction: see benchmarks/topics_bench.py (samples/s and peak memory at 10k and 100k seeds).

quality_throughput, gate_vs_pandas: see benchmarks/quality_bench.py (filter stage + MinHash vs datatrove's
MinHash stages at 100k and 1M docs; the GX gate vs the same checks in pandas on 1M rows).

refresh: see benchmarks/refresh_bench.py (10k new docs deduplicated against 0, 100k and 1M published ones
through quality.published_index: time and peak memory side by side, recall).

ui_pages: see benchmarks/ui_bench.py (the Corpora UI's pages, GET through FastAPI's TestClient, for a finished
1k-document and a finished 100k-document run built by the pipeline with the fake engine: median wall time
and bytes per page side by side, ratio large/small; target: the 100k run's page answers in < 1 s).

scheduler_throughput: see benchmarks/scheduler_bench.py (generate's tok/s on the real deployment vs
`airflow dags test`, same spec).

load (opt-in, long: only when named, never by `make bench` or `make test`): see benchmarks/load.py (a 100k-document
run through every post-generation stage on the real deployment, generation prepared by a fast fake engine: wall time
and peak memory per task, goal no task over 2 GiB).

dag_parse: see benchmarks/dag_parse.py (Airflow's DagBag over dags/ for the shipped specs and for 50 specs, fresh process
each, median of 3: wall and CPU time; goal well under 1 s for every spec).

decontam_scale: see benchmarks/decontam_scale.py (the decontaminate stage vs datatrove's NGramsDecontIndexer +
NGramsDecontFilter on 100k synthetic docs (1M with --full) against a 14k-item MMLU-shaped reference set, each in a fresh
process: docs/s, peak memory, catches on planted near-copies, false positives).

diversity_near_dups: see benchmarks/diversity_bench.py (the prompts stage's near-duplicate check over 111k prompt-shaped
texts vs the implementation it replaced, each in a fresh process: wall time, peak memory, same answer).

judge_eval: see benchmarks/judge_eval.py (the LLM judge on a planted set of good documents and bad variants per
defect: AUC of score_overall per defect, share of replies that parse, tokens and seconds per judgement; model
from $SYNTHCORPUS_JUDGE_MODEL, default the bundled 135M).

worker_overhead: the worker entrypoint (``synthcorpus.stages.generate.run_unit``, what the worker CLI
runs: read plan shard, generate, write output, commit its marker) versus calling the engine directly
on the same prompts with the same greedy sampling, both including model load. Target: worker/direct
throughput >= 0.97.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import pyarrow as pa

from synthcorpus import storage
from synthcorpus.engines import SamplingParams, load_engine
from synthcorpus.generation import META_KEY
from synthcorpus.layout import RunLayout
from synthcorpus.stages.generate import run_unit, work_unit

PROMPTS = [
    "Explain how bees help flowers make seeds.",
    "Write a short paragraph about the printing press.",
    "Describe friction to a ten-year-old.",
    "What is compound interest? Give an example.",
    "Tell a very short story about a lighthouse keeper.",
    "Explain why the sky looks blue.",
]
CFG = {"engine": "llamacpp", "model": "smollm2-135m-instruct", "n_ctx": 1024, "max_tokens": 96,
       "temperature": 0.0, "top_p": 1.0, "repeat_penalty": 1.1, "seed": 0, "run_id": "bench"}


def direct() -> tuple[float, int]:
    started = time.perf_counter()
    engine = load_engine(CFG)
    params = SamplingParams.from_config(CFG)
    tokens = sum(engine.generate(p, params, seed=i).completion_tokens for i, p in enumerate(PROMPTS))
    engine.close()
    return time.perf_counter() - started, tokens


def worker(tmp: str) -> tuple[float, int]:
    plan = pa.table({"prompt_id": [f"p{i}" for i in range(len(PROMPTS))], "prompt": PROMPTS,
                     "seed": list(range(len(PROMPTS)))}).replace_schema_metadata({META_KEY: json.dumps(CFG).encode()})
    # A fresh run each time (its own plan shard, output, parts and marker), so nothing is skipped.
    unit = work_unit(RunLayout(f"file://{tmp}", "bench", f"run-{time.time_ns()}"), 0)
    storage.write_parquet(unit["input"], plan)
    started = time.perf_counter()
    marker = run_unit(unit)
    return time.perf_counter() - started, marker["stats"]["completion_tokens"]


def worker_overhead(repeats: int = 2) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        direct(); worker(tmp)  # warm the page cache for the model file
        d = [direct() for _ in range(repeats)]
        w = [worker(tmp) for _ in range(repeats)]
    d_rate = sum(t for _, t in d) / sum(s for s, _ in d)
    w_rate = sum(t for _, t in w) / sum(s for s, _ in w)
    print(f"worker_overhead: direct {d_rate:.1f} tok/s, worker {w_rate:.1f} tok/s, "
          f"ratio worker/direct = {w_rate / d_rate:.3f} (target >= 0.97; {len(PROMPTS)} prompts x {repeats} runs)")


# Benchmarks in their own modules: name -> (module in benchmarks/, function), imported when run.
MODULES = {
    "topic_extraction": ("topics_bench", "topic_extraction"),
    "openai_concurrency": ("openai_bench", "openai_concurrency"),
    "minhash": ("minhash_bench", "minhash"),
    "quality_throughput": ("quality_bench", "quality_throughput"),
    "gate_vs_pandas": ("quality_bench", "gate_vs_pandas"),
    "scheduler_throughput": ("scheduler_bench", "scheduler_throughput"),
    "refresh": ("refresh_bench", "refresh"),
    "ui_pages": ("ui_bench", "ui_pages"),
    "judge_eval": ("judge_eval", "judge_eval"),
    "decontam_scale": ("decontam_scale", "decontam_scale"),
    "load": ("load", "load"),
    "dag_parse": ("dag_parse", "dag_parse"),
    "diversity_near_dups": ("diversity_bench", "diversity_near_dups"),
}
# Opt-in benchmarks: run only when named (`python benchmarks/run.py load`), never by `make bench` (no name).
OPT_IN = ("load",)


def run(name: str) -> None:
    if name not in MODULES:
        globals()[name]()
        return
    import importlib

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    module, function = MODULES[name]
    getattr(importlib.import_module(module), function)()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = sys.argv[1:] or ["worker_overhead", "openai_concurrency", "minhash", "topic_extraction",
                             "quality_throughput", "gate_vs_pandas", "scheduler_throughput", "refresh", "ui_pages", "judge_eval",
                             "decontam_scale", "dag_parse", "diversity_near_dups"]
    for name in wanted:
        run(name)

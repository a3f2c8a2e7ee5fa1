"""Benchmark of the openai engine's concurrency against a real OpenAI-compatible server.

openai_concurrency: starts llama-cpp-python's server (``python -m llama_cpp.server``, extra
``llama-cpp-python[server]``) on loopback with the bundled SmolLM2-135M GGUF, then sends the same 8 prompts
(max_tokens 48, temperature 0) through OpenAIEngine.generate_batch at concurrency 1, 4 and 8 and prints
completion tokens/s for each and the ratio to concurrency 1, side by side.

What it shows: llama_cpp.server has no parallel slots (no ``--n_parallel``/``--parallel`` option, unlike
llama.cpp's C++ ``llama-server``); it runs one completion at a time behind a lock, so concurrency only
overlaps the HTTP round trips and queueing with generation. Expect ratios near 1.0 here; a server with
continuous batching (vLLM, TGI, ``llama-server --parallel N``) is where concurrency multiplies throughput.

Run: .venv/bin/python benchmarks/openai_bench.py
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from pathlib import Path

from synthcorpus.engines import Completion, Request, SamplingParams
from synthcorpus.engines.llamacpp import start_server
from synthcorpus.engines.openai_engine import OpenAIEngine

ALIAS = "smollm2-135m-instruct"
PROMPTS = [
    "Explain how bees help flowers make seeds.",
    "Write a short paragraph about the printing press.",
    "Describe friction to a ten-year-old.",
    "What is compound interest? Give an example.",
    "Tell a very short story about a lighthouse keeper.",
    "Explain why the sky looks blue.",
    "Give three tips for learning to cook.",
    "Describe a thunderstorm in two sentences.",
]
PARAMS = SamplingParams(max_tokens=48, temperature=0.0, top_p=1.0)
LEVELS = (1, 4, 8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(port: int, log: Path, threads: int = 2) -> subprocess.Popen:
    return start_server(port, log, alias=ALIAS, threads=threads)


def _run(base_url: str, concurrency: int) -> tuple[float, int, float]:
    """(wall seconds, completion tokens, mean per-request latency) for the 8 prompts."""
    engine = OpenAIEngine(ALIAS, base_url, concurrency=concurrency, max_retries=0)
    started = time.perf_counter()
    out = engine.generate_batch([Request(p, seed=i) for i, p in enumerate(PROMPTS)], PARAMS)
    wall = time.perf_counter() - started
    bad = [r for r in out if not isinstance(r, Completion)]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return wall, sum(r.completion_tokens for r in out), sum(r.latency_s for r in out) / len(out)


def openai_concurrency(repeats: int = 2) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        proc = _start(port, Path(tmp) / "server.log")
        base_url = f"http://127.0.0.1:{port}/v1"
        try:
            _run(base_url, 1)  # warm-up: first evaluation, page cache
            results = {}
            for level in LEVELS:
                runs = [_run(base_url, level) for _ in range(repeats)]
                wall = sum(w for w, _, _ in runs)
                tokens = sum(t for _, t, _ in runs)
                results[level] = (tokens / wall, sum(lat for *_, lat in runs) / len(runs), tokens // repeats)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    base = results[LEVELS[0]][0]
    cells = ", ".join(f"c={c}: {r:.1f} tok/s (x{r / base:.2f}, mean latency {lat:.2f}s)"
                      for c, (r, lat, _) in results.items())
    tokens = results[LEVELS[0]][2]
    print(f"openai_concurrency (llama_cpp.server, SmolLM2-135M, {len(PROMPTS)} prompts, max_tokens 48, "
          f"{tokens} completion tokens/run, {repeats} runs each): {cells}")


if __name__ == "__main__":
    openai_concurrency()

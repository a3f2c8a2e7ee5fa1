"""Test doubles for unit tests only; every capability also has a test on the real component."""

from __future__ import annotations

import hashlib

from synthcorpus.engines import Completion, Engine, SamplingParams


VOCAB = (
    "the people who live near the river often walk along its banks in the morning and they say that the water "
    "has changed over many years because farms and towns have grown while the forest became smaller and the "
    "children of the village learn about birds fish plants and the weather from their teachers and parents"
).split()


class FakeEngine(Engine):
    """Deterministic text per (prompt, seed); counts calls so tests can see what was (re)generated."""

    name = "fake"

    def __init__(self, words: int = 80, finish_reason: str = "stop", same_text: bool = False):
        self.words, self.finish_reason, self.same_text = words, finish_reason, same_text
        self.calls: list[str] = []

    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        self.calls.append(prompt)
        key = "same" if self.same_text else f"{prompt}|{seed}"
        # English words (language id must see English), in an order unique to the prompt and seed, from a
        # fresh digest every 32 words: a text that loops would (rightly) fail the Gopher repetition filters.
        stream = b"".join(hashlib.sha256(f"{key}|{block}".encode()).digest() for block in range(self.words // 32 + 1))
        words = [VOCAB[stream[i] % len(VOCAB)] for i in range(self.words)]
        text = " ".join(words).capitalize() + "."
        return Completion(text, self.finish_reason, len(prompt.split()), self.words, 0.001)

    def model_info(self) -> dict:
        return {"engine": "fake", "model": "fake-model", "model_file": "fake.gguf", "model_sha256": "0" * 64, "model_bytes": 0}


class FakeJudgeEngine(FakeEngine):
    """FakeEngine that also answers the judge's and the rewriter's prompts (include/prompts/*/judge.j2,
    rewrite.j2): a document is scored from its text -- ``low`` when it contains the word "river" before its
    rewrite, 4s otherwise -- and a rewrite is FakeEngine text without "river". ``malformed`` replies that
    many times (per prompt) with text that is not the rubric's format before answering properly."""

    def __init__(self, *args, malformed: int = 0, low: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.malformed, self.low = malformed, low
        self.judge_calls: list[str] = []
        self.rewrite_calls: list[str] = []
        self._bad_left: dict[str, int] = {}

    def generate(self, prompt, params, seed):
        if "educational_value: <0-5>" in prompt:
            self.judge_calls.append(prompt)
            left = self._bad_left.setdefault(prompt, self.malformed)
            if left:
                self._bad_left[prompt] = left - 1
                return Completion("I think this document is quite good overall!", "stop", len(prompt.split()), 9, 0.001)
            document = prompt.split('"""')[-2]  # the last quoted block (the request may quote an extract)
            score = self.low if " river " in f" {document.lower()} " else 4
            text = (f"educational_value: {score}\ncoherence: {score}\nfaithfulness: 4\naudience_fit: 4\n"
                    f"critique: {'mentions the river too often' if score < 4 else 'fine'}")
            return Completion(text, "stop", len(prompt.split()), 20, 0.001)
        if prompt.startswith(("Rewrite this", "Réécrivez", "Schreiben Sie", "Reescriba", "Riscrivi")):
            self.rewrite_calls.append(prompt)
            done = super().generate(prompt, params, seed)
            text = " ".join(w for w in done.text.rstrip(".").split() if w.lower() != "river").capitalize() + "."
            return Completion(text, "stop", done.prompt_tokens, done.completion_tokens, done.latency_s)
        return super().generate(prompt, params, seed)


class FakeOpenAIServer:
    """A deterministic OpenAI-compatible chat server on loopback (stdlib ``http.server`` in a thread) that
    misbehaves on demand: for fault tests of the ``openai`` engine (the real-server test is
    tests/integration/test_openai_server.py).

    ``POST /v1/chat/completions`` answers FakeEngine's text for (last message, ``seed``) with ``usage``;
    ``GET /v1/models`` lists ``model``. Faults, one per request: :meth:`fail_next` queues ``n`` of a kind for
    the next requests, :meth:`fail_always` sets one for every request until :meth:`heal`. Kinds:

    - ``"500"``: HTTP 500 with an OpenAI-shaped error body;
    - ``"not_json"``: HTTP 200 with an HTML body; ``"empty"``: HTTP 200 with no body;
    - ``"no_choices"``: HTTP 200 with a JSON object without ``choices``;
    - ``"hang"``: reads the request and never replies (the client's timeout fires), until heal() or stop();
    - ``"drop"``: closes the connection without a reply.

    :meth:`stop` closes the listening socket (connection refused from then on); :meth:`start` again
    listens on the same port. ``requests`` counts every POST, ``faults`` the faults answered by kind,
    ``served`` the correct answers. ``delay_s``: sleep before each correct answer (a slow engine)."""

    KINDS = ("500", "not_json", "empty", "no_choices", "hang", "drop")

    def __init__(self, port: int = 0, words: int = 80, model: str = "fake-model", delay_s: float = 0.0):
        import collections
        import threading

        self.port, self.words, self.model, self.delay_s = port, words, model, delay_s
        self.requests = self.served = 0
        self.faults: collections.Counter[str] = collections.Counter()
        self._queue: list[str] = []
        self._always: str | None = None
        self._lock = threading.Lock()
        self._release = threading.Event()  # set: hanging requests end (without a reply)
        self._httpd = None
        self._thread = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def fail_next(self, n: int, kind: str) -> None:
        assert kind in self.KINDS, kind
        with self._lock:
            self._queue.extend([kind] * n)
            self._release.clear()

    def fail_always(self, kind: str) -> None:
        assert kind in self.KINDS, kind
        with self._lock:
            self._always = kind
            self._release.clear()

    def heal(self) -> None:
        with self._lock:
            self._queue.clear()
            self._always = None
        self._release.set()

    def _next_fault(self) -> str | None:
        with self._lock:
            self.requests += 1
            kind = self._queue.pop(0) if self._queue else self._always
            if kind:
                self.faults[kind] += 1
            return kind

    def completion(self, prompt: str, seed: int) -> dict:
        done = FakeEngine(words=self.words).generate(prompt, SamplingParams(0, 0.0, 1.0), int(seed))
        return {"id": f"fake-{hashlib.sha256(f'{prompt}|{seed}'.encode()).hexdigest()[:12]}", "object": "chat.completion",
                "model": self.model, "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                                                  "finish_reason": done.finish_reason}],
                "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                          "total_tokens": done.prompt_tokens + done.completion_tokens}}

    def start(self) -> "FakeOpenAIServer":
        import http.server
        import json
        import threading
        import time

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [{"id": server.model, "object": "model"}]}).encode())
                else:
                    self._send(404, b'{"error": {"message": "not found"}}')

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": {"message": "not found"}}')
                    return
                kind = server._next_fault()
                if kind == "hang":
                    server._release.wait()
                    self.close_connection = True
                    return
                if kind == "drop":
                    self.close_connection = True
                    return
                if kind == "500":
                    self._send(500, b'{"error": {"message": "fake server overloaded", "type": "server_error"}}')
                elif kind == "not_json":
                    self._send(200, b"<html><body>502 Bad Gateway</body></html>", "text/html")
                elif kind == "empty":
                    self._send(200, b"")
                elif kind == "no_choices":
                    self._send(200, b'{"id": "x", "object": "chat.completion", "model": "fake-model"}')
                else:
                    req = json.loads(body)
                    if server.delay_s:
                        time.sleep(server.delay_s)
                    out = server.completion(req["messages"][-1]["content"], req.get("seed") or 0)
                    with server._lock:
                        server.served += 1
                    self._send(200, json.dumps(out).encode())

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # socketserver's 5 overflows with many requests in flight: SYNs dropped

        self._release.clear()
        self._httpd = Server(("127.0.0.1", self.port), Handler)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening (connection refused from now on); requests left hanging end without a reply."""
        self._release.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=10)
            self._httpd = self._thread = None

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

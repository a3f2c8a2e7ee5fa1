"""Engine for any OpenAI-compatible server (vLLM serve, TGI, llama.cpp's ``llama_cpp.server``, hosted APIs):
``POST {base_url}/chat/completions`` with httpx, many requests in flight at once.

Configuration (``generation`` section of the spec; see ``OpenAISpec``)::

    generation:
      engine: openai
      model: Qwen/Qwen2.5-7B-Instruct        # the *served* model name
      openai:
        base_url: http://vllm:8000/v1        # or conn_id, or $OPENAI_BASE_URL
        conn_id: llm_server                  # Airflow connection: host (+ schema/port) -> URL, password -> key
        api_key_env: OPENAI_API_KEY          # environment variable holding the key
        concurrency: 8                       # requests in flight
        timeout_s: 120                       # per HTTP attempt
        max_retries: 5                       # retries after the first attempt (429, 5xx, connection errors, timeouts)

Resolution, first match wins:

- base URL: ``openai.base_url``; else the Airflow connection ``openai.conn_id``; else ``$OPENAI_BASE_URL``.
  A URL with no path gets ``/v1`` appended (``http://vllm:8000`` -> ``http://vllm:8000/v1``).
- key: the environment variable named by ``openai.api_key_env`` (default ``OPENAI_API_KEY``); else the
  connection's password; else no key (fine for local servers). The key is sent as ``Authorization: Bearer``
  and never logged, put in an error message or shown in ``repr``.

From an Airflow connection: if ``host`` carries a scheme (``https://api.example.com/v1``) it is used as is
(port and schema are added only when the host has none); else the URL is
``{scheme}://{host}[:{port}][/{schema}]`` where the scheme is ``schema`` when that is ``http``/``https``
(HttpHook's convention; then it is not a path), else the connection type when that is ``http``/``https``,
else ``http``. The Airflow connection is read only when the base URL or the key is still missing, so a
pod that has both in its spec/environment never needs Airflow.

Sampling: ``max_tokens``, ``temperature``, ``top_p`` and the request's ``seed`` are always sent. When
``repeat_penalty`` is not 1.0 it is sent twice, as ``repeat_penalty`` (llama.cpp's server) and
``repetition_penalty`` (vLLM's extra sampling parameter); servers ignore the name they do not know
(llama.cpp's and vLLM's do). Strict hosted APIs reject unknown parameters with HTTP 400: set
``generation.repeat_penalty: 1.0`` for those. ``repeat_penalty`` is not mapped to ``frequency_penalty``:
the two penalise differently.

Latency (``Completion.latency_s``) is per request, from its first attempt to its reply, retries included
(time spent waiting for a concurrency slot is not).

Failures: 429, 5xx, connection errors, dropped connections and timeouts are retried with exponential
backoff and jitter (``Retry-After`` honoured); other 4xx are not. A request that still fails becomes an
``OpenAIRequestError`` (an ``EngineError`` with ``status``, ``attempts`` and ``reason``) in its slot of
``generate_batch``'s result; ``generate`` raises it. Note llama.cpp's server answers some malformed
requests with 500, so those are retried too before failing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime as dt
import email.utils
import json
import logging
import os
import random
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import httpx

from .base import Completion, Engine, EngineError, Request, SamplingParams

log = logging.getLogger(__name__)


def retryable_status(status: int) -> bool:
    """429 (rate limited) and 5xx (overloaded, restarting, crashed) are worth another attempt; other 4xx are not."""
    return status == 429 or status >= 500

# Transport failures worth another attempt: the server is down, restarting, dropped the connection or is slow.
# (Not UnsupportedProtocol / LocalProtocolError / InvalidURL: those are configuration errors.)
RETRY_EXC = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


class OpenAIRequestError(EngineError):
    """One request failed for good. ``status`` is the last HTTP status (None: no HTTP reply), ``attempts``
    how many were made, ``reason`` a short description (never the key)."""

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1, reason: str = "",
                 transient: bool = False):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
        self.reason = reason
        self.transient = transient  # no reply, a retryable status or a malformed reply: the server's fault


class _Secret:
    """Holds the key so that it never shows up in repr(), vars() dumps or tracebacks' locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def redact_url(url: str) -> str:
    """The URL without user info, query or fragment (where credentials hide)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def normalize_base_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.scheme or not parts.netloc:
        raise EngineError(f"generation.openai.base_url: expected an http(s) URL such as http://vllm:8000/v1, got {redact_url(url)!r}")
    if parts.scheme not in ("http", "https"):
        raise EngineError(f"generation.openai.base_url: expected scheme http or https, got {parts.scheme!r}")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit(parts._replace(path=path))


def url_from_connection(conn: Any) -> str | None:
    """Base URL from an Airflow connection's host/schema/port/conn_type (see the module docstring)."""
    host = (getattr(conn, "host", None) or "").strip()
    if not host:
        return None
    schema = (getattr(conn, "schema", None) or "").strip().strip("/")
    port = getattr(conn, "port", None)
    conn_type = (getattr(conn, "conn_type", None) or "").lower()
    if "://" in host:
        parts = urlsplit(host)
        netloc = parts.netloc
        if port and parts.port is None:
            netloc = f"{netloc}:{port}"
        path = parts.path.rstrip("/")
        if schema and schema not in ("http", "https") and not path:
            path = f"/{schema}"
        return urlunsplit((parts.scheme, netloc, path, "", ""))
    if schema in ("http", "https"):
        scheme, path = schema, ""
    else:
        scheme = conn_type if conn_type in ("http", "https") else "http"
        path = f"/{schema}" if schema else ""
    netloc = f"{host}:{port}" if port else host
    return f"{scheme}://{netloc}{path}"


def _airflow_connection(conn_id: str) -> Any:
    """The Airflow connection, errors as EngineError naming the spec field; never its contents."""
    from ..airflow_adapter import ConnectionError_, get_connection

    try:
        return get_connection(conn_id)
    except ConnectionError_ as exc:
        raise EngineError(f"generation.openai.conn_id: {exc}") from None


def resolve_endpoint(
    ocfg: dict[str, Any], *, get_connection: Callable[[str], Any] = _airflow_connection, environ: dict[str, str] | None = None
) -> tuple[str, str | None]:
    """(base_url, key or None) from the ``generation.openai`` section, the Airflow connection and the environment."""
    env = os.environ if environ is None else environ
    base_url = ocfg.get("base_url") or None
    key_env = ocfg.get("api_key_env") or "OPENAI_API_KEY"
    key = env.get(key_env) or None
    conn_id = ocfg.get("conn_id")
    if conn_id and (base_url is None or key is None):
        conn = get_connection(conn_id)
        if base_url is None:
            base_url = url_from_connection(conn)
        if key is None:
            key = getattr(conn, "password", None) or None
    if base_url is None:
        base_url = env.get("OPENAI_BASE_URL") or None
    if base_url is None:
        raise EngineError(
            "generation.openai: expected a server URL: set generation.openai.base_url, generation.openai.conn_id "
            "(an Airflow connection whose host is the URL) or the environment variable OPENAI_BASE_URL"
        )
    return normalize_base_url(base_url), key


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - dt.datetime.now(dt.timezone.utc)).total_seconds())


def _short_reason(resp: httpx.Response, limit: int = 200) -> str:
    """The server's error message (OpenAI shape ``{"error": {"message": ...}}``, FastAPI ``detail``) or body text."""
    text = resp.text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    msg: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        msg = msg or body.get("detail") or body.get("message")
    msg = str(msg) if msg else (text.strip() or resp.reason_phrase or "no body")
    msg = " ".join(msg.split())
    return msg[:limit] + ("..." if len(msg) > limit else "")


def _run(coro: Any) -> Any:
    """asyncio.run, also from a thread that already runs an event loop (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


class OpenAIEngine(Engine):
    name = "openai"

    def __init__(
        self,
        model: str,
        base_url: str,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 5,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        retry_after_max_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        if concurrency < 1:
            raise EngineError(f"generation.openai.concurrency: expected >= 1, got {concurrency}")
        self.model = model
        self.base_url = normalize_base_url(base_url)
        parts = urlsplit(self.base_url)  # a query (e.g. api-version=...) stays after the path
        self._url = urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/chat/completions"))
        self._display_url = redact_url(self._url)
        self._key = _Secret(api_key) if api_key else None
        self.concurrency = int(concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_base_s = float(backoff_base_s)
        self.backoff_max_s = float(backoff_max_s)
        self.retry_after_max_s = float(retry_after_max_s)
        self._transport = transport  # injected (tests): owned by the caller, never closed here
        # generation.generate_shard sends this many prompts per generate_batch call: twice the concurrency so
        # a finished slot picks up the next prompt instead of waiting for the slowest one of the batch.
        self.preferred_batch = 2 * self.concurrency

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> OpenAIEngine:
        """From the spec's ``generation`` section as a dict (``model`` and ``openai``)."""
        ocfg = dict(cfg.get("openai") or {})
        model = cfg.get("model")
        if not model:
            raise EngineError("generation.model: expected the served model name for engine 'openai'")
        base_url, key = resolve_endpoint(ocfg)
        return cls(
            model=str(model),
            base_url=base_url,
            api_key=key,
            concurrency=int(ocfg.get("concurrency", 8)),
            timeout_s=float(ocfg.get("timeout_s", 120.0)),
            max_retries=int(ocfg.get("max_retries", 5)),
        )

    def __repr__(self) -> str:
        return (f"OpenAIEngine(model={self.model!r}, base_url={redact_url(self.base_url)!r}, "
                f"key={'set' if self._key else 'none'}, concurrency={self.concurrency})")

    # -- the Engine interface ---------------------------------------------------------------------------------

    def generate(self, prompt: str, params: SamplingParams, seed: int) -> Completion:
        result = self.generate_batch([Request(prompt, seed)], params)[0]
        if isinstance(result, EngineError):
            raise result
        return result

    def generate_batch(self, requests: Sequence[Request], params: SamplingParams) -> list[Completion | EngineError]:
        if not requests:
            return []
        return _run(self._batch(list(requests), params))

    def model_info(self) -> dict[str, Any]:
        return {
            "engine": self.name,
            "model": self.model,
            "model_file": None,
            "model_sha256": None,
            "base_url": redact_url(self.base_url),
        }

    def close(self) -> None:
        """Nothing held between batches: each generate_batch opens and closes its own client."""

    # -- internals --------------------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key is not None:
            headers["Authorization"] = f"Bearer {self._key.reveal()}"
        return headers

    def _scrub(self, text: str) -> str:
        if self._key is not None and self._key.reveal() in text:
            text = text.replace(self._key.reveal(), "***")
        return text

    def _payload(self, req: Request, params: SamplingParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": req.prompt}],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "seed": req.seed,
        }
        if params.repeat_penalty != 1.0:
            body["repeat_penalty"] = params.repeat_penalty  # llama.cpp server
            body["repetition_penalty"] = params.repeat_penalty  # vLLM extra sampling parameter
        return body

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        delay = min(self.backoff_max_s, self.backoff_base_s * (2 ** retry))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _batch(self, requests: list[Request], params: SamplingParams) -> list[Completion | EngineError]:
        sem = asyncio.Semaphore(self.concurrency)
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 10.0))
        kwargs: dict[str, Any] = {"timeout": timeout, "headers": self._headers()}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        else:
            kwargs["limits"] = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        client = httpx.AsyncClient(**kwargs)
        try:
            async def one(i: int, req: Request) -> Completion | EngineError:
                async with sem:
                    try:
                        return await self._one(client, i, req, params)
                    except EngineError as exc:
                        return exc
                    except Exception as exc:  # noqa: BLE001 - one bad row never sinks the batch
                        return OpenAIRequestError(
                            f"openai: unexpected {type(exc).__name__} calling {self._display_url}",
                            reason=type(exc).__name__,
                        )

            return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))
        finally:
            if self._transport is None:
                await client.aclose()

    async def _one(self, client: httpx.AsyncClient, i: int, req: Request, params: SamplingParams) -> Completion:
        payload = self._payload(req, params)
        started = time.perf_counter()
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            status: int | None = None
            wait: float | None = None
            try:
                resp = await client.post(self._url, json=payload)
            except RETRY_EXC as exc:
                detail = self._scrub(str(exc))[:120] or (
                    f"no reply within {self.timeout_s:g} s" if isinstance(exc, httpx.TimeoutException) else "no detail")
                reason = f"{type(exc).__name__}: {detail}"
            except httpx.HTTPError as exc:  # not worth retrying (bad URL, protocol misuse)
                raise OpenAIRequestError(
                    f"openai: {type(exc).__name__} calling {self._display_url}",
                    attempts=attempt + 1, reason=type(exc).__name__,
                ) from None
            else:
                status = resp.status_code
                if status < 300:
                    try:
                        return self._parse(resp, time.perf_counter() - started)
                    except OpenAIRequestError as exc:  # a garbled 200: asked again, like a 5xx
                        reason = exc.reason
                else:
                    reason = self._scrub(_short_reason(resp))
                if status >= 300 and not retryable_status(status):
                    raise OpenAIRequestError(
                        f"openai: HTTP {status} from {self._display_url}: {reason}",
                        status=status, attempts=attempt + 1, reason=reason,
                    )
                wait = _retry_after(resp.headers) if status >= 300 else None
            if attempt + 1 >= attempts:
                what = (f"HTTP {status}" if status is not None and status >= 300
                        else "a malformed reply" if status is not None else "no reply")
                raise OpenAIRequestError(
                    f"openai: {what} from {self._display_url} after {attempts} attempts: {reason}",
                    status=status, attempts=attempts, reason=reason, transient=True,
                )
            delay = min(wait, self.retry_after_max_s) if wait is not None else self._backoff(attempt)
            log.warning("openai: batch item %d: %s from %s; retry %d/%d in %.2fs", i,
                        f"HTTP {status}" if status is not None else reason, self._display_url,
                        attempt + 1, self.max_retries, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    def _parse(self, resp: httpx.Response, latency: float) -> Completion:
        def bad(what: str) -> OpenAIRequestError:
            return OpenAIRequestError(
                f"openai: malformed reply from {self._display_url}: {what}",
                status=resp.status_code, reason=f"malformed reply: {what}",
            )

        try:
            body = resp.json()
        except ValueError:
            raise bad("body is not JSON") from None
        if not isinstance(body, dict):
            raise bad("body is not a JSON object")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise bad("missing 'choices'")
        choice = choices[0]
        message = choice.get("message")
        if not isinstance(message, dict):
            raise bad("missing 'choices[0].message'")
        usage = body.get("usage")
        if not isinstance(usage, dict):
            raise bad("missing 'usage'")
        try:
            prompt_tokens = int(usage["prompt_tokens"])
            completion_tokens = int(usage["completion_tokens"])
        except (KeyError, TypeError, ValueError):
            raise bad("missing 'usage.prompt_tokens' or 'usage.completion_tokens'") from None
        return Completion(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=latency,
        )

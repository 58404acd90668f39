"""A local OpenAI-compatible provider for tests and benchmarks.

LLM actors are judged by how they behave under a provider's limits: 429s with
``Retry-After``, slow answers, 5xx bursts. :class:`FakeLLMProvider` serves
``POST /v1/chat/completions`` on 127.0.0.1 over real HTTP (any OpenAI-compatible client,
litellm included, talks to it), allows ``rate`` requests per second with a token bucket
(beyond that: 429 with ``Retry-After`` and ``retry-after-ms``), answers after ``latency``
seconds, and lets a test script the answer and inject failures::

    with FakeLLMProvider(rate=20, responder=lambda req: '{"score": 0.9}') as llm:
        litellm.completion(model="openai/fake", api_base=llm.base_url, api_key="x",
                           messages=[...], num_retries=0)
        assert llm.stats.ok == 1

Each answer reports its usage as a model would, estimated at four characters a token
(the prompt's messages and the answer), so that token and cost budgets read from it
move as they would with a real model. ``record=False`` keeps no request (a provider that
serves a mesh offline for hours, see ``actors/llm``).

Standard library only, so the benchmark and the tests need nothing more.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLMProvider", "ProviderStats"]

Responder = Callable[[dict[str, Any]], str]


@dataclass
class ProviderStats:
    requests: int = 0
    ok: int = 0
    rate_limited: int = 0
    failed: int = 0

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


class _Bucket:
    """Token bucket: ``rate`` tokens a second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens, self.stamp = burst, clock()

    def take(self) -> float:
        """0.0 when a token was taken, else seconds until one is available."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _tokens(text: str) -> int:
    return max(1, (len(text) + 3) // 4)


def _usage(request: dict[str, Any], content: str) -> dict[str, int]:
    """Token counts as a provider reports them, at about four characters a token."""
    asked = "".join(m["content"] if isinstance(m.get("content"), str)
                    else json.dumps(m.get("content")) for m in request.get("messages", []))
    prompt, completion = _tokens(asked), _tokens(content)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _default_responder(request: dict[str, Any]) -> str:
    return json.dumps({"score": 0.9, "verdict": "accept", "reasons": ["looks good"],
                       "defects": []})


class FakeLLMProvider:
    def __init__(
        self,
        *,
        rate: float | None = None,
        burst: float | None = None,
        latency: float = 0.0,
        responder: Responder = _default_responder,
        model: str = "fake-model",
        clock: Callable[[], float] = time.monotonic,
        record: bool = True,
    ) -> None:
        self.rate = rate
        self.record = record
        self.latency = latency
        self.responder = responder
        self.model = model
        self.stats = ProviderStats()
        self.requests: list[dict[str, Any]] = []
        self._bucket = _Bucket(rate, burst or max(rate, 1.0), clock) if rate else None
        self._lock = threading.Lock()
        self._failures: list[int] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fake-llm")

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def fail_next(self, count: int, *, status: int = 500) -> None:
        """The next ``count`` requests answer ``status`` (e.g. 500, 503)."""
        with self._lock:
            self._failures.extend([status] * count)

    def start(self) -> FakeLLMProvider:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeLLMProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving ----------------------------------------------------------------------

    def _admit(self) -> tuple[int, float]:
        """(status, retry_after) for the next request."""
        with self._lock:
            self.stats.requests += 1
            if self._failures:
                self.stats.failed += 1
                return self._failures.pop(0), 0.0
            wait = self._bucket.take() if self._bucket else 0.0
            if wait > 0:
                self.stats.rate_limited += 1
                return 429, wait
            self.stats.ok += 1
            return 200, 0.0

    def _completion(self, request: dict[str, Any]) -> dict[str, Any]:
        content = self.responder(request)
        return {
            "id": f"chatcmpl-{self.stats.requests}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", self.model),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": _usage(request, content),
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: with Nagle's algorithm on, the
            # body waits for the client's delayed ACK of the headers (40 ms), and a
            # 429 that a provider answers at once would arrive late.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _reply(self, status: int, body: dict[str, Any],
                       headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                except json.JSONDecodeError:
                    self._reply(400, {"error": {"message": "invalid JSON"}})
                    return
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    self._reply(404, {"error": {"message": f"no route {self.path}"}})
                    return
                status, wait = provider._admit()
                if status == 429:
                    self._reply(429, {"error": {"message": "rate limit exceeded",
                                                "type": "rate_limit_error"}},
                                {"Retry-After": str(max(1, math.ceil(wait))),
                                 "retry-after-ms": str(max(1, round(wait * 1000)))})
                    return
                if status != 200:
                    self._reply(status, {"error": {"message": f"injected {status}"}})
                    return
                if provider.record:
                    with provider._lock:
                        provider.requests.append(request)
                if provider.latency:
                    time.sleep(provider.latency)
                self._reply(200, provider._completion(request))

        return Handler

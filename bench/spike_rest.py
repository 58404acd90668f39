"""The 'before' design of bench/bench_spike.py: each step an HTTP service, and a caller
that chains them synchronously.

**Services.** ``fast_app``, ``llm_app`` and ``gpu_app`` are FastAPI apps, each served by
W uvicorn processes (workers), calling the very functions the mesh's actors run
(bench/meshes/spike/spike_steps.py). A gpu worker runs one job at a time (its one
"GPU"); the others wait in that worker. The caller balances every call over a step's
workers by least outstanding requests (as Envoy's ``least_request``), the kindest
balancing for the chain: ``uvicorn --workers`` on one shared socket left one gpu worker
with every job and the other idle, which says more about accept() than about REST. The
llm service
passes the provider's 429 back with its ``Retry-After``, as a thin service in front of an
LLM does. Every worker counts what it holds, ``waiting`` (arrived, not yet running: for
a thread, or for the card) and ``running``, and writes it to
``$SPIKE_STATS_DIR/<step>-<pid>.json`` four times a second; :func:`service_stats` sums
the fresh files.

**Caller.** What a synchronous pipeline's client does (:class:`Caller`): ``threads``
threads take jobs from an inbox in arrival order and call fast, llm and gpu in turn,
each call with an HTTP timeout and retries with exponential backoff slept in the
thread (tenacity's ``wait_exponential`` plus jitter) on 429, 5xx, timeouts and refused
connections. A job whose attempts run out is dropped: nothing else remembers it. The
load is open loop: jobs enter the inbox at their arrival time, whatever the caller is
doing, the way messages pile up in front of a consumer.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "meshes" / "spike"))

import spike_steps

STEPS = ("fast", "llm", "gpu")
_STATS_EVERY = 0.25
_STATS_FRESH = 2.0

# -- the services ---------------------------------------------------------------------


class _Counts:
    """What one worker process holds, written to its stats file."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.lock = threading.Lock()
        self.waiting = self.running = self.served = 0

    def move(self, waiting: int = 0, running: int = 0, served: int = 0) -> None:
        with self.lock:
            self.waiting += waiting
            self.running += running
            self.served += served

    def start_writing(self) -> None:
        folder = Path(os.environ["SPIKE_STATS_DIR"])
        threading.Thread(target=self._write_loop, args=(folder,), daemon=True).start()

    def _write_loop(self, folder: Path) -> None:
        target = folder / f"{self.step}-{os.getpid()}.json"
        tmp = folder / f".{self.step}-{os.getpid()}.tmp"
        while True:
            with self.lock:
                row = {"waiting": self.waiting, "running": self.running,
                       "served": self.served, "at": time.time()}
            tmp.write_text(json.dumps(row))
            tmp.replace(target)
            time.sleep(_STATS_EVERY)


def _run(step: str, fn: Callable[[dict[str, Any]], dict[str, Any]],
         payload: dict[str, Any], counts: _Counts) -> dict[str, Any]:
    """On a worker thread: wait for the card (gpu), then run the step."""
    card = spike_steps.GPU if step == "gpu" else contextlib.nullcontext()
    with card:
        counts.move(waiting=-1, running=1)
        try:
            return fn(payload)
        finally:
            counts.move(running=-1, served=1)


def _app(step: str, build: Callable[[], Callable[[dict[str, Any]], dict[str, Any]]]) -> Any:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    counts = _Counts(step)
    built: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        built["fn"] = build()  # the llm worker imports litellm here, before serving
        counts.start_writing()
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    @app.post(f"/{step}")
    async def serve(payload: dict[str, Any]) -> Any:
        counts.move(waiting=1)
        try:
            return await run_in_threadpool(_run, step, built["fn"], payload, counts)
        except Exception as exc:
            return _error_response(exc, JSONResponse)

    return app


def _error_response(exc: Exception, response: Any) -> Any:
    """429 with the provider's Retry-After for a rate limit, 502 for anything else."""
    status = getattr(exc, "status_code", None)
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    if status == 429:
        passed = {k: headers[k] for k in ("retry-after", "retry-after-ms") if k in headers}
        return response({"error": "rate limited upstream"}, status_code=429, headers=passed)
    return response({"error": f"{type(exc).__name__}: {exc}"}, status_code=502)


fast_app = _app("fast", lambda: spike_steps.fast)
llm_app = _app("llm", lambda: spike_steps.LLM().llm)
gpu_app = _app("gpu", lambda: spike_steps.gpu)


def service_stats(folder: Path, step: str, *, now: float) -> dict[str, int]:
    """Summed over the step's live workers: ``waiting``, ``running``, ``busy`` (workers
    running something) and ``workers``."""
    rows = []
    for file in folder.glob(f"{step}-*.json"):
        with contextlib.suppress(OSError, ValueError):
            row = json.loads(file.read_text())
            if now - row["at"] < _STATS_FRESH:
                rows.append(row)
    return {"waiting": sum(r["waiting"] for r in rows),
            "running": sum(r["running"] for r in rows),
            "busy": sum(1 for r in rows if r["running"]), "workers": len(rows)}


# -- the caller -------------------------------------------------------------------------


def backoff(attempt: int) -> float:
    """tenacity's wait_exponential(multiplier=1, max=60) + wait_random(0, 1)."""
    return min(60.0, 2.0 ** (attempt - 1)) + random.uniform(0, 1)


@dataclass
class Ended:
    status: str  # succeeded | failed
    at: float
    why: str = ""


@dataclass
class Caller:
    """``threads`` synchronous chains over the workers at ``urls`` (step -> base URLs)."""

    urls: dict[str, list[str]]
    threads: int
    timeout: float = 30.0
    attempts: int = 6
    inbox: queue.Queue[str] = field(default_factory=queue.Queue)
    ended: dict[str, Ended] = field(default_factory=dict)
    calling: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEPS, 0))
    sleeping: int = 0  # threads asleep in backoff
    failed_calls: int = 0
    timeouts: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _outstanding: dict[str, int] = field(default_factory=dict)

    def start(self) -> None:
        for n in range(self.threads):
            threading.Thread(target=self._work, daemon=True, name=f"caller-{n}").start()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"inbox": self.inbox.qsize(), "calling": dict(self.calling),
                    "sleeping": self.sleeping, "failed_calls": self.failed_calls,
                    "timeouts": self.timeouts}

    def _work(self) -> None:
        import httpx

        with httpx.Client(timeout=self.timeout) as client:
            while not self.stop.is_set():
                try:
                    job = self.inbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                self._chain(client, job)

    def _chain(self, client: Any, job: str) -> None:
        payload: dict[str, Any] | None = {"job": job}
        for step in STEPS:
            payload, why = self._call(client, step, payload or {})
            if payload is None:
                if not self.stop.is_set():
                    self.ended[job] = Ended("failed", time.time(), f"{step}: {why}")
                return
        self.ended[job] = Ended("succeeded", time.time())

    def _call(self, client: Any, step: str, payload: dict[str, Any]
              ) -> tuple[dict[str, Any] | None, str]:
        import httpx

        why = ""
        for attempt in range(1, self.attempts + 1):
            url = self._pick(step)
            try:
                reply = client.post(f"{url}/{step}", json=payload)
                if reply.status_code == 200:
                    return reply.json(), ""
                why = f"HTTP {reply.status_code}"
                if reply.status_code != 429 and reply.status_code < 500:
                    return None, why
            except httpx.TimeoutException:
                why = "timeout"
                with self._lock:
                    self.timeouts += 1
            except httpx.TransportError as exc:
                why = type(exc).__name__
            finally:
                self._done(step, url)
            with self._lock:
                self.failed_calls += 1
            if attempt == self.attempts or self._sleep(backoff(attempt)):
                break
        return None, why

    def _pick(self, step: str) -> str:
        """The step's worker with the fewest calls outstanding (least_request)."""
        with self._lock:
            url = min(self.urls[step], key=lambda u: self._outstanding.get(u, 0))
            self._outstanding[url] = self._outstanding.get(url, 0) + 1
            self.calling[step] += 1
            return url

    def _done(self, step: str, url: str) -> None:
        with self._lock:
            self._outstanding[url] -= 1
            self.calling[step] -= 1

    def _sleep(self, seconds: float) -> bool:
        """Back off in this thread; True when the run is being stopped meanwhile."""
        with self._lock:
            self.sleeping += 1
        try:
            return self.stop.wait(seconds)
        finally:
            with self._lock:
                self.sleeping -= 1

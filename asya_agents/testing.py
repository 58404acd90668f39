"""Run a mesh, or one handler, inside a test: no broker, the same runtime code.

``LocalMesh`` starts every actor of a mesh folder (one runtime each, plus the crew) on
the embedded transport in a temporary state folder, on a background event loop, so that
plain synchronous pytest tests can send envelopes, wait for them and assert on results,
errors and routes::

    from asya_agents.testing import LocalMesh

    def test_pipeline(tmp_path):
        with LocalMesh("mesh/example", state_dir=tmp_path) as mesh:
            env_id = mesh.send({"text": "hello"})
            mesh.join()
            record = mesh.result(env_id)
            assert record.status == "succeeded"

``call_handler`` calls one handler path once, the way a replica would.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope
from asya_agents.handlers import Result, load_handler
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.replica import add_python_paths, build_runtime
from asya_agents.settings import Settings, StoreSettings
from asya_agents.stores import ResultRecord, SQLiteResultStore
from asya_agents.transports import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport

__all__ = ["LocalMesh", "call_handler"]

T = TypeVar("T")


def call_handler(path: str, arg: Any, *, config: dict[str, Any] | None = None,
                 python_path: list[str | Path] | None = None) -> Result:
    """Load ``path`` (with ``config`` for a class) and call it once with ``arg``."""
    import sys

    for p in python_path or []:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    handler = load_handler(path, config=config)
    try:
        return asyncio.run(handler.call(arg))
    finally:
        handler.close()


class LocalMesh:
    """A whole mesh in this process, on the embedded transport."""

    def __init__(
        self,
        mesh: str | Path | LoadedMesh,
        *,
        state_dir: str | Path | None = None,
        replicas: int = 1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loaded = mesh if isinstance(mesh, LoadedMesh) else load_mesh(mesh)
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="asya-")
        self.state_dir = Path(state_dir or self._tmp.name)  # type: ignore[union-attr]
        self.replicas = replicas
        self.clock = clock
        self.store = SQLiteResultStore(self.state_dir / "results.db")
        # The loop and its thread exist only between start() and stop(), so that a
        # LocalMesh that never started, or failed to, leaves nothing open behind it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None
        self._runs: list[asyncio.Future[None]] = []
        self._sent: list[str] = []
        self.transport = EmbeddedTransport(self.state_dir / "queues.db", clock=clock,
                                           poll_interval=0.005)

    # -- lifecycle ------------------------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("the LocalMesh is not running: use it in a `with` block")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> LocalMesh:
        add_python_paths(self.loaded)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="asya-local-mesh")
        self._thread.start()
        settings = Settings(store=StoreSettings(url=None))

        async def boot() -> None:
            self._stop = asyncio.Event()
            await self.transport.ensure_queues(sorted(self.loaded.actor_names))
            for name in [*self.loaded.actors, HAPPY_END, ERROR_END]:
                for _ in range(self.replicas):
                    runtime = build_runtime(self.loaded, name, self.transport,
                                            settings=settings, state_dir=self.state_dir)
                    runtime.cfg.clock = self.clock
                    runtime.cfg.receive_wait = 0.05
                    self._runs.append(asyncio.ensure_future(runtime.run(self._stop)))

        try:
            self._submit(boot())
        except BaseException:
            self.stop()  # e.g. a handler that fails at startup: close what was opened
            raise
        return self

    def stop(self) -> None:
        async def halt() -> None:
            if self._stop is not None:
                self._stop.set()
            await asyncio.gather(*self._runs, return_exceptions=True)
            await self.transport.close()

        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            self._submit(halt())
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        if loop is not None and not loop.is_running():
            loop.close()
        self._loop = self._thread = None
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> LocalMesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- driving ------------------------------------------------------------------

    def send(self, payload: Any, *, route: list[str] | None = None, id: str | None = None,
             headers: dict[str, Any] | None = None) -> str:
        """Enqueue one envelope (default route: mesh.yaml's); return its id."""
        envelope = Envelope.create(payload, route or self.loaded.route, id=id, headers=headers,
                                   now=self.clock())
        return self.send_envelope(envelope)

    def send_envelope(self, envelope: Envelope) -> str:
        self.send_raw(envelope.route.curr, envelope.encode())
        self._sent.append(envelope.id)
        return envelope.id

    def send_raw(self, queue: str, body: bytes) -> None:
        """Put any bytes on a queue: for poison-message tests."""
        self._submit(self.transport.send([Outgoing(queue, body)]))

    def join(self, ids: list[str] | None = None, *, timeout: float = 30.0,
             settle: Callable[[], bool] | None = None) -> None:
        """Wait until every envelope sent (or ``ids``) has ended; TimeoutError if not."""
        wanted = list(ids if ids is not None else self._sent)
        deadline = time.monotonic() + timeout
        while True:
            left = [r for r, w in self.store.ended_weight(wanted).items() if w < 1 - 1e-9]
            if not left and (settle is None or settle()):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(left)} envelope(s) still running: {left[:5]}")
            time.sleep(0.01)

    # -- asserting ----------------------------------------------------------------

    def results(self, status: str | None = None) -> list[ResultRecord]:
        return self.store.results(status=status)

    def result(self, envelope_id: str) -> ResultRecord:
        record = self.store.get(envelope_id)
        if record is None:
            raise KeyError(f"envelope {envelope_id!r} has not ended")
        return record

    def children(self, root_id: str) -> list[ResultRecord]:
        """Every ended piece of ``root_id`` (itself, or its fan-out children)."""
        return [r for r in self.store.results() if r.root_id == root_id]

    def queue_stats(self, actor: str) -> Any:
        return self._submit(self.transport.stats(actor))

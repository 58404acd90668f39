"""Run a mesh, or one handler, inside a test: the same runtime code, on any transport.

``LocalMesh`` starts every actor of a mesh folder (one runtime each, plus the crew) on
a background event loop of this process, so that plain synchronous pytest tests can
send envelopes, wait for them and assert on results, errors and routes::

    from asya_agents.testing import LocalMesh

    def test_pipeline(tmp_path):
        with LocalMesh("mesh/example", state_dir=tmp_path) as mesh:
            env_id = mesh.send({"text": "hello"})
            mesh.join()
            record = mesh.result(env_id)
            assert record.status == "succeeded"

By default it runs on the embedded transport (no broker). ``transport="rabbitmq"`` or
``"sqs"`` runs the very same test on a real broker, reached through the ``ASYA_*``
settings (or ``settings=``): the mesh gets queues of its own, under a queue prefix unique
to this ``LocalMesh``, which are deleted when it stops. Results are recorded in SQLite
in the state folder either way. Time is injected: ``clock`` (a
:class:`~asya_agents.seams.Clock`, or a wall-clock function) drives hop timings,
retries, deadlines and the brakes, so tests move time instead of sleeping.

``call_handler`` calls one handler path once, the way a replica would. The whole API is
documented in ``docs/testing.md``.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asya_agents.context import MeshContext
from asya_agents.envelope import Envelope
from asya_agents.handlers import Result, load_handler
from asya_agents.loopthread import LoopThread
from asya_agents.manifest import LoadedMesh
from asya_agents.observe.events import EventWriter, HopEvents, hop_events
from asya_agents.replica import add_python_paths, build_runtime
from asya_agents.seams import Clock
from asya_agents.settings import Settings, StoreSettings
from asya_agents.storage import StoragePolicy
from asya_agents.stores import ResultRecord, SQLiteResultStore
from asya_agents.transports import Backend, Outgoing, QueueStats

__all__ = ["LocalMesh", "call_handler"]


def call_handler(path: str, arg: Any, *, config: dict[str, Any] | None = None,
                 python_path: list[str | Path] | None = None,
                 storage: StoragePolicy | None = None) -> Result:
    """Load ``path`` (with ``config`` for a class, and ``storage`` for a class that
    declares it) and call it once with ``arg``."""
    for p in python_path or []:
        if str(p) not in sys.path:
            sys.path.insert(0, str(p))
    handler = load_handler(path, config=config, storage=storage)
    try:
        return asyncio.run(handler.call(arg))
    finally:
        handler.close()


def _own_queues(settings: Settings, kind: str) -> Settings:
    """``settings`` with a queue prefix of this mesh's own on a shared broker."""
    prefix = f"asya-test-{uuid.uuid4().hex[:8]}"
    if kind == "rabbitmq":
        return settings.model_copy(update={
            "rabbitmq": settings.rabbitmq.model_copy(update={"queue_prefix": prefix})})
    if kind == "sqs":
        return settings.model_copy(update={
            "sqs": settings.sqs.model_copy(update={"queue_prefix": prefix})})
    return settings


class LocalMesh:
    """A whole mesh in this process, on the embedded transport or a real broker."""

    def __init__(
        self,
        mesh: str | Path | LoadedMesh,
        *,
        transport: str = "embedded",
        state_dir: str | Path | None = None,
        replicas: int = 1,
        clock: Clock | Callable[[], float] | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._tmp = None if state_dir else tempfile.TemporaryDirectory(prefix="asya-")
        folder = Path(state_dir or self._tmp.name)  # type: ignore[union-attr]
        given = settings or Settings()
        # Results in SQLite here (self.store reads them); fanIn groups where the settings
        # say (ASYA_STORE_GROUPS_URL), SQLite in the state folder by default.
        base = given.model_copy(update={"store": StoreSettings(
            url=None, groups_url=given.store.groups_url)})
        self.ctx = MeshContext.open(mesh, transport=transport, state_dir=folder,
                                    settings=_own_queues(base, transport))
        self.loaded = self.ctx.loaded
        self.state_dir = self.ctx.state_dir
        self.replicas = replicas
        self.clock = Clock.of(clock)
        self.store = SQLiteResultStore(self.state_dir / "results.db")
        self.transport: Backend = self._open_transport()
        # The loop and its thread exist only between start() and stop(), so that a
        # LocalMesh that never started, or failed to, leaves nothing open behind it.
        self._loop = LoopThread("asya-local-mesh")
        self._stop: asyncio.Event | None = None
        self._runs: list[asyncio.Future[None]] = []
        self._sent: list[str] = []
        self._events: EventWriter | None = None

    def _open_transport(self) -> Backend:
        if self.ctx.kind == "embedded":
            from asya_agents.transports.embedded import EmbeddedTransport

            return EmbeddedTransport(self.state_dir / "queues.db", clock=self.clock.time,
                                     poll_interval=0.005)
        return self.ctx.transport()

    # -- lifecycle ------------------------------------------------------------------

    def _submit(self, coro: Any) -> Any:
        if not self._loop.running:
            coro.close()
            raise RuntimeError("the LocalMesh is not running: use it in a `with` block")
        return self._loop.run(coro)

    def start(self) -> LocalMesh:
        """Declare the queues and start every actor's runtime (``replicas`` each)."""
        add_python_paths(self.loaded)
        self._loop.loop()
        try:
            self._submit(self._boot())
        except BaseException:
            self.stop()  # e.g. a handler that fails at startup: close what was opened
            raise
        return self

    async def _boot(self) -> None:
        self._stop = asyncio.Event()
        await self.transport.ensure_queues(sorted(self.loaded.actor_names))
        # Hop events for a gateway, as replicas write them, when the mesh has one.
        self._events = hop_events(self.loaded, self.ctx.settings, self.state_dir)
        for name in self.ctx.actors:
            for _ in range(self.replicas):
                runtime = build_runtime(self.loaded, name, self.transport,
                                        settings=self.ctx.settings, state_dir=self.state_dir,
                                        clock=self.clock)
                runtime.cfg.receive_wait = 0.05
                if self._events is not None:
                    runtime.cfg.observer = HopEvents.of(runtime, self._events)
                self._runs.append(asyncio.ensure_future(runtime.run(self._stop)))

    async def _halt(self) -> None:
        if self._stop is not None:
            self._stop.set()
        await asyncio.gather(*self._runs, return_exceptions=True)
        await self.transport.close()  # its consumers go first, then the queues
        if self.ctx.kind != "embedded":
            async with self.ctx.connected() as admin:
                await admin.delete_queues(sorted(self.loaded.actor_names))

    def stop(self) -> None:
        """Stop every runtime (letting in-flight work finish), delete a broker's queues
        of this mesh, and close everything."""
        if self._loop.running:
            self._submit(self._halt())
        self._loop.close()
        if self._events is not None:
            self._events.close()
        self.store.close()
        self.ctx.close()
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
                                   now=self.clock.time())
        return self.send_envelope(envelope)

    def send_envelope(self, envelope: Envelope) -> str:
        """Enqueue a ready-made envelope at its ``route.curr``; return its id."""
        self.send_raw(envelope.route.curr, envelope.encode())
        self._sent.append(envelope.id)
        return envelope.id

    def send_raw(self, queue: str, body: bytes) -> None:
        """Put any bytes on a queue: for poison-message tests."""
        self._submit(self.transport.send([Outgoing(queue, body)]))

    def join(self, ids: list[str] | None = None, *, timeout: float = 30.0,
             settle: Callable[[], bool] | None = None) -> None:
        """Wait until every envelope sent (or ``ids``) has ended, all its fan-out pieces
        included, and ``settle()`` (if given) is true; :class:`TimeoutError` if not
        within ``timeout`` seconds."""
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
        """Every ended record (``succeeded``, ``failed``, ``paused``), oldest first."""
        return self.store.results(status=status)

    def result(self, envelope_id: str) -> ResultRecord:
        """The ended record of ``envelope_id``; :class:`KeyError` while it runs."""
        record = self.store.get(envelope_id)
        if record is None:
            raise KeyError(f"envelope {envelope_id!r} has not ended")
        return record

    def children(self, root_id: str) -> list[ResultRecord]:
        """Every ended piece of ``root_id`` (itself, or its fan-out children)."""
        return [r for r in self.store.results() if r.root_id == root_id]

    def queue_stats(self, actor: str) -> QueueStats:
        """Ready, in-flight and delayed messages of ``actor``'s queue."""
        stats: QueueStats = self._submit(self.transport.stats(actor))
        return stats

    def status(self) -> dict[str, Any]:
        """The mesh's status snapshot, as ``asya status --json`` prints it."""
        from asya_agents import status

        groups = self.ctx.groups()
        report: dict[str, Any] = self._submit(status.snapshot(
            mesh=self.loaded.name, transport_kind=self.ctx.kind, actors=self.ctx.actors,
            transport=self.transport, store=self.store, supervisor={},
            state_dir=self.state_dir, now=self.clock.time, groups=groups))
        return report

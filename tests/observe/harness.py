"""A whole mesh in this event loop with the observers and tracer a test hands in.

Like ``asya_agents.testing.LocalMesh`` (same ``build_runtime``, same embedded
transport), but the runtimes' Observer seam, tracer and failure policy are the test's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.observe.spans import HopTracer
from asya_agents.replica import build_runtime
from asya_agents.seams import Decision, FailurePolicy, Observer
from asya_agents.settings import Settings, StoreSettings
from asya_agents.stores import SQLiteResultStore
from asya_agents.transports import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport

TRACED = Path(__file__).parent / "meshes" / "traced"


class RetryOnce:
    """A failure policy: retry the first failure at once, dead-letter the second."""

    def decide(self, envelope: Envelope, exc: BaseException, *, actor: str) -> Decision:
        if envelope.meta.attempt < 2:
            return Decision("retry", delay=0.0, reason="handler-error")
        return Decision("route", reason="handler-error")


@dataclass
class Event:
    kind: str
    actor: str
    envelope_id: str
    attempt: int
    headers: dict[str, Any]


@dataclass
class Recorder(Observer):
    """Keeps every event with a copy of the envelope's headers as they arrived."""

    events: list[Event] = field(default_factory=list)

    def received(self, actor: str, envelope: Envelope | None) -> None:
        if envelope is not None:
            self.events.append(Event("received", actor, envelope.id, envelope.meta.attempt,
                                     dict(envelope.headers)))


@dataclass
class Running:
    loaded: LoadedMesh
    transport: EmbeddedTransport
    store: SQLiteResultStore

    async def send(self, payload: Any, **kw: Any) -> Envelope:
        envelope = Envelope.create(payload, self.loaded.route, **kw)
        await self.transport.send([Outgoing(envelope.route.curr, envelope.encode())])
        return envelope

    async def join(self, ids: list[str], *, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while any(w < 1 - 1e-9 for w in self.store.ended_weight(ids).values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"envelopes {ids} did not end within {timeout}s")
            await asyncio.sleep(0.02)


@asynccontextmanager
async def running(state_dir: Path, *, observer: Observer, tracer: HopTracer | None = None,
                  failure: dict[str, FailurePolicy] | None = None,
                  mesh: Path = TRACED) -> AsyncIterator[Running]:
    loaded = load_mesh(mesh)
    transport = EmbeddedTransport(state_dir / "queues.db", poll_interval=0.005)
    store = SQLiteResultStore(state_dir / "results.db")
    await transport.ensure_queues(sorted(loaded.actor_names))
    settings = Settings(store=StoreSettings(url=None))
    stop = asyncio.Event()
    tasks = []
    for name in [*loaded.actors, HAPPY_END, ERROR_END]:
        runtime = build_runtime(loaded, name, transport, settings=settings,
                                state_dir=state_dir)
        runtime.cfg.observer = observer
        runtime.cfg.receive_wait = 0.05
        if tracer is not None:
            runtime.cfg.tracer = tracer
        if failure and name in failure:
            runtime.cfg.failure = failure[name]
        tasks.append(asyncio.ensure_future(runtime.run(stop)))
    try:
        yield Running(loaded, transport, store)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await transport.close()
        store.close()

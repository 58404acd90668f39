"""Hop events for the gateway: what each replica tells the event feed.

A client of the gateway watches its job hop by hop (Server-Sent Events, MCP progress,
A2A status updates). The replicas know each hop as it happens, so when the mesh has a
gateway (``mesh.yaml`` ``spec.gateway``, ``asya up --gateway`` or
``ASYA_GATEWAY_EVENTS``) each replica plugs :class:`HopEvents` into its Observer seam:
a handler actor reports ``hop``, ``retry`` or ``error``; ``happy-end``, ``error-end``
and a review actor report the piece's end (``succeeded``, ``failed``, ``paused``), after
their store has recorded it. A mesh without a gateway builds none of this and pays
nothing.

The rows go to the feed (:mod:`asya_agents.stores.events`) through an
:class:`EventWriter`: ``emit`` only queues the row, and a thread of the writer's own
appends every row queued meanwhile in one transaction (group commit), so a hop never
waits for a commit. Events are a view, not the record: a row lost with a killed replica
costs a stream one hop line, never its end, which the gateway also reads from the
result store.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope
from asya_agents.errors import StoreError
from asya_agents.manifest import LoadedMesh
from asya_agents.runtime import Runtime
from asya_agents.seams import Clock, Decision, Observer
from asya_agents.settings import Settings
from asya_agents.stores.events import EventStore, NewEvent, open_event_store

__all__ = ["EventWriter", "HopEvents", "events_wanted", "hop_events"]

log = logging.getLogger("asya.observe")
_ERROR_CHARS = 300


class EventWriter:
    """Appends events to ``store`` from a thread of its own, one transaction per group
    of events queued while the previous one was written."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._pending: list[NewEvent] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="asya-hop-events",
                                        daemon=True)
        self._thread.start()

    def emit(self, event: NewEvent) -> None:
        """Queue ``event``; returns at once."""
        with self._wake:
            self._pending.append(event)
            self._wake.notify()

    def _next_group(self) -> list[NewEvent] | None:
        with self._wake:
            while not self._pending and not self._closed:
                self._wake.wait()
            group, self._pending = self._pending, []
        return group or None

    def _run(self) -> None:
        while (group := self._next_group()) is not None:
            try:
                self.store.append(group)
            except StoreError as exc:  # a view, not the record: log and go on
                log.warning("%d hop event(s) not written: %s", len(group), exc)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued, stop the thread and close the store."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
        self.store.close()


class HopEvents(Observer):
    """The Observer of one replica: one event per hop, retry, failure or end."""

    def __init__(self, writer: EventWriter, *, ends: str | None = None,
                 clock: Clock | None = None) -> None:
        self.writer = writer
        #: What this actor's success means for a piece: None for a handler actor (it
        #: moved on), else ``succeeded``, ``failed`` or ``paused`` (a terminal actor).
        self.ends = ends
        self.clock = clock or Clock()

    @classmethod
    def of(cls, runtime: Runtime, writer: EventWriter) -> HopEvents:
        """The observer for ``runtime``, knowing from its actor what it ends."""
        actor = runtime.cfg.actor
        ends = {HAPPY_END: "succeeded", ERROR_END: "failed"}.get(actor)
        if ends is None and runtime.worker.terminal is not None:
            ends = "paused"  # the one other terminal: parking for review
        return cls(writer, ends=ends, clock=runtime.clock)

    def _emit(self, actor: str, envelope: Envelope, kind: str, **data: object) -> None:
        self.writer.emit(NewEvent(root_id=envelope.root_id, piece=envelope.id, actor=actor,
                                  kind=kind, at=self.clock.time(),
                                  data={"attempt": envelope.meta.attempt, **data}))

    def succeeded(self, actor: str, envelope: Envelope, seconds: float) -> None:
        self._emit(actor, envelope, self.ends or "hop", seconds=round(seconds, 6))

    def failed(self, actor: str, envelope: Envelope, exc: BaseException,
               decision: Decision, seconds: float) -> None:
        kind = "retry" if decision.action == "retry" else "error"
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        self._emit(actor, envelope, kind, seconds=round(seconds, 6),
                   reason=decision.reason, error=error, delay=decision.delay)


def events_wanted(loaded: LoadedMesh, settings: Settings) -> bool:
    """Whether the replicas of ``loaded`` write hop events: the mesh has a gateway."""
    return settings.gateway.events or loaded.mesh.spec.gateway is not None


def hop_events(loaded: LoadedMesh, settings: Settings, state_dir: Path) -> EventWriter | None:
    """A writer to the mesh's event feed when its replicas write hop events, else
    ``None`` (the caller closes it)."""
    if not events_wanted(loaded, settings):
        return None
    return EventWriter(open_event_store(settings.store.url, state_dir=state_dir))

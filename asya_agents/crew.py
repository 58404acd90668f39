"""Crew actors: the ends of every route.

``happy-end`` records each succeeded envelope once (a duplicate delivery is counted, not
stored twice); ``error-end`` records failures with the reason, the traceback, the
attempts and the full envelope, so that ``asya results`` explains them and ``asya replay``
can send one back. They run on the same runtime as any actor, with a terminal handler
instead of a user's one.

A third kind of terminal is not a crew actor but is built the same way: an actor whose
handler is ``asya_agents.review.park`` ends the route *for now*, parking the envelope
for a person (see :mod:`asya_agents.review`; ``replica.build_runtime`` picks it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope
from asya_agents.errors import StoreError
from asya_agents.manifest import ScalingSpec
from asya_agents.stores.base import ResultStore, Status, is_postgres_url
from asya_agents.transports.base import Outgoing, Transport

__all__ = ["CREW_SCALING", "GroupRecorder", "crew_scaling", "crew_terminal", "replay_failed"]

#: How the local supervisor scales crew actors: recording is fast, so few replicas.
CREW_SCALING = ScalingSpec(minReplicaCount=0, maxReplicaCount=2, queueLength=100,
                           pollingInterval=1.0, cooldownPeriod=30.0,
                           scaleDownStabilization=10.0)


def crew_scaling(store_url: str | None) -> ScalingSpec:
    """Crew scaling for the result store at ``store_url``: a SQLite file takes one
    writer at a time, so there a second replica would only wait on the first's lock
    (and each replica already group-commits); PostgreSQL takes ``CREW_SCALING``."""
    if is_postgres_url(store_url):
        return CREW_SCALING
    return CREW_SCALING.model_copy(update={"maxReplicaCount": 1})


def crew_terminal(actor: str, store: ResultStore) -> Callable[[Envelope], Awaitable[None]]:
    """The terminal handler of crew actor ``actor``, writing to ``store``."""
    if actor not in (HAPPY_END, ERROR_END):
        raise ValueError(f"not a crew actor: {actor!r}")
    status: Status = "succeeded" if actor == HAPPY_END else "failed"
    return GroupRecorder(store, status).record


class GroupRecorder:
    """Group commit: envelopes that arrive while a write is running are recorded
    together in the next transaction, so a busy crew replica pays one commit per group
    rather than one per envelope. Each caller returns only once its own envelope is
    committed (the runtime acks after that), and sees the write's error if it failed.

    A store whose writes are short local calls (``inline_writes``: SQLite) is written
    on the event loop; handing such a write to a thread costs more than the write. The
    envelopes that arrive meanwhile wait in the socket and form the next group."""

    def __init__(self, store: ResultStore, status: Status) -> None:
        self.store = store
        self.status = status
        self._waiting: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def record(self, envelope: Envelope) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((envelope.to_dict(), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                envelopes = [env for env, _ in group]
                if self.store.inline_writes:
                    self.store.record_many(self.status, envelopes)
                else:
                    await asyncio.to_thread(self.store.record_many, self.status, envelopes)
            except Exception as exc:  # each caller gets the error, whatever it is
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)


async def replay_failed(store: ResultStore, transport: Transport, envelope_id: str) -> Envelope:
    """Send failed envelope ``envelope_id`` back to the actor where it failed, as a first
    attempt, and drop its failure record (``asya replay`` and the review console)."""
    rec = await asyncio.to_thread(store.get, envelope_id)
    if rec is None or rec.status != "failed":
        raise StoreError(f"no failed envelope {envelope_id!r} in the result store")
    envelope = Envelope.from_dict(rec.envelope)
    envelope.meta.attempt, envelope.meta.error = 1, None
    await transport.send([Outgoing(envelope.route.curr, envelope.encode())])
    await asyncio.to_thread(store.forget, envelope_id)
    return envelope

"""Crew actors: the ends of every route.

``happy-end`` records each succeeded envelope once (a duplicate delivery is counted, not
stored twice); ``error-end`` records failures with the reason, the traceback, the
attempts and the full envelope, so that ``asya results`` explains them and ``asya replay``
can send one back. They run on the same runtime as any actor, with a terminal handler
instead of a user's one.

``error-end`` also sweeps the brokers' dead-letter queues (:class:`DeadLetterSweep`).
A broker's own delivery counter (RabbitMQ's quorum ``x-delivery-limit``, SQS's redrive
``maxReceiveCount``) stays a backstop above the actors' ``maxDeliveries``: whatever it
still moves to an actor's ``PREFIX-MESH-ACTOR-dlq`` (a replica that died before it could
read the message, an actor whose limit was raised above the broker's) would wait there
unseen. The sweep is in error-end's replica because that is where failures are
recorded, locally and on Kubernetes alike, and it goes through the transport protocol
like any consumer. The embedded transport has no dead-letter queue: there the runtime's
limit is the only one, and no sweep runs.

A third kind of terminal is not a crew actor but is built the same way: an actor whose
handler is ``asya_agents.review.park`` ends the route *for now*, parking the envelope
for a person (see :mod:`asya_agents.review`; ``replica.build_runtime`` picks it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope
from asya_agents.errors import MessageTooLarge, TransportError
from asya_agents.hop import Router
from asya_agents.manifest import ScalingSpec
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.seams import Clock
from asya_agents.stores.base import ResultStore, Status, is_postgres_url
from asya_agents.transports.base import Delivery, Outgoing, Transport, dead_letter_queue

__all__ = ["CREW_SCALING", "REPLAY_LEASE", "DeadLetterSweep", "ErrorEndRuntime", "GroupRecorder",
           "crew_runtime", "crew_scaling", "crew_terminal", "finish_replays", "replay_failed"]

log = logging.getLogger("asya.crew")

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


class DeadLetterSweep:
    """Moves what a broker dead-lettered from the actors' queues into error-end: each
    message failed with reason ``delivery-limit`` (poison when it is not an envelope),
    its route kept, so that ``asya results --status failed`` lists it and ``asya
    replay`` sends it back where it was. A fan-out child on its way to one of the
    mesh's ``gathers`` goes to that gather instead, failed the same way, so that its
    group ends with it (:meth:`~asya_agents.hop.Router.dead_lettered`)."""

    #: Messages taken from one dead-letter queue per look.
    BATCH = 10

    def __init__(self, transport: Transport, actors: Iterable[str], *,
                 mesh_actors: frozenset[str], max_bytes: int, lease: float = 30.0,
                 gathers: frozenset[str] = frozenset()) -> None:
        self.transport = transport
        self.lease = lease
        self.routers = {a: Router(a, mesh_actors, max_bytes=max_bytes, gathers=gathers)
                        for a in actors}

    async def once(self) -> int:
        """One look into every actor's dead-letter queue; how many messages moved."""
        moved = 0
        for actor, router in self.routers.items():
            moved += await self._drain(dead_letter_queue(actor), router)
        return moved

    async def run(self, stop: asyncio.Event, *, every: float) -> None:
        """Sweep every ``every`` seconds (at once again after a full take) until
        ``stop``; a broker hiccup is logged and tried again on the next sweep."""
        while not stop.is_set():
            moved = 0
            try:
                moved = await self.once()
            except Exception as exc:  # nothing may stop error-end recording failures
                log.warning("dead-letter sweep failed: %s", exc)
            if moved < self.BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every)

    async def _drain(self, queue: str, router: Router) -> int:
        try:
            got = await self.transport.receive(queue, max_messages=self.BATCH, wait=0.0,
                                               visibility=self.lease, capacity=self.BATCH)
        except TransportError as exc:
            log.warning("cannot read the dead-letter queue %s: %s", queue, exc)
            return 0
        moved = 0
        for delivery in got:
            moved += await self._move(queue, router, delivery)
        return moved

    async def _move(self, queue: str, router: Router, delivery: Delivery) -> int:
        limit = self.transport.delivery_limit
        failed = router.dead_lettered(queue, delivery.body, broker_limit=limit)
        try:
            try:
                await self.transport.publish_and_ack([failed], delivery)
            except MessageTooLarge:  # with its error it no longer fits: keep its start
                await self.transport.publish_and_ack(
                    [router.poison(queue, delivery.body)], delivery)
        except TransportError as exc:
            log.warning("moving a message of %s to error-end failed, it stays there: %s",
                        queue, exc)
            with contextlib.suppress(TransportError):
                await self.transport.nack(delivery)
            return 0
        log.warning("moved a message from %s to %s (the broker's delivery limit)",
                    queue, failed.queue)
        return 1


class ErrorEndRuntime(Runtime):
    """error-end's runtime: records failures, and runs the dead-letter sweep beside."""

    def __init__(self, config: RuntimeConfig, *, transport: Transport, store: ResultStore,
                 sweep: DeadLetterSweep | None, every: float,
                 clock: Clock | None = None) -> None:
        super().__init__(config, transport=transport,
                         terminal=crew_terminal(ERROR_END, store), clock=clock)
        self.sweep = sweep
        self.every = every

    async def run(self, stop: asyncio.Event) -> None:
        if self.sweep is None:
            await super().run(stop)
            return
        sweeper = asyncio.create_task(self.sweep.run(stop, every=self.every))
        try:
            await super().run(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper


def crew_runtime(config: RuntimeConfig, *, transport: Transport, store: ResultStore,
                 actors: Iterable[str], sweep_every: float,
                 clock: Clock | None = None) -> Runtime:
    """The runtime of crew actor ``config.actor``; for error-end with the dead-letter
    sweep of ``actors`` where the transport has dead-letter queues."""
    if config.actor != ERROR_END:
        return Runtime(config, transport=transport,
                       terminal=crew_terminal(config.actor, store), clock=clock)
    sweep = None
    if transport.delivery_limit is not None:
        sweep = DeadLetterSweep(transport, actors, mesh_actors=frozenset(config.actors),
                                max_bytes=config.max_bytes, lease=config.lease,
                                gathers=frozenset(config.gathers))
    return ErrorEndRuntime(config, transport=transport, store=store, sweep=sweep,
                           every=sweep_every, clock=clock)


async def replay_failed(store: ResultStore, transport: Transport, envelope_id: str) -> Envelope:
    """Send failed envelope ``envelope_id`` back to the actor where it failed, as a first
    attempt of the next generation (``meta.replays``): ``asya replay`` and the console.

    Mark, then send, then mark sent: the store records the replay first (the record
    leaves the failures but is not deleted), so a result of the replayed envelope,
    however fast, always lands on a record that only moves forward. A replay whose
    send fails or never returns stays recorded; running it again (or
    :func:`finish_replays`) sends the very same envelope."""
    data = await asyncio.to_thread(store.mark_replay, envelope_id)
    envelope = Envelope.from_dict(data)
    await transport.send([Outgoing(envelope.route.curr, envelope.encode())])
    await asyncio.to_thread(store.replay_sent, envelope_id, generation=envelope.meta.replays)
    return envelope


#: A recorded replay younger than this may still be sending: :func:`finish_replays`
#: leaves it alone.
REPLAY_LEASE = 30.0


async def finish_replays(store: ResultStore, transport: Transport, *,
                         older_than: float = REPLAY_LEASE) -> list[str]:
    """Send every replay recorded more than ``older_than`` seconds ago and never marked
    sent (its sender died or its broker refused); the ids sent."""
    sent = []
    for envelope_id in await asyncio.to_thread(store.unfinished_replays,
                                               older_than=older_than):
        await replay_failed(store, transport, envelope_id)
        sent.append(envelope_id)
    return sent

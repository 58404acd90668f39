"""Handling one leased message (or one batch) from decode to ack: what a replica's
runtime does with each delivery its loop hands over.

Decode the envelope (anything that is not one goes to ``error-end``), refuse it when it
was delivered more often than ``max_deliveries`` (each replica that took it died: it
goes to ``error-end`` with reason ``delivery-limit`` instead of killing the next one,
never retried), check it is addressed here, call the handler within the actor's
timeout, turn the result into outgoing messages (:mod:`asya_agents.hop`), publish them
and only then ack the input, in one ``publish_and_ack``. A generator's children are
published while it yields (:meth:`Worker._stream`): each child goes on once the next one
is made (the last is held back to take the rest of the weight, see
:class:`~asya_agents.envelope.StreamShares`), at most :data:`STREAM_WINDOW` wait to be
sent at any time, and the last goes with the ack. A replica that dies mid-stream leaves
the input unacked; its redelivery runs the generator again and publishes the same ids
and weights, which the ends and the gathers absorb as duplicates. A failure goes to the failure
policy and its decision is published the same way. An onward publish that fails gives
the input back (a delayed nack) instead of holding it: on a broker whose lease is the
consumer's channel (RabbitMQ) a held message would wait for as long as that channel
lives.

:class:`Worker` keeps the deliveries it holds (``holding``) so that the loop's heartbeat
can extend their leases; it knows nothing of admission or concurrency, which are the
loop's (:mod:`asya_agents.runtime`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asya_agents.envelope import (
    DEFAULT_HOP_LIMIT,
    ERROR_END,
    MAX_ENVELOPE_BYTES,
    Envelope,
    Hop,
    StreamShares,
)
from asya_agents.errors import (
    ActorTimeout,
    BlobRefused,
    EnvelopeError,
    MessageTooLarge,
    TransportError,
)
from asya_agents.handlers import Handler, Result
from asya_agents.hop import Router, delivery_limit_error
from asya_agents.seams import (
    Admission,
    Clock,
    Decision,
    FailurePolicy,
    HopSpan,
    NoRetries,
    Observer,
    Tracer,
    reason_of,
)
from asya_agents.transports.base import Delivery, Outgoing, Transport

__all__ = ["GIVE_BACK_MAX", "STREAM_WINDOW", "RuntimeConfig", "Terminal", "Worker",
           "lease_for"]

#: Children of a streamed fan-out that may wait to be published at once: the generator
#: waits while this many are unsent (bounded memory however many it yields).
STREAM_WINDOW = 256

log = logging.getLogger("asya.runtime")

#: A terminal handler (crew actors) consumes the envelope; nothing is routed on.
Terminal = Callable[[Envelope], Awaitable[None]]


@dataclass
class RuntimeConfig:
    """How one replica of one actor runs. Built from the AsyncActor by the caller."""

    actor: str
    actors: set[str]
    mode: str = "payload"
    concurrency: int = 1
    timeout: float = 300.0
    lease: float = 30.0
    batch_size: int | None = None
    batch_wait: float = 0.05
    max_bytes: int = MAX_ENVELOPE_BYTES
    #: Most actors an envelope may pass through (the mesh's ``spec.hopLimit``).
    hop_limit: int = DEFAULT_HOP_LIMIT
    receive_wait: float = 0.5
    #: Deliveries of one message that may end without a result before the next one goes
    #: to error-end (``spec.resiliency.maxDeliveries``); None: no limit of the mesh's own.
    max_deliveries: int | None = None
    #: The mesh's ``fanIn`` actors (a failed fan-out child bound for one goes there).
    gathers: set[str] = field(default_factory=set)
    #: ``spec.fanIn`` of this actor: ``timeout`` seconds and ``partial``; None: no gather.
    fan_in: tuple[float, bool] | None = None
    #: How often a gather looks for groups past their timeout (or whose finisher died).
    sweep_every: float = 1.0
    failure: FailurePolicy = field(default_factory=NoRetries)
    admission: Admission = field(default_factory=Admission)
    observer: Observer = field(default_factory=Observer)
    tracer: Tracer = field(default_factory=Tracer)


def lease_for(timeout: float) -> float:
    """Lease (visibility timeout) of a message: short enough that a killed replica's
    work comes back soon, long enough that heartbeats keep a slow handler's lease."""
    return max(2.0, min(timeout + 5.0, 30.0))


@dataclass
class _Job:
    delivery: Delivery
    envelope: Envelope
    started: float
    span: HopSpan


class Worker:
    """Handles deliveries of one actor with its handler (or terminal)."""

    def __init__(self, config: RuntimeConfig, *, transport: Transport,
                 handler: Handler | None, terminal: Terminal | None, clock: Clock) -> None:
        self.cfg = config
        self.transport = transport
        self.handler = handler
        self.terminal = terminal
        self.clock = clock
        self.router = Router(config.actor, frozenset(config.actors), config.mode,
                             config.max_bytes, hop_limit=config.hop_limit,
                             gathers=frozenset(config.gathers))
        #: Deliveries being handled, with the monotonic time each was taken.
        self.holding: dict[int, tuple[Delivery, float]] = {}
        #: Set when a sync handler overran its timeout: its thread cannot be stopped.
        self.restart_needed = False

    def _decode(self, delivery: Delivery) -> Envelope | None:
        try:
            envelope = Envelope.decode(delivery.body, max_bytes=self.cfg.max_bytes)
        except EnvelopeError:
            return None
        envelope.meta.delivery_count = delivery.delivery_count
        return envelope

    def _job(self, delivery: Delivery, envelope: Envelope) -> _Job:
        span = self.cfg.tracer.start(self.cfg.actor, envelope.headers, envelope_id=envelope.id,
                                     attempt=envelope.meta.attempt)
        return _Job(delivery, envelope, self.clock.time(), span)

    async def background(self, stop: asyncio.Event) -> None:
        """Work beside the receive loop until ``stop`` (a gather's sweep); none here."""

    def close(self) -> None:
        """Release what the worker holds once its loop has drained (a gather's store)."""

    async def process(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery)
        if envelope is None:
            await self._poison(delivery)
            return
        self.cfg.observer.received(self.cfg.actor, envelope)
        job = self._job(delivery, envelope)
        self.holding[id(delivery)] = (delivery, self.clock.monotonic())
        try:
            await self._handle(job)
        finally:
            self.holding.pop(id(delivery), None)
            job.span.end()

    async def _handle(self, job: _Job) -> None:
        """One decoded delivery, held while this runs: the handler, then where its
        result goes (a gather overrides this)."""
        if self._over_limit(job.delivery):
            await self._refuse(job)
            return
        if self.terminal is not None:
            await self._finish_terminal(job)
            return
        try:
            self._check_addressed(job.envelope)
            result = await self._call(job.envelope.payload if self.cfg.mode == "payload"
                                      else job.envelope.to_dict(), stream=True)
            if result.stream is not None:
                await self._stream(job, result.stream)
                return
            outgoing = self._route(job, result)
        except Exception as exc:
            await self._fail(job, exc)
            return
        await self._publish(outgoing, job)

    async def process_batch(self, deliveries: list[Delivery]) -> None:
        jobs: list[_Job] = []
        for delivery in deliveries:
            envelope = self._decode(delivery)
            if envelope is None:
                await self._poison(delivery)
                continue
            self.cfg.observer.received(self.cfg.actor, envelope)
            if self._over_limit(delivery):
                await self._refuse(self._job(delivery, envelope))
                continue
            try:
                self._check_addressed(envelope)
            except EnvelopeError as exc:
                await self._fail(self._job(delivery, envelope), exc)
                continue
            jobs.append(self._job(delivery, envelope))
        if not jobs:
            return
        self.cfg.observer.batch(self.cfg.actor, len(jobs))
        for job in jobs:
            self.holding[id(job.delivery)] = (job.delivery, self.clock.monotonic())
        try:
            await self._run_batch(jobs)
        finally:
            for job in jobs:
                self.holding.pop(id(job.delivery), None)
                job.span.end()

    async def _run_batch(self, jobs: list[_Job]) -> None:
        args = [j.envelope.payload if self.cfg.mode == "payload" else j.envelope.to_dict()
                for j in jobs]
        try:
            result = await self._call(args)
            items = result.items if result.fanned else [result.items[0]]
            if len(items) != len(jobs):
                raise TypeError(
                    f"batch handler returned {len(items)} results for {len(jobs)} inputs"
                )
        except Exception as exc:
            if isinstance(exc, BlobRefused) and len(jobs) > 1:
                # A refused URL is never retried, and the batch cannot say whose it was:
                # run each payload alone, so that only the refused one fails.
                for job in jobs:
                    await self._run_batch([job])
                return
            for job in jobs:
                await self._fail(job, exc)
            return
        for job, item in zip(jobs, items, strict=True):
            try:
                outgoing = self._route(job, Result([item], fanned=False))
            except Exception as exc:
                await self._fail(job, exc)
                continue
            await self._publish(outgoing, job)

    def _check_addressed(self, envelope: Envelope) -> None:
        if envelope.route.curr != self.cfg.actor:
            raise EnvelopeError(
                f"envelope addressed to {envelope.route.curr!r} arrived at {self.cfg.actor!r}"
            )

    async def _call(self, arg: Any, *, stream: bool = False) -> Result:
        """Call the handler within the actor's timeout; with ``stream``, a generator
        comes back unstarted (:meth:`_stream` runs it within what is left)."""
        assert self.handler is not None
        try:
            # asyncio.timeout, not wait_for: an async handler runs in this task, with no
            # task of its own per message.
            async with asyncio.timeout(self.cfg.timeout):
                if stream:
                    return await self.handler.start(arg)
                return await self.handler.call(arg)
        except TimeoutError as exc:
            raise self._timed_out() from exc

    def _timed_out(self) -> ActorTimeout:
        assert self.handler is not None
        if not (self.handler.is_async or self.handler.is_async_gen):
            # A thread cannot be cancelled: this replica asks to be replaced.
            self.restart_needed = True
        return ActorTimeout(f"handler ran past actorTimeout ({self.cfg.timeout:g}s)")

    # -- a generator's fan-out, as it yields ---------------------------------------------

    async def _stream(self, job: _Job, stream: AsyncIterator[Any]) -> None:
        """Publish a generator's children while it yields, then the last with the ack.
        A handler error or a timeout mid-stream fails the hop (the children already
        sent stay sent; a retry sends the same ids again)."""
        sender = _Sender(self.transport)
        try:
            last = await self._pump(job, stream, sender)
            await sender.close()
        except MessageTooLarge as exc:
            await sender.abort()
            await self._fail(job, exc)
            return
        except TransportError as exc:
            await sender.abort()
            await self._give_back(job, exc)
            return
        except Exception as exc:
            await sender.abort()
            await self._fail(job, exc)
            return
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        await self._publish([last], job)

    async def _pump(self, job: _Job, stream: AsyncIterator[Any], sender: _Sender
                    ) -> Outgoing:
        """Turn the stream into children, each sent once the next exists; the last is
        returned (it takes the rest of the weight)."""
        shares, held, hop, tp = StreamShares(), _NOTHING, self._hop(job), job.span.traceparent
        left = self.cfg.timeout - (self.clock.time() - job.started)
        try:
            async with asyncio.timeout(max(left, 0.0)):
                async for item in stream:
                    if held is not _NOTHING:
                        index = shares.count
                        await sender.put(self.router.child(job.envelope, held, index,
                                                           shares.next(), hop=hop,
                                                           traceparent=tp))
                    held = item
        except TimeoutError as exc:
            raise self._timed_out() from exc
        hop = self._hop(job)
        if held is _NOTHING:
            return self.router.ended(job.envelope, hop=hop, traceparent=tp)
        index = shares.count
        return self.router.child(job.envelope, held, index, shares.last(), hop=hop,
                                 traceparent=tp)

    # -- routing --------------------------------------------------------------------

    def _route(self, job: _Job, result: Result) -> list[Outgoing]:
        return self.router.route(job.envelope, result, hop=self._hop(job),
                                 traceparent=job.span.traceparent)

    def _hop(self, job: _Job) -> Hop:
        return Hop(actor=self.cfg.actor, started=job.started, ended=self.clock.time(),
                   attempt=job.envelope.meta.attempt)

    async def _publish(self, outgoing: list[Outgoing], job: _Job) -> None:
        try:
            await self.transport.publish_and_ack(outgoing, job.delivery)
        except MessageTooLarge as exc:
            await self._fail(job, exc)
            return
        except TransportError as exc:
            await self._give_back(job, exc)
            return
        self.cfg.admission.outcome(None)
        self.cfg.observer.succeeded(self.cfg.actor, job.envelope, self.clock.time() - job.started)

    async def _give_back(self, job: _Job, exc: TransportError) -> None:
        # Not acked, and given back rather than held: on a broker whose lease is the
        # consumer's channel (RabbitMQ), a held message would wait for as long as that
        # channel lives. Nothing is lost either way.
        delay = _give_back_delay(job.delivery)
        log.warning("publishing from %s failed, %s comes back in %gs: %s",
                    self.cfg.actor, job.envelope.id, delay, exc)
        await self._safe_nack(job.delivery, delay=delay)

    async def _finish_terminal(self, job: _Job) -> None:
        assert self.terminal is not None
        try:
            await self.terminal(job.envelope)
        except Exception as exc:
            log.warning("%s could not record %s: %s", self.cfg.actor, job.envelope.id, exc)
            await self._safe_nack(job.delivery, delay=1.0)
            return
        try:
            await self.transport.ack(job.delivery)
        except TransportError as exc:
            log.warning("ack failed, will be redelivered and counted once: %s", exc)
            return
        self.cfg.observer.succeeded(self.cfg.actor, job.envelope, self.clock.time() - job.started)

    # -- failures -------------------------------------------------------------------

    def _over_limit(self, delivery: Delivery) -> bool:
        limit = self.cfg.max_deliveries
        return limit is not None and delivery.delivery_count > limit

    async def _refuse(self, job: _Job) -> None:
        """A message past ``max_deliveries``: to error-end (a fan-out child: to its
        gather, :meth:`Router.failed_to_gather`), not to the handler. No retry (the next
        attempt would kill its replica too), no outcome for the brakes (the handler was
        not asked)."""
        assert self.cfg.max_deliveries is not None
        exc = delivery_limit_error(job.envelope, deliveries=job.delivery.delivery_count,
                                   limit=self.cfg.max_deliveries)
        log.warning("%s refused %s: %s", self.cfg.actor, job.envelope.id, exc)
        await self._route_failure(job, exc, Decision("route", target=ERROR_END,
                                                     reason=reason_of(exc)))

    async def _fail(self, job: _Job, exc: BaseException) -> None:
        self.cfg.admission.outcome(exc, job.started)
        decision = self.cfg.failure.decide(job.envelope, exc, actor=self.cfg.actor)
        await self._route_failure(job, exc, decision)

    async def _route_failure(self, job: _Job, exc: BaseException, decision: Decision) -> None:
        envelope = job.envelope
        failed = self.router.failure(envelope, exc, decision, hop=self._hop(job),
                                     traceparent=job.span.traceparent)
        job.span.end(exc)
        self.cfg.observer.failed(self.cfg.actor, envelope, exc, decision,
                                 self.clock.time() - job.started)
        try:
            await self.transport.publish_and_ack([failed], job.delivery)
        except TransportError as err:
            log.warning("routing a failure of %s failed, will be redelivered: %s",
                        envelope.id, err)
            await self._safe_nack(job.delivery, delay=1.0)

    async def _poison(self, delivery: Delivery) -> None:
        """A message that is not an envelope: record it at error-end, never retry it."""
        self.cfg.observer.received(self.cfg.actor, None)
        try:
            await self.transport.publish_and_ack(
                [self.router.poison(delivery.queue, delivery.body)], delivery)
        except TransportError as exc:
            log.warning("could not dead-letter a poison message: %s", exc)
            await self._safe_nack(delivery, delay=5.0)

    async def _safe_nack(self, delivery: Delivery, *, delay: float) -> None:
        try:
            await self.transport.nack(delivery, delay=delay)
        except TransportError as exc:
            log.warning("nack failed, the lease will expire instead: %s", exc)


_NOTHING: Any = object()


class _Sender:
    """Sends a stream's children in the background, as many at once as have queued up
    while the last send ran; :meth:`put` waits while :data:`STREAM_WINDOW` are unsent."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._queue: asyncio.Queue[Outgoing | None] = asyncio.Queue(STREAM_WINDOW)
        self._error: Exception | None = None
        self._task = asyncio.ensure_future(self._run())

    async def put(self, message: Outgoing) -> None:
        if self._error is not None:
            raise self._error
        await self._queue.put(message)

    async def close(self) -> None:
        """Wait until everything put was sent; raise what a send raised."""
        await self._queue.put(None)
        await self._task
        if self._error is not None:
            raise self._error

    async def abort(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task

    async def _run(self) -> None:
        ended = False
        while not ended:
            batch: list[Outgoing] = []
            while len(batch) < STREAM_WINDOW and (not batch or not self._queue.empty()):
                item = await self._queue.get()
                if item is None:
                    ended = True
                    break
                batch.append(item)
            if batch and self._error is None:
                try:
                    await self.transport.send(batch)
                except Exception as exc:  # put() and close() raise it; keep draining
                    self._error = exc


#: How long an input whose onward publish failed waits before it comes back: doubling
#: with each delivery from 1 s, so that a publish that keeps failing (a target queue
#: deleted) backs off instead of spinning, up to GIVE_BACK_MAX.
GIVE_BACK_MAX = 30.0


def _give_back_delay(delivery: Delivery) -> float:
    return min(2.0 ** min(max(delivery.delivery_count - 1, 0), 5), GIVE_BACK_MAX)

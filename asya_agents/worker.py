"""Handling one leased message (or one batch) from decode to ack: what a replica's
runtime does with each delivery its loop hands over.

Decode the envelope (anything that is not one goes to ``error-end``), refuse it when it
was delivered more often than ``max_deliveries`` (each replica that took it died: it
goes to ``error-end`` with reason ``delivery-limit`` instead of killing the next one,
never retried), check it is addressed here, call the handler within the actor's
timeout, turn the result into outgoing messages (:mod:`asya_agents.hop`), publish them
and only then ack the input, in one ``publish_and_ack``. A failure goes to the failure
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
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asya_agents.envelope import DEFAULT_HOP_LIMIT, ERROR_END, MAX_ENVELOPE_BYTES, Envelope, Hop
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

__all__ = ["GIVE_BACK_MAX", "RuntimeConfig", "Terminal", "Worker", "lease_for"]

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
                             config.max_bytes, hop_limit=config.hop_limit)
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

    async def process(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery)
        if envelope is None:
            await self._poison(delivery)
            return
        self.cfg.observer.received(self.cfg.actor, envelope)
        job = self._job(delivery, envelope)
        self.holding[id(delivery)] = (delivery, self.clock.monotonic())
        try:
            if self._over_limit(delivery):
                await self._refuse(job)
                return
            if self.terminal is not None:
                await self._finish_terminal(job)
                return
            try:
                self._check_addressed(envelope)
                result = await self._call(envelope.payload if self.cfg.mode == "payload"
                                          else envelope.to_dict())
                outgoing = self._route(job, result)
            except Exception as exc:
                await self._fail(job, exc)
                return
            await self._publish(outgoing, job)
        finally:
            self.holding.pop(id(delivery), None)
            job.span.end()

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

    async def _call(self, arg: Any) -> Result:
        assert self.handler is not None
        try:
            # asyncio.timeout, not wait_for: an async handler runs in this task, with no
            # task of its own per message.
            async with asyncio.timeout(self.cfg.timeout):
                return await self.handler.call(arg)
        except TimeoutError as exc:
            if not (self.handler.is_async or self.handler.is_async_gen):
                # A thread cannot be cancelled: this replica asks to be replaced.
                self.restart_needed = True
            raise ActorTimeout(
                f"handler ran past actorTimeout ({self.cfg.timeout:g}s)"
            ) from exc

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
            # Not acked, and given back rather than held: on a broker whose lease is
            # the consumer's channel (RabbitMQ), a held message would wait for as long
            # as that channel lives. Nothing is lost either way.
            delay = _give_back_delay(job.delivery)
            log.warning("publishing from %s failed, %s comes back in %gs: %s",
                        self.cfg.actor, job.envelope.id, delay, exc)
            await self._safe_nack(job.delivery, delay=delay)
            return
        self.cfg.admission.outcome(None)
        self.cfg.observer.succeeded(self.cfg.actor, job.envelope, self.clock.time() - job.started)

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
        """A message past ``max_deliveries``: to error-end, not to the handler. No retry
        (the next attempt would kill its replica too), no outcome for the brakes (the
        handler was not asked)."""
        assert self.cfg.max_deliveries is not None
        exc = delivery_limit_error(job.envelope, deliveries=job.delivery.delivery_count,
                                   limit=self.cfg.max_deliveries)
        log.warning("%s refused %s: %s", self.cfg.actor, job.envelope.id, exc)
        await self._route_failure(job, exc, Decision("route", target=ERROR_END,
                                                     reason=reason_of(exc)))

    async def _fail(self, job: _Job, exc: BaseException) -> None:
        self.cfg.admission.outcome(exc)
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


#: How long an input whose onward publish failed waits before it comes back: doubling
#: with each delivery from 1 s, so that a publish that keeps failing (a target queue
#: deleted) backs off instead of spinning, up to GIVE_BACK_MAX.
GIVE_BACK_MAX = 30.0


def _give_back_delay(delivery: Delivery) -> float:
    return min(2.0 ** min(max(delivery.delivery_count - 1, 0), 5), GIVE_BACK_MAX)

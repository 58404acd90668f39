"""The routing runtime: what every replica of every actor runs.

One loop per replica: lease messages from the actor's queue (never more than
``concurrency`` in flight), decode each envelope, call the handler (with the actor's
timeout), move the route one hop on, publish what the hop produced, and only then ack.
A crash anywhere before the ack means the message comes back after its lease expires
(an onward publish that fails gives the message back at once, with a short delay):
delivery is at-least-once, and ids are stable (fan-out children are ``<id>.<i>``) so
that ``happy-end`` can record each id once.

Nothing here decides retries: a failure is handed to the actor's
:class:`~asya_agents.resiliency.decide.FailurePolicy`, whose decision is acted on by
publishing (a delayed copy to retry, or the envelope to ``error-end``). An envelope that
cannot be read at all goes to ``error-end`` with the reason; no input crashes a replica
or loops.

Two small seams let other subsystems plug in without touching this loop:
:class:`Admission` (may this replica take more work now? rate limits, circuit breaker,
adaptive concurrency) and :class:`Observer` (metrics, logs, traces).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from asya_agents.envelope import ERROR_END, MAX_ENVELOPE_BYTES, Envelope, ErrorInfo, Hop, Route
from asya_agents.errors import (
    ActorTimeout,
    EnvelopeError,
    MessageTooLarge,
    TransportError,
    UnknownActorError,
)
from asya_agents.handlers import Handler, Result
from asya_agents.observe.spans import HopSpan, HopTracer
from asya_agents.observe.tracecontext import TRACEPARENT
from asya_agents.resiliency.decide import Decision, FailurePolicy, NoRetries
from asya_agents.transports.base import Delivery, Outgoing, Transport

__all__ = ["Admission", "Observer", "Runtime", "RuntimeConfig", "Terminal"]

log = logging.getLogger("asya.runtime")

#: A terminal handler (crew actors) consumes the envelope; nothing is routed on.
Terminal = Callable[[Envelope], Awaitable[None]]


class Observer:
    """Hooks the runtime calls; the default does nothing. Metrics subclass it."""

    def received(self, actor: str, envelope: Envelope | None) -> None: ...

    def succeeded(self, actor: str, envelope: Envelope, seconds: float) -> None: ...

    def failed(self, actor: str, envelope: Envelope, exc: BaseException,
               decision: Decision, seconds: float) -> None: ...

    def batch(self, actor: str, size: int) -> None: ...


class Admission:
    """Whether the replica may take more work. The default always may, up to
    ``concurrency``; rate limits, breakers and adaptive concurrency subclass it."""

    def limit(self, concurrency: int) -> int:
        """How many messages may be in flight now."""
        return concurrency

    async def wait(self, stop: asyncio.Event) -> None:
        """Return when a message may be taken (or when ``stop`` is set)."""

    async def acquire(self, want: int, stop: asyncio.Event) -> int:
        """How many of ``want`` messages may be received now (one rate-limit token
        each); waits for at least one unless ``stop`` is set (then 0)."""
        return want

    async def release(self, unused: int) -> None:
        """Give back what :meth:`acquire` granted but the queue had no message for."""

    def outcome(self, exc: BaseException | None) -> None:
        """Told after each hop: ``None`` on success, else the error."""

    async def close(self) -> None:
        """Release what it holds (a rate-limit store connection) once the loop ends."""


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
    receive_wait: float = 0.5
    clock: Callable[[], float] = time.time
    failure: FailurePolicy = field(default_factory=NoRetries)
    admission: Admission = field(default_factory=Admission)
    observer: Observer = field(default_factory=Observer)
    tracer: HopTracer = field(default_factory=HopTracer)


@dataclass
class _Job:
    delivery: Delivery
    envelope: Envelope
    started: float
    span: HopSpan


class Runtime:
    """Runs one actor's replica loop against a transport."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        transport: Transport,
        handler: Handler | None = None,
        terminal: Terminal | None = None,
    ) -> None:
        if (handler is None) == (terminal is None):
            raise ValueError("a runtime needs exactly one of handler or terminal")
        self.cfg = config
        self.transport = transport
        self.handler = handler
        self.terminal = terminal
        self.restart_needed = False
        self._inflight: dict[int, tuple[Delivery, float]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Messages this replica holds now (read by the metrics)."""
        return len(self._inflight)

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then let in-flight work finish (up to the
        actor's timeout) before returning."""
        self._freed = asyncio.Event()  # of this run's loop
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        try:
            while not stop.is_set() and not self.restart_needed:
                await self.cfg.admission.wait(stop)
                if stop.is_set():
                    break
                free = self.cfg.admission.limit(self.cfg.concurrency) - len(self._tasks)
                if free <= 0:
                    await self._slot_freed(self.cfg.receive_wait)
                    continue
                granted = await self.cfg.admission.acquire(self.cfg.batch_size or free, stop)
                if granted <= 0:
                    continue
                deliveries = await self._receive(granted)
                if self.cfg.batch_size:
                    deliveries = await self._fill_batch(deliveries, stop, size=granted)
                await self.cfg.admission.release(granted - len(deliveries))
                if self.cfg.batch_size:
                    if deliveries:
                        self._spawn(self._process_batch(deliveries))
                else:
                    for delivery in deliveries:
                        self._spawn(self._process(delivery))
        finally:
            await self.drain()
            heartbeat.cancel()
            await self.cfg.admission.close()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.cfg.timeout + 1)

    async def _receive(self, limit: int) -> list[Delivery]:
        try:
            return await self.transport.receive(
                self.cfg.actor, max_messages=limit, wait=self.cfg.receive_wait,
                visibility=self.cfg.lease,
            )
        except TransportError as exc:
            log.warning("receive from %s failed: %s", self.cfg.actor, exc)
            await asyncio.sleep(min(self.cfg.receive_wait, 1.0))
            return []

    async def _fill_batch(self, got: list[Delivery], stop: asyncio.Event, *,
                          size: int) -> list[Delivery]:
        """Gather up to ``size`` (``batch.maxSize``, or fewer rate-limit tokens)
        messages, waiting at most ``batch.maxWait`` after the first one."""
        if not got:
            return got
        deadline = time.monotonic() + self.cfg.batch_wait
        while len(got) < size and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                more = await self.transport.receive(
                    self.cfg.actor, max_messages=size - len(got), wait=left,
                    visibility=self.cfg.lease,
                )
            except TransportError:
                break
            got.extend(more)
        return got

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._freed.set()

    async def _slot_freed(self, timeout: float) -> None:
        """Wait until a message's task ends (or ``timeout``): one event, rather than a
        callback on each of the ``concurrency`` tasks in flight per wait."""
        self._freed.clear()
        try:
            async with asyncio.timeout(timeout):
                await self._freed.wait()
        except TimeoutError:
            pass

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        """Extend the lease of messages whose handler runs long, so that a slow
        handler is not mistaken for a dead replica."""
        period = max(self.cfg.lease / 3, 0.05)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for delivery, started in list(self._inflight.values()):
                if now - started >= period:
                    try:
                        await self.transport.extend(delivery, visibility=self.cfg.lease)
                    except TransportError as exc:
                        log.warning("lease extension failed: %s", exc)

    # -- one message --------------------------------------------------------------

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
        return _Job(delivery, envelope, self.cfg.clock(), span)

    async def _process(self, delivery: Delivery) -> None:
        envelope = self._decode(delivery)
        if envelope is None:
            await self._poison(delivery)
            return
        self.cfg.observer.received(self.cfg.actor, envelope)
        job = self._job(delivery, envelope)
        self._inflight[id(delivery)] = (delivery, time.monotonic())
        try:
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
            self._inflight.pop(id(delivery), None)
            job.span.end()

    async def _process_batch(self, deliveries: list[Delivery]) -> None:
        jobs: list[_Job] = []
        for delivery in deliveries:
            envelope = self._decode(delivery)
            if envelope is None:
                await self._poison(delivery)
                continue
            self.cfg.observer.received(self.cfg.actor, envelope)
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
            self._inflight[id(job.delivery)] = (job.delivery, time.monotonic())
        try:
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
        finally:
            for job in jobs:
                self._inflight.pop(id(job.delivery), None)
                job.span.end()

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
        envelope = job.envelope
        hop = Hop(actor=self.cfg.actor, started=job.started, ended=self.cfg.clock(),
                  attempt=envelope.meta.attempt)
        traceparent = job.span.traceparent
        if self.cfg.mode == "envelope":
            children = self._from_envelopes(envelope, result)
        elif not result.fanned:
            # The common case: one copy, moved on, with the handler's payload.
            item = result.items[0]
            moved = envelope.advanced(
                hop=hop, headers={**envelope.headers, TRACEPARENT: traceparent},
                payload=envelope.payload if item is None else item)
            return [self._outgoing(moved)]
        else:
            children = envelope.fan_out(result.items)
        if result.fanned and not result.items:
            # An empty fan-out ends the envelope: it reaches happy-end with no children.
            children = [envelope.model_copy(update={"payload": [],
                                                    "route": _ended(envelope.route)})]
        return [self._outgoing(child.advanced(
                    hop=hop, headers={**child.headers, TRACEPARENT: traceparent}))
                for child in children]

    def _outgoing(self, moved: Envelope) -> Outgoing:
        if moved.route.curr not in self.cfg.actors:
            raise UnknownActorError(
                f"route names unknown actor {moved.route.curr!r} "
                f"(mesh has: {', '.join(sorted(self.cfg.actors))})"
            )
        body = moved.encode()
        if len(body) > self.cfg.max_bytes:
            raise MessageTooLarge(
                f"envelope {moved.id} is {len(body)} bytes, over {self.cfg.max_bytes}; "
                "pass large data by URL (file://, s3://)"
            )
        return Outgoing(moved.route.curr, body)

    def _from_envelopes(self, original: Envelope, result: Result) -> list[Envelope]:
        """Envelope mode: take ``next``, ``payload`` and ``headers`` from what the handler
        returned, after checking it left the history alone."""
        share = Fraction(original.meta.weight) / max(len(result.items), 1)
        children = []
        for index, item in enumerate(result.items):
            if not isinstance(item, dict):
                raise EnvelopeError(
                    f"an envelope-mode handler returns envelope dicts, got {type(item).__name__}"
                )
            returned = Envelope.from_dict({**item, "meta": original.meta.model_dump()})
            returned.check_history(original)
            env_id, meta = original.id, original.meta.model_copy()
            if result.fanned:
                env_id = f"{original.id}.{index}"
                meta = meta.model_copy(update={"parent_id": original.id,
                                               "root_id": original.root_id,
                                               "weight": str(share)})
            route = Route(prev=original.route.prev, curr=original.route.curr,
                          next=returned.route.next)
            children.append(original.model_copy(update={
                "id": env_id, "route": route, "payload": returned.payload,
                "headers": returned.headers, "meta": meta,
            }))
        return children

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
        self.cfg.observer.succeeded(self.cfg.actor, job.envelope, self.cfg.clock() - job.started)

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
        self.cfg.observer.succeeded(self.cfg.actor, job.envelope, self.cfg.clock() - job.started)

    # -- failures -------------------------------------------------------------------

    async def _fail(self, job: _Job, exc: BaseException) -> None:
        envelope = job.envelope
        self.cfg.admission.outcome(exc)
        decision = self.cfg.failure.decide(envelope, exc, actor=self.cfg.actor)
        info = ErrorInfo(
            type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            message=str(exc)[:4000],
            traceback="".join(traceback.format_exception(exc))[-8000:],
            actor=self.cfg.actor,
            attempt=envelope.meta.attempt,
            reason=decision.reason,
        )
        hop = Hop(actor=self.cfg.actor, started=job.started, ended=self.cfg.clock(),
                  attempt=envelope.meta.attempt)
        meta = envelope.meta.model_copy(update={"error": info, "hops": [*envelope.meta.hops, hop]})
        if decision.action == "retry":
            meta.attempt += 1
            target, delay = self.cfg.actor, decision.delay
        else:
            target, delay = decision.target, 0.0
        headers = {**envelope.headers, TRACEPARENT: job.span.traceparent}
        failed = envelope.model_copy(update={"meta": meta, "headers": headers})
        if target not in (ERROR_END, self.cfg.actor):
            failed = _handed_over(failed, target)
        job.span.end(exc)
        self.cfg.observer.failed(self.cfg.actor, envelope, exc, decision,
                                 self.cfg.clock() - job.started)
        body = failed.encode()
        if len(body) > self.cfg.max_bytes and target != ERROR_END:
            target, delay = ERROR_END, 0.0
        try:
            await self.transport.publish_and_ack([Outgoing(target, body, delay)], job.delivery)
        except TransportError as err:
            log.warning("routing a failure of %s failed, will be redelivered: %s",
                        envelope.id, err)
            await self._safe_nack(job.delivery, delay=1.0)

    async def _poison(self, delivery: Delivery) -> None:
        """A message that is not an envelope: record it at error-end, never retry it."""
        try:
            Envelope.decode(delivery.body, max_bytes=self.cfg.max_bytes)
            reason = "unreadable"
        except EnvelopeError as exc:
            reason = str(exc)
        self.cfg.observer.received(self.cfg.actor, None)
        digest = hashlib.sha1(delivery.queue.encode() + delivery.body).hexdigest()[:12]
        raw = delivery.body[:4096].decode("utf-8", errors="replace")
        poison = Envelope(
            id=f"poison-{digest}",
            route=Route(curr=self.cfg.actor),
            payload={"raw": raw, "bytes": len(delivery.body)},
        )
        poison.meta.root_id = poison.id
        poison.meta.error = ErrorInfo(type="asya_agents.errors.EnvelopeError", message=reason,
                                      actor=self.cfg.actor, reason="invalid-envelope")
        try:
            await self.transport.publish_and_ack([Outgoing(ERROR_END, poison.encode())], delivery)
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


def _ended(route: Route) -> Route:
    return Route(prev=route.prev, curr=route.curr, next=[])


def _handed_over(envelope: Envelope, target: str) -> Envelope:
    """A failed envelope sent to another actor (``onExhausted: review``): that actor
    stands in for the failed hop, so it becomes ``curr`` and the rest of the route is
    kept; ``meta.error`` still says what failed."""
    route = envelope.route
    meta = envelope.meta.model_copy(update={"attempt": 1})
    return envelope.model_copy(update={
        "route": Route(prev=[*route.prev, route.curr], curr=target, next=list(route.next)),
        "meta": meta,
    })

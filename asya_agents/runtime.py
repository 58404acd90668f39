"""The routing runtime: what every replica of every actor runs.

One loop per replica: lease messages from the actor's queue (never more than
``concurrency`` in flight, or a batch at a time; each receive tells the transport how
many the replica may hold now, the ``capacity`` a broker's prefetch follows), and hand
each to the
:class:`~asya_agents.worker.Worker`, which decodes the envelope, calls the handler (with
the actor's timeout), moves the route one hop on (:mod:`asya_agents.hop`), publishes
what the hop produced, and only then acks. A crash anywhere before the ack means the
message comes back after its lease expires: delivery is at-least-once, and ids are
stable (fan-out children are ``<id>.<i>``) so that ``happy-end`` records each id once.
While a handler runs long, the loop's heartbeat extends its message's lease.

Nothing here decides retries: a failure is handed to the actor's
:class:`~asya_agents.seams.FailurePolicy`, whose decision is acted on by publishing (a
delayed copy to retry, or the envelope to ``error-end``). An envelope that cannot be
read at all goes to ``error-end`` with the reason; no input crashes a replica or loops.

Other subsystems plug in through the seams of :mod:`asya_agents.seams`, without touching
this loop: the :class:`~asya_agents.seams.Clock` (injected through the constructor, so
tests drive heartbeats, batching and hop timings), :class:`~asya_agents.seams.Admission`
(may this replica take more work now? rate limits, circuit breaker, adaptive
concurrency), the failure policy, the :class:`~asya_agents.seams.Observer` (metrics,
logs) and the :class:`~asya_agents.seams.Tracer` (trace context, OpenTelemetry).

A ``fanIn`` actor runs the same loop with a worker of its own
(:class:`~asya_agents.fanin.GatherWorker`, passed in as ``worker``), whose
``background`` sweep runs beside the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable

from asya_agents.errors import TransportError
from asya_agents.handlers import Handler
from asya_agents.seams import Clock
from asya_agents.transports.base import Delivery, Transport
from asya_agents.worker import RuntimeConfig, Terminal, Worker, lease_for

__all__ = ["Runtime", "RuntimeConfig", "Terminal", "lease_for"]

log = logging.getLogger("asya.runtime")


class Runtime:
    """Runs one actor's replica loop against a transport."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        transport: Transport,
        handler: Handler | None = None,
        terminal: Terminal | None = None,
        clock: Clock | None = None,
        worker: Worker | None = None,
    ) -> None:
        if worker is None and (handler is None) == (terminal is None):
            raise ValueError("a runtime needs exactly one of handler or terminal")
        self.cfg = config
        self.clock = clock or Clock()
        self.transport = transport
        # A worker of its own: a fanIn actor's (asya_agents.fanin.GatherWorker).
        self.worker = worker or Worker(config, transport=transport, handler=handler,
                                       terminal=terminal, clock=self.clock)
        self._tasks: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    @property
    def in_flight(self) -> int:
        """Messages this replica holds now (read by the metrics)."""
        return len(self.worker.holding)

    @property
    def restart_needed(self) -> bool:
        """Whether this replica asks to be replaced (a sync handler overran its timeout
        and its thread cannot be stopped)."""
        return self.worker.restart_needed

    # -- the loop -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then let in-flight work finish (up to the
        actor's timeout) before returning."""
        self._freed = asyncio.Event()  # of this run's loop
        heartbeat = asyncio.create_task(self._heartbeat(stop))
        beside = asyncio.create_task(self.worker.background(stop))
        try:
            while not stop.is_set() and not self.restart_needed:
                await self.cfg.admission.wait(stop)
                if stop.is_set():
                    break
                limit = self.cfg.admission.limit(self.cfg.concurrency)
                free = limit - len(self._tasks)
                if free <= 0:
                    await self._slot_freed(self.cfg.receive_wait)
                    continue
                granted = await self.cfg.admission.acquire(self.cfg.batch_size or free, stop)
                if granted <= 0:
                    continue
                capacity = self._capacity(limit)
                deliveries = await self._receive(granted, capacity=capacity)
                if self.cfg.batch_size:
                    deliveries = await self._fill_batch(deliveries, stop, size=granted,
                                                        capacity=capacity)
                await self.cfg.admission.release(granted - len(deliveries))
                if self.cfg.batch_size:
                    if deliveries:
                        self._spawn(self.worker.process_batch(deliveries))
                else:
                    for delivery in deliveries:
                        self._spawn(self.worker.process(delivery))
        finally:
            await self.drain()
            heartbeat.cancel()
            beside.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beside
            self.worker.close()
            await self.cfg.admission.close()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.cfg.timeout + 1)

    def _capacity(self, limit: int) -> int:
        """How many messages this replica may hold at once: the live limit (adaptive
        concurrency and the breaker move it), times the batch size for a batch actor
        (``limit`` batches may run at once)."""
        return limit * (self.cfg.batch_size or 1)

    async def _receive(self, limit: int, *, capacity: int) -> list[Delivery]:
        try:
            return await self.transport.receive(
                self.cfg.actor, max_messages=limit, wait=self.cfg.receive_wait,
                visibility=self.cfg.lease, capacity=capacity,
            )
        except TransportError as exc:
            log.warning("receive from %s failed: %s", self.cfg.actor, exc)
            await asyncio.sleep(min(self.cfg.receive_wait, 1.0))
            return []

    async def _fill_batch(self, got: list[Delivery], stop: asyncio.Event, *,
                          size: int, capacity: int) -> list[Delivery]:
        """Gather up to ``size`` (``batch.maxSize``, or fewer rate-limit tokens)
        messages, waiting at most ``batch.maxWait`` after the first one."""
        if not got:
            return got
        deadline = self.clock.monotonic() + self.cfg.batch_wait
        while len(got) < size and not stop.is_set():
            left = deadline - self.clock.monotonic()
            if left <= 0:
                break
            try:
                more = await self.transport.receive(
                    self.cfg.actor, max_messages=size - len(got), wait=left,
                    visibility=self.cfg.lease, capacity=capacity,
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
            now = self.clock.monotonic()
            for delivery, started in list(self.worker.holding.values()):
                if now - started >= period:
                    try:
                        await self.transport.extend(delivery, visibility=self.cfg.lease)
                    except TransportError as exc:
                        log.warning("lease extension failed: %s", exc)


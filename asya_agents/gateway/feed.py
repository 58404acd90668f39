"""The one tail loop of a gateway: hop events in, fanned out to the streams that watch.

However many clients watch however many jobs, a gateway reads the event feed
(:mod:`asya_agents.stores.events`) once: :meth:`Feed.run` follows ``seq`` (SQLite: a
read every ``poll_interval`` while idle, an indexed range scan; PostgreSQL: it sleeps
until an append's ``NOTIFY``) and hands each event to the :class:`Watch` of every
stream open on its job. A watch is registered *before* its stream replays the table,
so an event that lands in between reaches it both ways, and the stream drops what it
has already sent (by ``seq``).

Every ``reconcile_interval`` the loop also asks the result store, in one query for all
watched jobs, which of them have ended, and nudges their watches: an event lost with a
killed replica (written after its ack) then costs a stream one hop line, never its
``end``. Every hour (and at start) it drops events older than the retention
(``ASYA_GATEWAY_EVENTS_RETENTION``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from asya_agents.errors import StoreError
from asya_agents.stores.base import ResultStore
from asya_agents.stores.events import EventStore, HopEvent
from asya_agents.stores.sql import PostgresListener

__all__ = ["NUDGE", "PRUNE_EVERY", "Feed", "Watch"]

log = logging.getLogger("asya.gateway")
_BATCH = 1000
#: Put on a watch when the result store says its job may have changed status.
NUDGE = "nudge"
#: Seconds between prunings of events past their retention (the first at start).
PRUNE_EVERY = 3600.0


@dataclass(eq=False)
class Watch:
    """One stream's view of the feed: the events of its job, and nudges."""

    job: str
    queue: asyncio.Queue[HopEvent | str] = field(default_factory=asyncio.Queue)

    async def next(self, stopping: asyncio.Event) -> HopEvent | str | None:
        """The next event or :data:`NUDGE`; ``None`` once ``stopping`` is set."""
        if stopping.is_set():
            return None
        if not self.queue.empty():
            return self.queue.get_nowait()
        getting = asyncio.ensure_future(self.queue.get())
        stopped = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait({getting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not getting.done():
                getting.cancel()
        return getting.result() if getting.done() and not getting.cancelled() else None


class Feed:
    """Follows ``events`` and fans them out to :meth:`watch`-ers."""

    def __init__(self, events: EventStore, results: ResultStore, *,
                 poll_interval: float = 0.002, reconcile_interval: float = 1.0,
                 retention: float = 7 * 24 * 3600.0) -> None:
        self.events, self.results = events, results
        self.poll_interval = poll_interval
        self.reconcile_interval = reconcile_interval
        self.retention = retention
        self.seq = 0
        self._watches: dict[str, set[Watch]] = {}
        self._listener: PostgresListener | None = None

    @property
    def watched(self) -> int:
        """Open watches (the gateway's open streams and calls)."""
        return sum(len(w) for w in self._watches.values())

    @contextlib.asynccontextmanager
    async def watch(self, job: str) -> AsyncIterator[Watch]:
        """A watch on ``job`` for the length of a ``with`` block."""
        watch = Watch(job)
        self._watches.setdefault(job, set()).add(watch)
        try:
            yield watch
        finally:
            watches = self._watches.get(job, set())
            watches.discard(watch)
            if not watches:
                self._watches.pop(job, None)

    # -- the loop -----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin at the feed's end: streams replay what came before from the table."""
        self.seq = await asyncio.to_thread(self.events.last_seq)
        self._listener = await asyncio.to_thread(self.events.listener)

    async def run(self, stop: asyncio.Event) -> None:
        """Tail the feed until ``stop``; a store error is logged and retried."""
        next_reconcile = time.monotonic() + self.reconcile_interval
        next_prune = time.monotonic()
        try:
            while not stop.is_set():
                try:
                    read = await self._read()
                    if time.monotonic() >= next_reconcile:
                        next_reconcile = time.monotonic() + self.reconcile_interval
                        await self._reconcile()
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + PRUNE_EVERY
                        await self._prune()
                except StoreError as exc:
                    log.warning("reading the event feed failed, retrying: %s", exc)
                    read = 0
                if read < _BATCH:
                    await self._idle(stop)
        finally:
            if self._listener is not None:
                await asyncio.to_thread(self._listener.close)

    async def _read(self) -> int:
        # A SQLite read in WAL mode is a short local call, made on the loop; a
        # PostgreSQL one crosses the network and runs on a thread.
        if self._listener is None:
            rows = self.events.after(self.seq, limit=_BATCH)
        else:
            rows = await asyncio.to_thread(self.events.after, self.seq, limit=_BATCH)
        for event in rows:
            self.seq = event.seq
            for watch in self._watches.get(event.root_id, ()):
                watch.queue.put_nowait(event)
        return len(rows)

    async def _idle(self, stop: asyncio.Event) -> None:
        if self._listener is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_interval)
            return
        await asyncio.to_thread(self._listener.wait, min(self.reconcile_interval, 0.5))

    async def _prune(self) -> None:
        """Drop events older than the retention (a resume cannot reach past it)."""
        gone = await asyncio.to_thread(self.events.prune, time.time() - self.retention)
        if gone:
            log.info("pruned %d hop event(s) older than %gs", gone, self.retention)

    async def _reconcile(self) -> None:
        jobs = list(self._watches)
        if not jobs:
            return
        weights = await asyncio.to_thread(self.results.ended_weight, jobs)
        for job, weight in weights.items():
            if weight >= 1 - 1e-9:
                for watch in self._watches.get(job, ()):
                    watch.queue.put_nowait(NUDGE)

"""Following one job to its end: the stream every protocol of the gateway is built on.

Server-Sent Events send it as it is, MCP turns its hops into progress notifications,
A2A into task status updates. :func:`follow` first replays the job's events from the
feed past ``after`` (an SSE ``Last-Event-ID``), then goes live on a
:class:`~asya_agents.gateway.feed.Watch`, and yields:

- ``hop`` (an actor handled a piece: ``hop``, ``retry``, ``error``) and ``piece`` (a
  piece ``succeeded``, ``failed``, was ``paused`` or ``resumed``), each with the feed's
  ``seq`` as its id, so a reconnect resumes exactly after the last one it got;
- ``status`` when the status of the whole job changes (first, the status it has);
- ``end`` with the final status once the job reaches one of ``until``;
- ``shutdown`` when the gateway stops first (reconnect with the last id).

A status is read from the result store only when an event may have changed it (a
piece ended, or the first hop of a queued or paused job), or when the feed nudges.
The store may record a piece a moment before its event reaches the feed, so a job
that has finished waits briefly for the end events of its pieces before ``end``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asya_agents.gateway.feed import Feed, Watch
from asya_agents.gateway.jobs import FINISHED, Job, Jobs
from asya_agents.stores.events import HopEvent

__all__ = ["LAST_EVENTS_WAIT", "PIECE_KINDS", "StreamEvent", "follow"]

#: Feed kinds that end (or reopen) a piece: the job's status may have changed.
PIECE_KINDS = ("succeeded", "failed", "paused", "resumed")
#: Seconds a finished job's stream waits for end events the store was quicker than.
LAST_EVENTS_WAIT = 1.0


@dataclass(frozen=True)
class StreamEvent:
    """One event of a job's stream; ``id`` is the feed's seq (hop and piece events)."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)
    id: int | None = None

    @classmethod
    def of(cls, hop: HopEvent) -> StreamEvent:
        kind = "piece" if hop.kind in PIECE_KINDS else "hop"
        return cls(kind, hop.to_json(), hop.seq)


class _Follower:
    def __init__(self, jobs: Jobs, job: Job, *, seen: int) -> None:
        self.jobs, self.job, self.status = jobs, job, job.status
        self.seen = seen
        #: Whether the feed carries this job's events at all (its mesh writes them).
        self.evented = False
        #: Pieces whose end (or pause) event was sent.
        self.ended: set[str] = set()

    def status_event(self) -> StreamEvent:
        return StreamEvent("status", {"job": self.job.id, "status": self.status})

    def sent(self, hop: HopEvent) -> StreamEvent:
        self.seen, self.evented = hop.seq, True
        if hop.kind in PIECE_KINDS:
            (self.ended.discard if hop.kind == "resumed" else self.ended.add)(hop.piece)
        return StreamEvent.of(hop)

    async def changed(self) -> bool:
        """Read the job's status again; whether it changed."""
        self.job = await self.jobs.get(self.job.id)
        changed, self.status = self.job.status != self.status, self.job.status
        return changed

    def may_change(self, hop: HopEvent) -> bool:
        return hop.kind in PIECE_KINDS or self.status in ("queued", "paused")

    def missing(self) -> bool:
        """Whether an ended piece's event is still to come: the store can record a
        piece (and the stream see the job end) a moment before its event is written."""
        return self.evented and any(r.id not in self.ended for r in self.job.results)


async def _last_pieces(me: _Follower, watch: Watch,
                       stopping: asyncio.Event) -> AsyncIterator[StreamEvent]:
    """The end events of pieces the store recorded before the feed had them, waiting
    for them at most :data:`LAST_EVENTS_WAIT` (an event lost with a killed replica
    must not hold the stream's end)."""
    deadline = asyncio.get_running_loop().time() + LAST_EVENTS_WAIT
    while me.missing():
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            return
        try:
            item = await asyncio.wait_for(watch.next(stopping), left)
        except TimeoutError:
            return
        if item is None:
            return
        if isinstance(item, HopEvent) and item.seq > me.seen:
            yield me.sent(item)


async def follow(jobs: Jobs, feed: Feed, job: str, *, after: int = 0,
                 until: tuple[str, ...] = FINISHED,
                 stopping: asyncio.Event) -> AsyncIterator[StreamEvent]:
    """The stream of ``job`` (module docstring);
    :class:`~asya_agents.errors.JobNotFound` before the first event if there is no such
    job."""
    me = _Follower(jobs, await jobs.get(job), seen=after)
    async with feed.watch(job) as watch:
        for hop in await jobs.events_of(job, after=after):
            yield me.sent(hop)
        me.evented = me.evented or after > 0
        await me.changed()
        yield me.status_event()
        while me.status not in until:
            item = await watch.next(stopping)
            if item is None:
                yield StreamEvent("shutdown", {
                    "job": job, "status": me.status,
                    "reason": "the gateway is stopping: reconnect with Last-Event-ID"})
                return
            if isinstance(item, HopEvent):
                if item.seq <= me.seen:
                    continue  # replayed already
                yield me.sent(item)
                if not me.may_change(item):
                    continue
            if await me.changed():
                yield me.status_event()
        async for event in _last_pieces(me, watch, stopping):
            yield event
        yield StreamEvent("end", {"job": job, "status": me.status})

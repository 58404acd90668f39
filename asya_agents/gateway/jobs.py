"""Jobs: what the gateway does with a mesh, whichever protocol asked (HTTP, MCP, A2A).

A *job* is one root envelope and every fan-out piece it becomes. Submitting builds the
envelope the way ``asya send`` does (:meth:`MeshContext.route` checks the actors,
:meth:`Envelope.create` builds it) and enqueues it; the job's status and results are
read from the mesh's result store, its hops from the event feed. Nothing about a job
lives in the gateway's memory, so any gateway replica, or a restarted one, answers the
same.

Submissions are group-committed: the envelopes of requests that arrive while one send
is running go out together in the next transport call, and their rows in one
transaction, so a burst of clients costs one broker round trip per group rather than
per request.

Status of a job, from the records of its pieces (``ended_weight``: the weights of the
ended pieces sum to 1 once all have ended): all ended and one ``paused`` -> ``paused``
(a person decides); all ended, one ``failed`` -> ``failed``; all ended -> ``succeeded``;
otherwise ``running`` once any piece ended or hopped, else ``queued``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from asya_agents.context import SEND_CHUNK, MeshContext
from asya_agents.envelope import MAX_ENVELOPE_BYTES, Envelope, new_id
from asya_agents.errors import JobConflict, JobNotFound, MessageTooLarge
from asya_agents.review import DecideResult, ReviewItem, ReviewService
from asya_agents.stores.base import ResultRecord
from asya_agents.stores.events import EventStore, HopEvent, NewEvent
from asya_agents.stores.jobs import JobRow, JobStore
from asya_agents.transports import Backend, Outgoing

__all__ = ["FINISHED", "STATUSES", "Job", "Jobs", "Submitted", "status_of"]

STATUSES = ("queued", "running", "paused", "succeeded", "failed")
#: Statuses a job leaves no more (a paused job does, on a decision).
FINISHED = ("succeeded", "failed")


def status_of(records: list[ResultRecord], *, started: bool) -> str:
    """The status of a job whose ended pieces are ``records`` (module docstring)."""
    if sum((Fraction(r.weight) for r in records), Fraction(0)) >= 1:
        states = {r.status for r in records}
        for status in ("paused", "failed"):
            if status in states:
                return status
        return "succeeded"
    return "running" if records or started else "queued"


@dataclass(frozen=True)
class Job:
    """A job as the API shows it: ``GET /v1/jobs/{id}``."""

    id: str
    status: str
    results: list[ResultRecord]
    cancelled: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status,
                "results": [r.to_json() for r in self.results]}


@dataclass(frozen=True)
class Submitted:
    """A submission's answer; ``repeat`` when an Idempotency-Key found an earlier one."""

    id: str
    status: str
    repeat: bool = False


def _body_hash(payload: Any, route: list[str] | None) -> str:
    text = json.dumps({"payload": payload, "route": route}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _keyed_id(client: str, key: str) -> str:
    """The job id of ``key`` for ``client``: the same on every gateway, every time."""
    return hashlib.sha256(f"{client}\0{key}".encode()).hexdigest()[:16]


class _Sender:
    """Group commit of submissions (module docstring)."""

    def __init__(self, transport: Backend, table: JobStore, *, inline: bool) -> None:
        self.transport, self.table, self.inline = transport, table, inline
        self._waiting: list[tuple[Outgoing, JobRow, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def send(self, outgoing: Outgoing, row: JobRow) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((outgoing, row, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting[:SEND_CHUNK], self._waiting[SEND_CHUNK:]
            try:
                await self.transport.send([out for out, _, _ in group])
                rows = [row for _, row, _ in group]
                if self.inline:
                    self.table.record(rows)
                else:
                    await asyncio.to_thread(self.table.record, rows)
            except Exception as exc:  # each caller gets the error, whatever it is
                for *_, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for *_, done in group:
                if not done.done():
                    done.set_result(None)

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


class Jobs:
    """Submit, read, cancel and decide the jobs of one mesh, on ``transport``."""

    def __init__(self, ctx: MeshContext, transport: Backend, *, events: EventStore,
                 table: JobStore, clock: Callable[[], float] = time.time) -> None:
        self.ctx, self.transport, self.events, self.table = ctx, transport, events, table
        self.clock = clock
        self.results = ctx.results()
        self.reviews = ReviewService(ctx.reviews(), transport, self.results, mesh=ctx.name,
                                     clock=clock)
        entry = ctx.loaded.actors[ctx.loaded.route[0]].spec
        #: The largest envelope the entry actor takes (what a replica would refuse).
        self.max_bytes = min(entry.maxMessageBytes or MAX_ENVELOPE_BYTES,
                             transport.max_message_bytes)
        self._sender = _Sender(transport, table, inline=table.db.dialect == "sqlite")
        self._route = ctx.route()  # mesh.yaml's, checked once

    async def start(self) -> None:
        """Declare the mesh's queues (once, rather than on every send)."""
        await self.transport.ensure_queues(sorted(self.ctx.loaded.actor_names))

    async def close(self) -> None:
        await self._sender.close()
        self.reviews.close()

    # -- submitting -----------------------------------------------------------------------

    async def submit(self, payload: Any, *, route: list[str] | None = None, client: str,
                     key: str | None = None) -> Submitted:
        """Enqueue a job; with ``key``, a repeat answers with the job it started.
        :class:`~asya_agents.errors.UnknownActorError` names unknown actors of ``route``,
        :class:`~asya_agents.errors.MessageTooLarge` a payload past the size limit,
        :class:`~asya_agents.errors.JobConflict` a key reused with another body."""
        actors = self.ctx.route(route) if route else self._route
        body_hash = _body_hash(payload, route) if key else ""
        job_id = _keyed_id(client, key) if key else new_id()
        if key:
            earlier = await asyncio.to_thread(self.table.get, job_id)
            if earlier is not None:
                if earlier.body_hash != body_hash:
                    raise JobConflict(f"Idempotency-Key {key!r} was used for job "
                                      f"{job_id} with another body")
                return Submitted(job_id, (await self.get(job_id)).status, repeat=True)
        envelope = Envelope.create(payload, actors, id=job_id, now=self.clock())
        body = envelope.encode()
        if len(body) > self.max_bytes:
            raise MessageTooLarge(f"the job's envelope is {len(body)} bytes, over the "
                                  f"limit of {self.max_bytes} (send large data by URL)")
        row = JobRow(id=job_id, client=client, idem_key=key, body_hash=body_hash,
                     created_at=self.clock())
        await self._sender.send(Outgoing(envelope.route.curr, body), row)
        return Submitted(job_id, "queued")

    # -- reading --------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        """The job's status and ended records; :class:`JobNotFound` if no job has
        ``job_id`` (none submitted here, none ended, none hopped)."""
        # one trip to a thread for the three reads: a stream reads a job on every
        # change, and each trip costs more than the reads themselves
        return await asyncio.to_thread(self._read, job_id)

    def _read(self, job_id: str) -> Job:
        records = self.results.pieces(job_id)
        row = self.table.get(job_id)
        started = bool(records) or bool(self.events.started([job_id]))
        if not records and row is None and not started:
            raise JobNotFound(f"no job {job_id!r} in mesh {self.ctx.name}")
        cancelled = row is not None and row.cancelled_at is not None
        return Job(job_id, status_of(records, started=started), records, cancelled)

    async def events_of(self, job_id: str, *, after: int = 0) -> list[HopEvent]:
        """The job's events past ``after`` (a stream's ``Last-Event-ID``)."""
        return await asyncio.to_thread(self.events.for_root, job_id, after=after)

    # -- deciding and cancelling ----------------------------------------------------------

    async def waiting(self, job_id: str) -> list[ReviewItem]:
        """The job's pieces parked for a person, not yet decided."""
        items = await asyncio.to_thread(self.reviews.store.pending, mesh=self.ctx.name)
        return [i for i in items
                if (i.envelope.get("meta") or {}).get("root_id", i.id) == job_id]

    async def decide(self, job_id: str, *, decision: str, reviewer: str,
                     notes: str | None = None, payload: Any = None,
                     piece: str | None = None) -> list[DecideResult]:
        """Decide the job's waiting pieces (or ``piece``) through the review service:
        a compare-and-set, so a decision the console took first wins and this one
        raises :class:`JobConflict` naming who took it."""
        items = [i for i in await self.waiting(job_id) if piece in (None, i.id)]
        if not items:
            job = await self.get(job_id)
            raise JobConflict(f"job {job_id} waits for no decision (it is {job.status})"
                              + (f"; no piece {piece!r} waits" if piece else ""))
        results = [await self.reviews.adecide(i.id, decision=decision, reviewer=reviewer,
                                              notes=notes, payload=payload) for i in items]
        won = [r for r in results if r.won]
        if not won:
            first = results[0].item
            raise JobConflict(f"job {job_id} was decided already ({first.decision} by "
                              f"{first.decided_by})")
        await asyncio.to_thread(self.events.append, [
            NewEvent(root_id=job_id, piece=r.item.id, actor=r.item.actor, kind="resumed",
                     at=self.clock(), data={"decision": decision, "reviewer": reviewer})
            for r in won])
        return won

    async def cancel(self, job_id: str, *, client: str) -> Job:
        """Cancel a job that waits for a person: its waiting pieces are rejected (they
        end at error-end, reason ``rejected-in-review``). Pieces already on a queue
        cannot be recalled, so a queued or running job raises :class:`JobConflict`,
        as does a finished one."""
        job = await self.get(job_id)
        if job.status != "paused":
            raise JobConflict(f"job {job_id} is {job.status}: only a job that waits for "
                              "a person can be cancelled (pieces already on a queue "
                              "cannot be recalled)")
        await asyncio.to_thread(self.table.record, [JobRow(
            id=job_id, client=client, idem_key=None, body_hash="", created_at=self.clock())])
        await asyncio.to_thread(self.table.mark_cancelled, job_id, by=client,
                                at=self.clock())
        await self.decide(job_id, decision="reject", reviewer=f"gateway:{client}",
                          notes=f"cancelled by {client}")
        return await self.get(job_id)

"""Fan-in: a ``spec.fanIn`` actor gathers the children of one fan-out and calls its
handler once per group.

A child's nearest fan-out is the last frame of its ``meta.fanout``: the group is that
frame's parent, the child's place is its ``index``, and its ``share`` of the parent is
what completes the group (a list's children have ``1/n`` each, a generator's the shares
of :class:`~asya_agents.envelope.StreamShares`): the group is complete when the shares
of its children add up to exactly 1. Nothing is kept in a replica: each child is
recorded in the group store (:mod:`asya_agents.stores.groups`) before its delivery is
acked, so a SIGKILLed replica loses nothing, and any replica may finish a group.

Finishing is an outbox. The finisher claims the group, builds the gathered envelope
(the handler gets the payloads in fan-out order, or the envelopes in envelope mode, and
returns one payload), stores it, publishes it and only then marks the group done. The
gathered envelope has the parent's id, weight and place in the outer fan-outs (the
frame popped), and goes on along the route the children had after the gather (they
must agree). A finisher that dies leaves a claim that runs out: the sweep, or a
redelivered child, takes over and publishes the *stored* envelope, so a group is never
gathered into two different envelopes; a crash between publishing and marking done
publishes the same envelope (same id) once more, which the ends absorb like any
redelivery.

A failed child reaches the gather as well (the runtime sends a failure bound for
``error-end`` on to the first ``fanIn`` actor of its route,
:meth:`Router.failed_to_gather`: a handler error, ``hop-limit``, ``delivery-limit``
from the worker, and error-end's sweep of the brokers' dead-letter queues alike; one
dead-lettered from the gather's own queue comes back to it failed, and so does one
the gather itself takes past ``maxDeliveries``):
by default it fails the group at once, with reason ``fan-in-child-failed``; with
``partial: true`` it is listed in ``meta.fanin.failed`` of the gathered envelope. A
group that waits past ``timeout`` from its first child ends the same way (reason
``fan-in-timeout``), found by the sweep each replica runs every ``sweep_every``
seconds. Errors of the gather itself (no fan-out group, children that disagree on the
route, a handler that returns a list) end the group at ``error-end`` with a reason of
:class:`~asya_agents.errors.FanInError`, never retried; any other error of the handler
goes to the actor's retry policies like any hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TypeVar

from asya_agents.envelope import (
    ERROR_END,
    ChildFailure,
    Envelope,
    Gathered,
    Hop,
    Route,
    new_id,
)
from asya_agents.errors import FanInError, StoreError, TransportError
from asya_agents.handlers import Handler
from asya_agents.hop import delivery_limit_error, error_info
from asya_agents.seams import Clock, Decision, HopSpan, reason_of
from asya_agents.stores.groups import GroupRow, GroupStore, Member
from asya_agents.transports.base import Delivery, Outgoing, Transport
from asya_agents.worker import RuntimeConfig, Worker, _Job

__all__ = ["OUTCOMES", "RETENTION", "GatherWorker"]

log = logging.getLogger("asya.fanin")

#: Done groups are remembered this long (seconds), so a very late copy of a child is
#: known as one; then they are purged.
RETENTION = 24 * 3600.0
#: What the counters of a gather count (``asya_fanin_groups_total{outcome}``).
OUTCOMES = ("opened", "gathered", "failed", "timeout")

T = TypeVar("T")


class GatherWorker(Worker):
    """The worker of a ``fanIn`` actor: records children, finishes complete groups."""

    def __init__(self, config: RuntimeConfig, *, transport: Transport, handler: Handler,
                 store: GroupStore, clock: Clock) -> None:
        if config.fan_in is None:
            raise ValueError(f"actor {config.actor!r} has no spec.fanIn")
        super().__init__(config, transport=transport, handler=handler, terminal=None,
                         clock=clock)
        self.timeout, self.partial = config.fan_in
        self.store = store
        self.token = new_id()
        #: Groups opened and ended here, by outcome (read by the metrics).
        self.groups: dict[str, int] = dict.fromkeys(OUTCOMES, 0)

    def close(self) -> None:
        self.store.close()

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self.store.inline_writes:
            return fn(*args, **kwargs)
        return await asyncio.to_thread(fn, *args, **kwargs)

    # -- a child arrives -----------------------------------------------------------------

    async def _handle(self, job: _Job) -> None:
        await self._take(job.delivery, job.envelope, job.started, job.span)

    async def process_batch(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:  # a gather never batches (the manifest refuses it)
            await self.process(delivery)

    async def _take(self, delivery: Delivery, envelope: Envelope, started: float,
                    span: HopSpan) -> None:
        try:
            self._check_addressed(envelope)
            if not envelope.meta.fanout:
                raise FanInError(
                    f"envelope {envelope.id} reached fanIn actor {self.cfg.actor!r} but "
                    "descends from no fan-out (meta.fanout is empty): an actor before it "
                    "must return a list or yield", reason="fan-in-no-group")
        except Exception as exc:
            await self._end(delivery, envelope, exc, started=started, span=span)
            return
        if self._over_limit(delivery):
            envelope = self._failed_here(envelope, delivery)
        frame = envelope.meta.fanout[-1]
        member = Member(envelope.id, frame.index, frame.share,
                        envelope.meta.error is not None, envelope.to_dict())
        try:
            added = await self._db(self.store.add, self.cfg.actor, frame.parent, member,
                                   now=self.clock.time(), timeout=self.timeout,
                                   partial=self.partial)
        except StoreError as exc:
            log.warning("%s could not record %s in its group: %s", self.cfg.actor,
                        envelope.id, exc)
            await self._safe_nack(delivery, delay=1.0)
            return
        if added.opened:
            self.groups["opened"] += 1
        if added.group.state == "ready" and not added.duplicate:
            await self._finish(frame.parent, delivery, started=started)
        else:
            await self._ack(delivery)
        self.cfg.observer.succeeded(self.cfg.actor, envelope, self.clock.time() - started)

    def _failed_here(self, envelope: Envelope, delivery: Delivery) -> Envelope:
        """A child delivered past ``maxDeliveries``: a failed member of its group."""
        assert self.cfg.max_deliveries is not None
        exc = delivery_limit_error(envelope, deliveries=delivery.delivery_count,
                                   limit=self.cfg.max_deliveries)
        error = error_info(exc, actor=self.cfg.actor, attempt=envelope.meta.attempt,
                           reason=reason_of(exc))
        return envelope.model_copy(update={
            "meta": envelope.meta.model_copy(update={"error": error})})

    async def _end(self, delivery: Delivery, envelope: Envelope, exc: BaseException, *,
                   started: float, span: HopSpan) -> None:
        """An envelope the gather cannot take: to error-end with the reason."""
        decision = Decision("route", target=ERROR_END, reason=_reason(exc))
        hop = Hop(actor=self.cfg.actor, started=started, ended=self.clock.time(),
                  attempt=envelope.meta.attempt)
        failed = self.router.failure(envelope, exc, decision, hop=hop,
                                     traceparent=span.traceparent)
        self.cfg.observer.failed(self.cfg.actor, envelope, exc, decision,
                                 self.clock.time() - started)
        try:
            await self.transport.publish_and_ack([failed], delivery)
        except TransportError as err:
            log.warning("routing a failure of %s failed, will be redelivered: %s",
                        envelope.id, err)
            await self._safe_nack(delivery, delay=1.0)

    async def _ack(self, delivery: Delivery | None) -> None:
        if delivery is None:
            return
        try:
            await self.transport.ack(delivery)
        except TransportError as exc:  # recorded already: its copy is a duplicate
            log.warning("ack failed, the copy will come back as a duplicate: %s", exc)

    # -- a group ends ----------------------------------------------------------------------

    async def _finish(self, group: str, delivery: Delivery | None, *,
                      started: float) -> None:
        """Claim ``group``, build (or take the stored) gathered envelope, publish it
        (acking ``delivery`` with it), then mark the group done."""
        now = self.clock.time()
        until = now + self.cfg.timeout + self.cfg.lease
        try:
            claim = await self._db(self.store.claim, self.cfg.actor, group,
                                   token=self.token, now=now, until=until)
            outbox = claim.group.outbox
            if claim.action in ("busy", "done"):
                await self._ack(delivery)
                return
            if outbox is None:
                built = await self._build(claim.group, started=started)
                if built is None:  # the handler failed and is retried later
                    await self._ack(delivery)
                    return
                message, outcome = built
                outbox = await self._db(self.store.store_outbox, self.cfg.actor, group,
                                        queue=message.queue, body=message.body.decode(),
                                        outcome=outcome)
        except StoreError as exc:
            log.warning("%s could not finish group %s: %s", self.cfg.actor, group, exc)
            if delivery is not None:
                await self._safe_nack(delivery, delay=1.0)
            return
        await self._publish_outbox(group, Outgoing(outbox[0], outbox[1].encode()), delivery)

    async def _publish_outbox(self, group: str, message: Outgoing,
                              delivery: Delivery | None) -> None:
        try:
            if delivery is None:
                await self.transport.send([message])
            else:
                await self.transport.publish_and_ack([message], delivery)
        except TransportError as exc:
            # The outbox is stored: a redelivered child or the sweep publishes it.
            log.warning("publishing group %s from %s failed: %s", group, self.cfg.actor,
                        exc)
            if delivery is not None:
                await self._safe_nack(delivery, delay=1.0)
            return
        try:
            outcome = await self._db(self.store.finish, self.cfg.actor, group,
                                     now=self.clock.time())
        except StoreError as exc:  # published: the sweep publishes it again, same id
            log.warning("marking group %s done failed: %s", group, exc)
            return
        if outcome in self.groups:
            self.groups[outcome] += 1

    async def _build(self, row: GroupRow, *, started: float
                     ) -> tuple[Outgoing, str] | None:
        """The message that ends ``row``'s group and its outcome; ``None`` when the
        handler failed and a retry policy asks for another attempt."""
        members = await self._db(self.store.members, self.cfg.actor, row.group)
        ok = [m for m in members if not m.failed]
        stub = self._stub(row, ok, members)
        span = self.cfg.tracer.start(self.cfg.actor, stub.headers, envelope_id=stub.id,
                                     attempt=row.attempt)
        outcome = "timeout" if row.ending == "timeout" else "gathered"
        try:
            out = await self._payload(row, ok, members, stub)
            message = self._gathered(stub, out, started=started, span=span)
        except Exception as exc:
            span.end(exc)
            return await self._failed_group(row, stub, exc, started=started,
                                            traceparent=span.traceparent)
        span.end()
        return message, outcome

    async def _failed_group(self, row: GroupRow, stub: Envelope, exc: Exception, *,
                            started: float, traceparent: str) -> tuple[Outgoing, str] | None:
        """A group that cannot be gathered: its failure for error-end, or ``None`` when
        the handler's error is retried (the claim let go until the retry is due)."""
        if isinstance(exc, FanInError):
            decision = Decision("route", target=ERROR_END, reason=exc.reason)
        else:
            decision = self.cfg.failure.decide(stub, exc, actor=self.cfg.actor)
        self.cfg.observer.failed(self.cfg.actor, stub, exc, decision,
                                 self.clock.time() - started)
        if decision.action == "retry":
            await self._db(self.store.release, self.cfg.actor, row.group,
                           until=self.clock.time() + decision.delay)
            return None
        hop = Hop(actor=self.cfg.actor, started=started, ended=self.clock.time(),
                  attempt=row.attempt)
        failed = self.router.failure(stub, exc, decision, hop=hop, traceparent=traceparent)
        return failed, "timeout" if decision.reason == "fan-in-timeout" else "failed"

    def _stub(self, row: GroupRow, ok: list[Member], members: list[Member]) -> Envelope:
        """The gathered envelope before its handler ran: the parent's id, weight and
        outer fan-outs, the first child's history and headers, ``meta.fanin``."""
        first = Envelope.from_dict((ok or members)[0].envelope)
        frame, stack = first.meta.fanout[-1], first.meta.fanout[:-1]
        failed = [ChildFailure(id=m.child_id, index=m.index, error=_brief(m.envelope))
                  for m in members if m.failed]
        missing = 1 - Fraction(row.received) if row.ending == "timeout" else Fraction(0)
        info = Gathered(children=len(ok), failed=failed, missing=str(max(missing, 0)),
                        ending="timeout" if row.ending == "timeout" else "complete")
        meta = first.meta.model_copy(update={
            "weight": str(Fraction(first.meta.weight) / Fraction(frame.share)),
            "parent_id": stack[-1].parent if stack else None, "fanout": stack,
            "attempt": row.attempt, "error": None, "fanin": info, "delivery_count": None})
        route = Route(prev=first.route.prev, curr=self.cfg.actor, next=first.route.next)
        return first.model_copy(update={"id": row.group, "route": route, "meta": meta,
                                        "payload": None})

    async def _payload(self, row: GroupRow, ok: list[Member], members: list[Member],
                       stub: Envelope) -> dict[str, Any]:
        """Call the handler on the group; what the gathered envelope takes from it
        (``payload``, and in envelope mode ``headers`` and ``next``)."""
        self._check_ending(row, ok, members, stub)
        nxt = _agreed_next(self.cfg.actor, ok)
        if self.cfg.mode == "envelope":
            arg: list[Any] = [m.envelope for m in ok]
        else:
            arg = [m.envelope.get("payload") for m in ok]
        result = await self._call(arg)
        if result.fanned:
            raise FanInError(
                f"the handler of fanIn actor {self.cfg.actor!r} returned "
                f"{len(result.items)} items (a list or a generator) for group {row.group}; "
                "a gather returns one payload", reason="fan-in-result")
        item = result.items[0]
        if self.cfg.mode != "envelope":
            return {"payload": item, "next": nxt, "headers": stub.headers}
        return _from_returned(self.cfg.actor, item, nxt, stub.headers)

    def _check_ending(self, row: GroupRow, ok: list[Member], members: list[Member],
                      stub: Envelope) -> None:
        bad = [m for m in members if m.failed]
        if row.ending == "failed" and bad:
            raise FanInError(f"group {row.group}: {_describe(bad[0])}",
                             reason="fan-in-child-failed")
        if row.ending == "timeout" and not self.partial:
            raise FanInError(
                f"group {row.group} waited past fanIn.timeout ({self.timeout:g}s) from "
                f"its first child: {len(members)} children came, a share of "
                f"{stub.meta.fanin.missing if stub.meta.fanin else '?'} never did",
                reason="fan-in-timeout")
        if not ok:
            what = _describe(bad[0]) if bad else "no child came"
            raise FanInError(f"group {row.group}: no child succeeded ({what})",
                             reason="fan-in-child-failed")

    def _gathered(self, stub: Envelope, out: dict[str, Any], *, started: float,
                  span: HopSpan) -> Outgoing:
        hop = Hop(actor=self.cfg.actor, started=started, ended=self.clock.time(),
                  attempt=stub.meta.attempt)
        at = stub.model_copy(update={"route": stub.route.model_copy(
            update={"next": out["next"]})})
        moved = at.advanced(hop=hop, payload=out["payload"],
                            headers={**out["headers"], "traceparent": span.traceparent})
        return self.router.outgoing(moved)

    # -- the sweep -----------------------------------------------------------------------

    async def background(self, stop: asyncio.Event) -> None:
        """Every ``sweep_every`` seconds: end groups past their timeout, finish those
        whose finisher died, purge done groups past :data:`RETENTION`."""
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # a store hiccup: tried again on the next sweep
                log.warning("%s: fan-in sweep failed: %s", self.cfg.actor, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.cfg.sweep_every)

    async def sweep(self) -> int:
        """One sweep; how many groups it finished (or tried to)."""
        now = self.clock.time()
        due = await self._db(self.store.due, self.cfg.actor, now=now)
        for group in due:
            await self._finish(group, None, started=self.clock.time())
        await self._db(self.store.purge, self.cfg.actor, before=now - RETENTION)
        return len(due)


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, FanInError) else reason_of(exc)


def _brief(envelope: dict[str, Any]) -> Any:
    """A failed child's ``meta.error`` without its traceback (it is listed, not kept)."""
    error = dict((envelope.get("meta") or {}).get("error") or {})
    error.pop("traceback", None)
    return error or {"type": "unknown", "message": "no error recorded"}


def _describe(member: Member) -> str:
    error = _brief(member.envelope)
    return (f"child {member.child_id} (#{member.index}) failed at "
            f"{error.get('actor') or '?'} ({error.get('reason', 'handler-error')}): "
            f"{error.get('type')}: {error.get('message')}")


def _agreed_next(actor: str, ok: list[Member]) -> list[str]:
    """The route after the gather, which every child must have the same."""
    first = ok[0]
    want = list((first.envelope.get("route") or {}).get("next") or [])
    for other in ok[1:]:
        got = list((other.envelope.get("route") or {}).get("next") or [])
        if got != want:
            raise FanInError(
                f"children disagree on the route after fanIn actor {actor!r}: "
                f"{first.child_id} goes on to {want} but {other.child_id} to {got}",
                reason="fan-in-route-conflict")
    return want


def _from_returned(actor: str, item: Any, nxt: list[str],
                   headers: dict[str, Any]) -> dict[str, Any]:
    """Envelope mode: the gather's handler returns one envelope dict; its ``payload``,
    ``headers`` and ``route.next`` are taken, the rest is the runtime's."""
    if not isinstance(item, dict):
        raise FanInError(f"the envelope-mode handler of fanIn actor {actor!r} returns one "
                         f"envelope dict, got {type(item).__name__}", reason="fan-in-result")
    route = item.get("route") or {}
    got = route.get("next", nxt) if isinstance(route, dict) else nxt
    if not isinstance(got, list) or not all(isinstance(a, str) for a in got):
        raise FanInError(f"fanIn actor {actor!r}: route.next must be a list of actor "
                         f"names, got {got!r}", reason="fan-in-result")
    own = item.get("headers")
    return {"payload": item.get("payload"), "next": got,
            "headers": own if isinstance(own, dict) else headers}

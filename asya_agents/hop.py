"""What one hop produces: the envelopes a handler's result, a failure or a poison message
turn into, as pure functions of the input, ready to publish.

The runtime's loop (:mod:`asya_agents.runtime`) leases, calls and acks; deciding *what*
to publish is kept here, apart from the I/O, so that the routing rules of DESIGN.md read
in one place and are tested without a queue:

- a single result moves the envelope one hop on (``curr`` joins ``prev``, the head of
  ``next`` becomes ``curr``; ``happy-end`` when nothing is left), with the handler's
  payload;
- a list fans out: children ``<id>.<i>`` with an equal share of the weight; an empty
  list ends the envelope; a generator's children are made one by one as it yields
  (:meth:`Router.child`, with :class:`~asya_agents.envelope.StreamShares`);
- in envelope mode the handler's envelopes may rewrite ``next`` (and ``payload``,
  ``headers``), never ``prev``, ``curr`` or the id;
- a failure carries ``meta.error`` and goes where the failure policy decided: the same
  actor later (a retry), ``error-end``, or another actor that stands in for the hop; a
  fan-out child on its way to a ``fanIn`` actor (one is in its ``next``) goes to that
  actor instead of ``error-end``, so that its group learns of it and never hangs;
- a message that is not an envelope becomes one, at ``error-end``, with the reason;
- a message delivered past the actor's ``maxDeliveries`` (every replica that took it
  died holding it), or one a broker moved to its dead-letter queue, goes to
  ``error-end`` with reason ``delivery-limit`` and its last known error
  (:func:`delivery_limit_error`, :meth:`Router.dead_lettered`); a fan-out child goes
  to its gather instead, like any failure (:meth:`Router.failed_to_gather`), one
  dead-lettered from a gather's own queue back to that gather.

Every outgoing envelope names an actor of the mesh, fits the size limit and has passed
through fewer actors than the hop limit (the mesh's ``spec.hopLimit``: a route that
loops ends there instead of running until its history outgrows the size limit), or the
hop fails with :class:`~asya_agents.errors.UnknownActorError`,
:class:`~asya_agents.errors.MessageTooLarge` or
:class:`~asya_agents.errors.HopLimitExceeded`, none of which is retried.
"""

from __future__ import annotations

import hashlib
import traceback
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from asya_agents.envelope import (
    DEFAULT_HOP_LIMIT,
    ERROR_END,
    HAPPY_END,
    Envelope,
    ErrorInfo,
    Hop,
    Route,
)
from asya_agents.errors import (
    DeliveryLimitExceeded,
    EnvelopeError,
    HopLimitExceeded,
    MessageTooLarge,
    UnknownActorError,
)
from asya_agents.handlers import Result
from asya_agents.seams import Decision, reason_of
from asya_agents.tracecontext import TRACEPARENT
from asya_agents.transports.base import Outgoing

__all__ = ["Router", "delivery_limit_error", "error_info"]


@dataclass(frozen=True)
class Router:
    """The routing rules of one actor: its name, the mesh's actors, its handler mode,
    the largest envelope it may publish and the most actors an envelope may pass."""

    actor: str
    actors: frozenset[str]
    mode: str = "payload"
    max_bytes: int = 256 * 1024
    hop_limit: int = DEFAULT_HOP_LIMIT
    #: The mesh's ``fanIn`` actors: where a failed fan-out child goes on its way to one.
    gathers: frozenset[str] = frozenset()

    # -- success ------------------------------------------------------------------------

    def route(self, envelope: Envelope, result: Result, *, hop: Hop,
              traceparent: str) -> list[Outgoing]:
        """The messages a successful hop publishes."""
        if self.mode == "envelope":
            children = self._from_envelopes(envelope, result)
        elif not result.fanned:
            # The common case: one copy, moved on, with the handler's payload.
            item = result.items[0]
            moved = envelope.advanced(
                hop=hop, headers={**envelope.headers, TRACEPARENT: traceparent},
                payload=envelope.payload if item is None else item)
            return [self.outgoing(moved)]
        else:
            children = envelope.fan_out(result.items)
        if result.fanned and not result.items:
            # An empty fan-out ends the envelope: it reaches happy-end with no children.
            children = [envelope.model_copy(update={"payload": [],
                                                    "route": _ended(envelope.route)})]
        return [self.outgoing(child.advanced(
                    hop=hop, headers={**child.headers, TRACEPARENT: traceparent}))
                for child in children]

    def child(self, envelope: Envelope, item: Any, index: int, share: Fraction, *,
              hop: Hop, traceparent: str) -> Outgoing:
        """Child ``index`` of a streamed fan-out (a generator) with ``share`` of the
        weight, moved one hop on and encoded."""
        if self.mode == "envelope":
            kid = self._returned(envelope, item, index, share)
        else:
            kid = envelope.child(item, index, share)
        return self.outgoing(kid.advanced(
            hop=hop, headers={**kid.headers, TRACEPARENT: traceparent}))

    def ended(self, envelope: Envelope, *, hop: Hop, traceparent: str) -> Outgoing:
        """A fan-out with no children: the envelope reaches happy-end with ``[]``."""
        done = envelope.model_copy(update={"payload": [], "route": _ended(envelope.route)})
        return self.outgoing(done.advanced(
            hop=hop, headers={**done.headers, TRACEPARENT: traceparent}))

    def outgoing(self, moved: Envelope) -> Outgoing:
        """``moved`` encoded for its ``curr``, checked against the mesh and the limits."""
        if moved.route.curr not in self.actors:
            raise UnknownActorError(
                f"route names unknown actor {moved.route.curr!r} "
                f"(mesh has: {', '.join(sorted(self.actors))})"
            )
        self._check_hops(moved)
        body = moved.encode()
        if len(body) > self.max_bytes:
            raise MessageTooLarge(
                f"envelope {moved.id} is {len(body)} bytes, over {self.max_bytes}; "
                "pass large data by URL (file://, s3://)"
            )
        return Outgoing(moved.route.curr, body)

    def _check_hops(self, moved: Envelope) -> None:
        """After ``hop_limit`` actors an envelope may still end (happy-end), but it may
        not go on to one more actor."""
        passed = moved.route.prev
        if len(passed) < self.hop_limit or moved.route.curr == HAPPY_END:
            return
        last = " -> ".join(passed[-6:])
        raise HopLimitExceeded(
            f"envelope {moved.id} passed {len(passed)} actors, the mesh's hop limit "
            f"(spec.hopLimit: {self.hop_limit}), and would go on to {moved.route.curr!r}; "
            f"does its route loop? last actors: {last}"
        )

    def _from_envelopes(self, original: Envelope, result: Result) -> list[Envelope]:
        """Envelope mode: take ``next``, ``payload`` and ``headers`` from what the handler
        returned, after checking it left the history alone."""
        share = Fraction(1, max(len(result.items), 1))
        return [self._returned(original, item, index if result.fanned else None, share)
                for index, item in enumerate(result.items)]

    def _returned(self, original: Envelope, item: Any, index: int | None,
                  share: Fraction) -> Envelope:
        if not isinstance(item, dict):
            raise EnvelopeError(
                f"an envelope-mode handler returns envelope dicts, got {type(item).__name__}"
            )
        returned = Envelope.from_dict({**item, "meta": original.meta.model_dump()})
        returned.check_history(original)
        route = Route(prev=original.route.prev, curr=original.route.curr,
                      next=returned.route.next)
        base = original.model_copy(update={"route": route, "headers": returned.headers})
        if index is not None:
            return base.child(returned.payload, index, share)
        return base.model_copy(update={"payload": returned.payload})

    # -- failure ------------------------------------------------------------------------

    def failure(self, envelope: Envelope, exc: BaseException, decision: Decision, *,
                hop: Hop, traceparent: str) -> Outgoing:
        """The message a failed hop publishes: a retry of this actor (``attempt + 1``,
        delayed), or the envelope with ``meta.error`` at ``decision.target``."""
        meta = envelope.meta.model_copy(update={
            "error": error_info(exc, actor=self.actor, attempt=envelope.meta.attempt,
                                reason=decision.reason),
            "hops": [*envelope.meta.hops, hop]})
        if decision.action == "retry":
            meta.attempt += 1
            target, delay = self.actor, decision.delay
        else:
            target, delay = decision.target, 0.0
        failed = envelope.model_copy(update={
            "meta": meta, "headers": {**envelope.headers, TRACEPARENT: traceparent}})
        if target == ERROR_END and decision.action == "route":
            to_group = self.failed_to_gather(failed)
            if to_group is not None:
                return to_group
        if target not in (ERROR_END, self.actor) and failed.route.curr != target:
            failed = _handed_over(failed, target)
        body = failed.encode()
        if len(body) > self.max_bytes and target != ERROR_END:
            target, delay = ERROR_END, 0.0
        return Outgoing(target, body, delay)

    def failed_to_gather(self, failed: Envelope) -> Outgoing | None:
        """``failed`` (``meta.error`` set, bound for ``error-end``) as the message that
        takes it to its gather instead, or ``None`` when it is no fan-out child on its
        way to one. Every end of a fan-out child that would reach ``error-end`` (a
        handler error, ``delivery-limit``, ``hop-limit``, a broker's dead-letter queue)
        goes through here, so its group learns of it once and never hangs. One too large
        to send with its error goes without its payload and traceback (the gather keeps
        only the error of a failed child); ``None`` when even that does not fit."""
        moved, target = self.to_gather(failed)
        if target == ERROR_END:
            return None
        return self._fitting(target, moved)

    def _fitting(self, target: str, failed: Envelope) -> Outgoing | None:
        body = failed.encode()
        if len(body) <= self.max_bytes:
            return Outgoing(target, body)
        error = failed.meta.error
        slim = failed.model_copy(update={
            "payload": None,
            "meta": failed.meta.model_copy(update={
                "error": error.model_copy(update={"traceback": None}) if error else None})})
        body = slim.encode()
        return Outgoing(target, body) if len(body) <= self.max_bytes else None

    def to_gather(self, failed: Envelope) -> tuple[Envelope, str]:
        """A failed envelope bound for ``error-end``, sent on to the first ``fanIn``
        actor of its ``next`` instead when it is a fan-out child: the gather records it
        in its group (which fails, or with ``partial: true`` lists it) rather than wait
        for it until ``timeout``. The actors in between are skipped."""
        if not failed.meta.fanout or not self.gathers:
            return failed, ERROR_END
        nxt = failed.route.next
        gather = next((a for a in nxt if a in self.gathers), None)
        if gather is None:
            return failed, ERROR_END
        route = failed.route
        rest = nxt[nxt.index(gather) + 1:]
        moved = failed.model_copy(update={
            "route": Route(prev=[*route.prev, route.curr], curr=gather, next=rest),
            "meta": failed.meta.model_copy(update={"attempt": 1})})
        return moved, gather

    def poison(self, queue: str, body: bytes) -> Outgoing:
        """A message that is not an envelope, recorded at ``error-end`` with the reason
        (under an id derived from its bytes, so a redelivered copy is recorded once)."""
        try:
            Envelope.decode(body, max_bytes=self.max_bytes)
            reason = "unreadable"
        except EnvelopeError as exc:
            reason = str(exc)
        digest = hashlib.sha1(queue.encode() + body).hexdigest()[:12]
        poison = Envelope(
            id=f"poison-{digest}", route=Route(curr=self.actor),
            payload={"raw": body[:4096].decode("utf-8", errors="replace"),
                     "bytes": len(body)})
        poison.meta.root_id = poison.id
        poison.meta.error = ErrorInfo(type="asya_agents.errors.EnvelopeError", message=reason,
                                      actor=self.actor, reason="invalid-envelope")
        return Outgoing(ERROR_END, poison.encode())

    def dead_lettered(self, queue: str, body: bytes, *, broker_limit: int | None) -> Outgoing:
        """A message the broker moved from this actor's queue to ``queue``, its
        dead-letter queue, after ``broker_limit`` deliveries: for ``error-end``, failed
        with reason ``delivery-limit`` and its route kept (so a replay sends it back
        here); poison when it is not an envelope."""
        try:
            envelope = Envelope.decode(body, max_bytes=self.max_bytes)
        except EnvelopeError:
            return self.poison(queue, body)
        exc = DeliveryLimitExceeded(
            f"moved by the broker to its dead-letter queue {queue!r} after more deliveries "
            f"than its limit ({broker_limit}), {_NO_RESULT}; {_last_error(envelope)}")
        meta = envelope.meta.model_copy(update={"error": error_info(
            exc, actor=self.actor, attempt=envelope.meta.attempt, reason=reason_of(exc))})
        failed = envelope.model_copy(update={"meta": meta})
        to_group = self._dead_child(failed)
        return to_group or Outgoing(ERROR_END, failed.encode())

    def _dead_child(self, failed: Envelope) -> Outgoing | None:
        """A dead-lettered fan-out child, for its group: from a ``fanIn`` actor's own
        queue back to that actor, failed (it records the child in its group), from any
        other actor's queue on to the first gather of its route; ``None`` when it is no
        fan-out child bound for a gather."""
        if not failed.meta.fanout:
            return None
        if self.actor in self.gathers and failed.route.curr == self.actor:
            return self._fitting(self.actor, failed)
        return self.failed_to_gather(failed)


_NO_RESULT = ("and every delivery before ended without a result: its replica died (a "
              "crash, an OOM kill, os._exit), its lease ran out, or it was given back")


def delivery_limit_error(envelope: Envelope, *, deliveries: int,
                         limit: int) -> DeliveryLimitExceeded:
    """Why ``envelope``, delivered ``deliveries`` times, past ``limit``, is not handed to
    the handler again."""
    return DeliveryLimitExceeded(
        f"delivered {deliveries} times (maxDeliveries {limit}), {_NO_RESULT}; "
        f"{_last_error(envelope)}")


def _last_error(envelope: Envelope) -> str:
    error = envelope.meta.error
    if error is None:
        return "no error was recorded before"
    where = f" (at {error.actor}, attempt {error.attempt})" if error.actor else ""
    return f"last known error{where}: {error.type}: {error.message}"


def error_info(exc: BaseException, *, actor: str, attempt: int, reason: str) -> ErrorInfo:
    """``meta.error`` for ``exc``: its class with module, message and traceback (capped)."""
    return ErrorInfo(
        type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        message=str(exc)[:4000],
        traceback="".join(traceback.format_exception(exc))[-8000:],
        actor=actor, attempt=attempt, reason=reason,
    )


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

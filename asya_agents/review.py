"""Human review: park an envelope for a person, resume it exactly once on a decision.

A handler cannot say "acknowledge this message and stop here until someone decides", so
parking is a *terminal* actor of the runtime, like ``happy-end`` and ``error-end``: an
AsyncActor whose ``spec.handler`` is the built-in :data:`PARK_HANDLER`
(``asya_agents.review.park``) is run by :func:`build_review_runtime`. Its terminal
records the envelope as ``paused`` in the result store, parks it in the review store and
acks it. Nothing holds a queue message while a person thinks.

A decision goes through :class:`ReviewService`:

1. the store's compare-and-set records it (of two reviewers clicking at once exactly one
   wins; the loser is told who decided);
2. the decided row is the outbox: it stays *unpublished* until the resumed envelope was
   accepted by the transport, then it is marked published. A publisher that dies in
   between leaves the row unpublished, and the next :meth:`ReviewService.publish_pending`
   (run by the review actor's replica every ``sweep_interval``) sends it. The resumed
   envelope is a pure function of the decided row, so a re-send is the same message
   with the same id, which ``happy-end`` records once.
3. before it sends, the publisher *reopens* the envelope's ``paused`` record (it runs
   again, and is no ended record until its next end); nothing is deleted, and the
   record only moves forward, so a copy of the parked hop delivered again later is
   counted as a duplicate, never turns the envelope's result back into ``paused``,
   and the decided round is never parked again (:mod:`asya_agents.stores.base`).

The service reads and resumes only items of its own mesh, so meshes may share one
review store (one PostgreSQL database).

Where it goes: ``approve`` advances the route past the review actor; ``edit`` replaces
the payload, then approves; ``send_back`` puts ``send_back_route`` (by default the
actors the envelope passed through on its way here, each once, in order) in front of
the rest of the route, with the reviewer's notes in
``payload["review_notes"]``; ``reject`` goes to ``reject_route`` if configured, else to
``error-end`` with the reviewer and the notes as the reason.

Deadlines: each item may carry one (``spec.config.deadline``); the review actor's
replica applies ``deadline_action`` to overdue items (:meth:`ReviewService.expire_due`)
on the same sweep, so nothing waits forever. The sweep lives in the review actor's
runtime (:class:`ReviewRuntime`) because that is the one process every mesh with a
review step already runs, locally and on Kubernetes; give it ``minReplicaCount: 1``
when deadlines must fire while no new work arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from asya_agents.builtin import PARK_HANDLER, ReviewConfig
from asya_agents.envelope import ERROR_END, Envelope, ErrorInfo, Hop, Route
from asya_agents.errors import ConfigError, HandlerError, TransportError
from asya_agents.loopthread import LoopThread
from asya_agents.runtime import Runtime, RuntimeConfig, lease_for
from asya_agents.seams import Clock
from asya_agents.stores import open_review_store
from asya_agents.stores.base import ResultStore
from asya_agents.stores.review_base import (
    DECISIONS,
    DecideResult,
    DecisionRecord,
    ReviewItem,
    ReviewItemNotFound,
    ReviewStore,
)
from asya_agents.suggest import explain
from asya_agents.transports.base import Outgoing, Transport

if TYPE_CHECKING:
    from asya_agents.manifest import LoadedMesh
    from asya_agents.settings import Settings

__all__ = [
    "DECISIONS",
    "PARK_HANDLER",
    "DecideResult",
    "DecisionRecord",
    "ReviewConfig",
    "ReviewItem",
    "ReviewItemNotFound",
    "ReviewRuntime",
    "ReviewService",
    "ReviewStore",
    "build_review_runtime",
    "open_review_store",
    "park",
    "resumed",
    "send_back_path",
]

log = logging.getLogger("asya.review")
T = TypeVar("T")

#: Who decided when a deadline did.
DEADLINE_REVIEWER = "asya:deadline"


def park(envelope: dict[str, Any]) -> dict[str, Any]:
    """The built-in parking handler's name. The runtime runs it as a terminal actor
    (see the module docstring); calling it as a plain function is a mistake."""
    raise HandlerError(
        f"{PARK_HANDLER} is run by the runtime as a terminal actor (asya up, LocalMesh); "
        "it cannot be called as a plain handler"
    )


# -- where a decided item goes -----------------------------------------------------------


def resumed(item: ReviewItem) -> Outgoing:
    """The message that resumes a decided item: a pure function of the row, so that a
    re-publish after a crash sends the very same envelope."""
    if item.status != "decided" or item.decision is None:
        raise ValueError(f"review item {item.id!r} is not decided")
    env = Envelope.from_dict(item.envelope)
    decided_at = item.decided_at or item.parked_at
    hop = Hop(actor=item.actor, started=item.parked_at, ended=decided_at)
    env.meta.hops = [*env.meta.hops, hop]
    env.payload = _reviewed_payload(item, env.payload)
    if item.decision in ("approve", "edit"):
        return _outgoing(env.advanced())
    if item.decision == "send_back":
        return _outgoing(_detour(env, send_back_path(item), keep_rest=True))
    reject_route = item.options.get("reject_route")
    if reject_route:
        return _outgoing(_detour(env, reject_route, keep_rest=False))
    env.meta.error = ErrorInfo(
        type="asya_agents.review.Rejected",
        message=f"rejected in review by {item.decided_by}" +
                (f": {item.notes}" if item.notes else ""),
        actor=item.actor, reason="rejected-in-review")
    return Outgoing(ERROR_END, env.encode())


def send_back_path(item: ReviewItem) -> list[str]:
    """Where ``send_back`` sends ``item``: its ``send_back_route``, or else the actors
    its envelope passed through to reach the review, each once, in order."""
    configured = item.options.get("send_back_route")
    if configured:
        return list(configured)
    prev = item.envelope.get("route", {}).get("prev", [])
    return list(dict.fromkeys(prev)) or [item.actor]


def _reviewed_payload(item: ReviewItem, payload: Any) -> Any:
    if item.decision == "edit":
        payload = item.edited_payload
    if not isinstance(payload, dict):
        return payload
    review = {"decision": item.decision, "reviewer": item.decided_by,
              "decided_at": item.decided_at, "notes": item.notes}
    out = {**payload, "review": review}
    if item.decision == "send_back":
        out["review_notes"] = item.notes or ""
    return out


def _detour(env: Envelope, route: list[str], *, keep_rest: bool) -> Envelope:
    rest = list(env.route.next) if keep_rest else []
    new = Route(prev=[*env.route.prev, env.route.curr], curr=route[0],
                next=[*route[1:], *rest])
    return env.model_copy(update={"route": new})


def _outgoing(env: Envelope) -> Outgoing:
    env.meta.attempt = 1
    return Outgoing(env.route.curr, env.encode())


# -- deciding and resuming ---------------------------------------------------------------


class ReviewService:
    """Record decisions and resume the envelopes they decide, exactly once.

    The ``a``-prefixed methods are coroutines for code that already runs an event loop
    (the review actor's replica). The plain ones are for synchronous callers (the review
    console, scripts): they run on a private event loop thread of this service, so the
    transport always sees one loop.
    """

    def __init__(self, store: ReviewStore, transport: Transport, result_store: ResultStore,
                 *, mesh: str, clock: Callable[[], float] = time.time,
                 publish_lease: float = 30.0) -> None:
        self.store = store
        self.transport = transport
        self.results = result_store
        self.mesh = mesh
        self.clock = clock
        self.publish_lease = publish_lease
        self._loop = LoopThread("asya-review-service")

    # -- async core ---------------------------------------------------------------------

    async def adecide(self, id: str, *, decision: str, reviewer: str,
                      notes: str | None = None, payload: Any = None) -> DecideResult:
        """Record the decision (compare-and-set) and, if it won, resume the item; an
        item of another mesh is :class:`ReviewItemNotFound` here."""
        item = await asyncio.to_thread(self.store.get, id)
        if item is None or item.mesh != self.mesh:
            raise ReviewItemNotFound(f"no review item {id!r} in mesh {self.mesh!r}")
        result = await asyncio.to_thread(self.store.decide, id, decision=decision,
                                         reviewer=reviewer, notes=notes, payload=payload)
        if result.won:
            await self.apublish_pending()
        return result

    async def apublish_pending(self) -> int:
        """Publish every decided item not yet published; how many were sent. An item
        whose publish fails stays in the outbox for the next run (the review actor's
        sweep); the failure is logged, not raised, because the decision itself stands."""
        items = await asyncio.to_thread(self.store.claim_unpublished,
                                        lease=self.publish_lease, mesh=self.mesh)
        sent = 0
        for item in items:
            try:
                await self._publish(item)
            except TransportError as exc:
                log.warning("review %s: resuming failed, the next sweep retries: %s",
                            item.id, exc)
                await asyncio.to_thread(self.store.release, item.id, round=item.round)
                continue
            sent += 1
        return sent

    async def _publish(self, item: ReviewItem) -> None:
        outgoing = resumed(item)
        # Reopen first, then send: a compare-and-set on the paused record of this very
        # round, so it never touches a later end (a crashed publisher's re-run).
        await asyncio.to_thread(self.results.reopen, item.envelope)
        await self.transport.send([outgoing])
        await asyncio.to_thread(self.store.mark_published, item.id, round=item.round)
        log.info("review %s: %s by %s -> %s", item.id, item.decision, item.decided_by,
                 outgoing.queue)

    async def aexpire_due(self, now: float | None = None) -> list[DecideResult]:
        """Apply each overdue item's ``deadline_action``; the decisions that won."""
        when = self.clock() if now is None else now
        items = await asyncio.to_thread(self.store.due, when, mesh=self.mesh)
        won = []
        for item in items:
            action = item.options.get("deadline_action", "reject")
            result = await asyncio.to_thread(
                self.store.decide, item.id, decision=action, reviewer=DEADLINE_REVIEWER,
                notes=f"deadline passed ({_ago(when - (item.deadline or when))} ago)")
            if result.won:
                won.append(result)
        if won:
            await self.apublish_pending()
        return won

    # -- synchronous front --------------------------------------------------------------

    def decide(self, id: str, *, decision: str, reviewer: str, notes: str | None = None,
               payload: Any = None) -> DecideResult:
        """Synchronous :meth:`adecide`."""
        return self._run(self.adecide(id, decision=decision, reviewer=reviewer, notes=notes,
                                      payload=payload))

    def publish_pending(self) -> int:
        return self._run(self.apublish_pending())

    def expire_due(self, now: float | None = None) -> list[DecideResult]:
        return self._run(self.aexpire_due(now))

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._loop.run(coro)

    def close(self) -> None:
        """Stop the private loop (if one was started); the caller closes the rest."""
        self._loop.close()


def _ago(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 120 else f"{seconds / 60:.0f}m"


# -- the review actor's runtime ------------------------------------------------------------


class ReviewRuntime(Runtime):
    """A terminal runtime that parks envelopes, plus the sweep: expire overdue items
    and publish decided ones a crashed publisher left behind."""

    def __init__(self, config: RuntimeConfig, *, transport: Transport, service: ReviewService,
                 review: ReviewConfig, clock: Clock | None = None) -> None:
        self.service = service
        self.review = review
        super().__init__(config, transport=transport, terminal=self._park, clock=clock)

    async def _park(self, envelope: Envelope) -> None:
        now = self.clock.time()
        data = envelope.to_dict()
        deadline = now + self.review.deadline if self.review.deadline is not None else None
        # Paused first: a reviewer cannot see (and resume) the item before it is parked,
        # so no "paused" can land after the envelope's real end.
        await asyncio.to_thread(self.service.results.record, "paused", data)
        await asyncio.to_thread(self.service.store.park, data, actor=self.cfg.actor,
                                mesh=self.service.mesh, deadline=deadline,
                                options=self.review.options())

    async def run(self, stop: asyncio.Event) -> None:
        sweeper = asyncio.create_task(self._sweep(stop))
        try:
            await super().run(stop)
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def _sweep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.service.aexpire_due(self.clock.time())
                await self.service.apublish_pending()
            except Exception as exc:  # a store or broker hiccup must not stop parking
                log.warning("review sweep of %s failed: %s", self.cfg.actor, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.review.sweep_interval)


def build_review_runtime(loaded: LoadedMesh, actor: str, transport: Transport, *,
                         settings: Settings, state_dir: Path,
                         clock: Clock | None = None) -> ReviewRuntime:
    """The runtime of review actor ``actor`` (its ``spec.handler`` is PARK_HANDLER)."""
    from asya_agents.stores import open_result_store

    spec = loaded.actors[actor].spec
    try:
        review = ReviewConfig.model_validate(spec.config)
    except ValidationError as exc:  # a mesh changed after it loaded (tests do)
        field, message = explain(exc, ReviewConfig, ("spec", "config"))
        raise ConfigError(f"{loaded.sources.get(actor, actor)}: {field}: {message}") from exc
    store = open_review_store(settings.store.url, state_dir=state_dir)
    results = open_result_store(settings.store.url, state_dir=state_dir, mesh=loaded.name)
    service = ReviewService(store, transport, results, mesh=loaded.name,
                            publish_lease=review.publish_lease)
    timeout = spec.resiliency.actorTimeout
    cfg = RuntimeConfig(actor=actor, actors=loaded.actor_names, concurrency=spec.concurrency,
                        timeout=timeout, lease=lease_for(timeout))
    return ReviewRuntime(cfg, transport=transport, service=service, review=review,
                         clock=clock)

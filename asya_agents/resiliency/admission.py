"""The runtime's :class:`~asya_agents.runtime.Admission`, built from ``spec.resiliency``.

Three independent brakes, each in its own module, consulted by the receive loop:

- the circuit breaker (:mod:`.breaker`): while open, take nothing; half-open, one probe;
- adaptive concurrency (:mod:`.adaptive`): fewer messages in flight after 429s, and
  calls paced at the rate the provider was found to allow; the pace and the breaker's
  state are the actor's, shared by its replicas (:mod:`.shared`);
- the shared rate limit (:mod:`.limiter`): one token per message taken, for the actor
  as a whole.

While the rate limit makes the replica wait, or a 429 cuts its concurrency, the actor is
marked rate-limited (:mod:`.throttle`) so that the local autoscaler adds no replicas.
Waiting for the adaptive pace does not mark it: the pace is the actor's own guess, which
grows while a backlog waits for it, not a limit the provider said; a replica the
autoscaler adds shares the same pace, so it cannot earn more 429s.

The shared bucket's store (Redis, SQLite) can become unreachable. :class:`SharedBucket`
bounds what that costs: the replica holds (takes nothing, tries the store again every
second) for ``rateLimit.unavailableAfter``, so a blip never lets more through than the
limit; after that it reports the store unreachable (a metric, a mark for ``asya
status``, one error line) and takes from its own share of the limit (``perSecond /
scaling.maxReplicaCount``), trying the store every few seconds until it answers. The
share keeps the whole actor under its limit with up to maxReplicaCount replicas, so a
rate-limited provider never sees more than it allows, and the mesh keeps moving
instead of stalling silently behind a store nobody can reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from asya_agents.errors import TransportError
from asya_agents.resiliency.adaptive import AdaptiveLimit
from asya_agents.resiliency.breaker import CircuitBreaker
from asya_agents.resiliency.limiter import TokenBucket
from asya_agents.resiliency.shared import SharedBrakes
from asya_agents.resiliency.throttle import OutageMarks, ThrottleMarks
from asya_agents.seams import Admission

__all__ = ["ResilientAdmission", "SharedBucket"]

log = logging.getLogger("asya.resiliency")

#: Longest nap between looks at the clock: an injected clock moves without us.
_NAP = 0.2
#: How long one throttling event keeps the actor marked rate-limited.
_MARK_FOR = 10.0
#: Seconds between tries of a failing rate-limit store while the replica holds, and
#: once it runs on its own share of the limit.
_RETRY_EVERY = 1.0
_PROBE_EVERY = 5.0


async def _nap(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(min(seconds, _NAP), 0.001))


class SharedBucket:
    """The actor's shared ``bucket``, and ``share`` (this replica's part of the limit)
    for when the bucket's store has failed for ``unavailable_after`` seconds."""

    def __init__(self, bucket: TokenBucket, share: TokenBucket, *, actor: str,
                 unavailable_after: float, marks: OutageMarks | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.bucket, self.share, self.actor = bucket, share, actor
        self.unavailable_after = unavailable_after
        self.marks = marks
        self._clock = clock
        self.failures = 0
        self.down_since: float | None = None
        self.unreachable = False
        self._retry_at = 0.0
        self._shared_grant = True

    async def take(self, want: int) -> tuple[int, float]:
        now = self._clock()
        if now < self._retry_at:  # the store failed: not tried again before _retry_at
            return await self._from_share(want) if self.unreachable \
                else (0, self._retry_at - now)
        try:
            got = await self.bucket.take(want)
        except TransportError as exc:
            return await self._failed(exc, want, now)
        self._recovered(now)
        self._shared_grant = True
        return got

    async def _from_share(self, want: int) -> tuple[int, float]:
        self._shared_grant = False
        return await self.share.take(want)

    async def _failed(self, exc: TransportError, want: int, now: float) -> tuple[int, float]:
        self.failures += 1
        if self.down_since is None:
            self.down_since = now
            log.warning("rate-limit store of %s failed; taking nothing for up to %gs while "
                        "it is tried again: %s", self.actor, self.unavailable_after, exc)
        if now - self.down_since < self.unavailable_after:
            self._retry_at = now + _RETRY_EVERY
            return 0, _RETRY_EVERY
        if not self.unreachable:
            self.unreachable = True
            log.error("rate-limit store of %s unreachable for %gs: this replica now takes "
                      "its share of the limit until the store answers: %s", self.actor,
                      now - self.down_since, exc)
        self._retry_at = now + _PROBE_EVERY
        if self.marks is not None:
            with contextlib.suppress(OSError):
                self.marks.mark(self.actor, since=self.down_since, error=str(exc), now=now)
        return await self._from_share(want)

    def _recovered(self, now: float) -> None:
        if self.down_since is None:
            return
        log.warning("rate-limit store of %s answers again after %.0fs", self.actor,
                    now - self.down_since)
        self.down_since, self.unreachable = None, False
        if self.marks is not None:
            self.marks.clear(self.actor)

    async def give_back(self, count: int) -> None:
        if not self._shared_grant:
            await self.share.give_back(count)
            return
        with contextlib.suppress(TransportError):
            await self.bucket.give_back(count)

    async def close(self) -> None:
        if self.marks is not None:
            self.marks.clear(self.actor)
        await self.share.close()
        await self.bucket.close()


class ResilientAdmission(Admission):
    def __init__(
        self,
        *,
        actor: str,
        breaker: CircuitBreaker | None = None,
        adaptive: AdaptiveLimit | None = None,
        bucket: TokenBucket | None = None,
        marks: ThrottleMarks | None = None,
        shared: SharedBrakes | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.actor = actor
        self.breaker = breaker
        self.adaptive = adaptive
        self.bucket = bucket
        self.marks = marks
        self.shared = shared
        self._clock = clock
        self._marked_until = 0.0
        self._paused_until = 0.0
        self._hits = 0
        #: Calls granted since the last release, and whether that release sent none.
        self._granted = 0
        self._idle = False

    def limit(self, concurrency: int) -> int:
        if self.adaptive is not None:
            concurrency = min(concurrency, self.adaptive.current)
        if self.breaker is not None and self.breaker.state == "half-open":
            concurrency = min(concurrency, 1)
        return concurrency

    async def wait(self, stop: asyncio.Event) -> None:
        if self.shared is not None and self.adaptive is not None and \
                self.adaptive.unsent_refused:
            # A 429 here is news for every replica: tell the actor's pace now, before
            # pausing for its Retry-After, not at this replica's next take.
            await self.shared.refresh()
        while self.breaker is not None and not self.breaker.allows() and not stop.is_set():
            await _nap(self.breaker.seconds_to_probe() or _NAP, stop)
            if self.shared is not None:
                await self.shared.refresh()  # another replica's probe may close it
        while not stop.is_set() and self._paused_until > self._clock():
            await _nap(self._paused_until - self._clock(), stop)

    async def acquire(self, want: int, stop: asyncio.Event) -> int:
        if self.breaker is not None and self.breaker.state == "half-open":
            want, self.breaker.probing = min(want, 1), True
        while want > 0 and not stop.is_set():
            granted, wait = await self.try_acquire(want)
            if granted:
                return granted
            await _nap(wait, stop)
        if self.breaker is not None:
            self.breaker.probing = False
        return 0

    async def try_acquire(self, want: int) -> tuple[int, float]:
        """One try of :meth:`acquire`: ``(granted, 0)`` or ``(0, seconds to wait)``."""
        if self._idle:
            # The queue was empty last time: ask for one call, not for every free slot,
            # so that a backlog arriving does not find each replica holding a handful
            # granted long ago, sent at once.
            want = min(want, 1)
        granted, wait = await self._paced(want)
        if granted and self.bucket is not None:
            shared, wait = await self._take_shared(granted)
            self._give_pace(granted - shared)
            if not shared:
                self._mark()  # the declared limit holds it: more replicas would wait too
            granted = shared
        if not granted:
            self._hits += 1
        self._granted += granted
        return granted, wait

    async def _take_shared(self, want: int) -> tuple[int, float]:
        assert self.bucket is not None
        try:
            return await self.bucket.take(want)
        except TransportError as exc:
            log.warning("rate limit of %s unavailable, waiting: %s", self.actor, exc)
            return 0, 1.0

    async def _paced(self, want: int) -> tuple[int, float]:
        """Take up to ``want`` from the adaptive pace (the actor's, shared, or this
        replica's own); ``(want, 0)`` while there is no pace."""
        if self.shared is not None:
            return await self.shared.take(want)
        if self.adaptive is None:
            return want, 0.0
        return self.adaptive.own.take(want, self._clock())

    def _give_pace(self, count: int) -> None:
        if count <= 0:
            return
        if self.shared is not None:
            self.shared.give_back(count)
        elif self.adaptive is not None:
            self.adaptive.own.give_back(count)

    async def release(self, unused: int) -> None:
        sent, self._granted = max(self._granted - unused, 0), 0
        self._idle = sent == 0
        if self.adaptive is not None:
            self.adaptive.sent(sent)
        if self.breaker is not None and self.breaker.probing and unused > 0:
            self.breaker.probing = False  # the probe found no message: try again later
        self._give_pace(unused)
        if self.bucket is not None and unused > 0:
            with contextlib.suppress(TransportError):
                await self.bucket.give_back(unused)

    def outcome(self, exc: BaseException | None, started: float | None = None) -> None:
        if self.breaker is not None:
            before = self.breaker.state
            self.breaker.record(exc)
            after = self.breaker.state
            if after != before:
                log.warning("circuit of %s %s", self.actor, after)
                if self.shared is not None and after == "open":
                    self.shared.opened = self.breaker.opened_at
                elif self.shared is not None and after == "closed":
                    self.shared.closed = self._clock()
        if self.adaptive is None:
            return
        if exc is not None:
            pause = self.adaptive.pause_for(exc)
            self._paused_until = max(self._paused_until, self._clock() + pause)
        if self.adaptive.record(exc, started):
            log.info("%s rate-limited: concurrency now %d", self.actor, self.adaptive.current)
            self._mark()

    def rate_limit_hits(self) -> int:
        """How often a rate limit (shared or this replica's pace) made it wait."""
        return self._hits

    def rate_limit_store_up(self) -> bool:
        """False once the shared store has failed for ``unavailableAfter``."""
        return not (isinstance(self.bucket, SharedBucket) and self.bucket.unreachable)

    def rate_limit_store_failures(self) -> int:
        """Calls to the shared store that failed, since the replica started."""
        return self.bucket.failures if isinstance(self.bucket, SharedBucket) else 0

    def rate_limited(self) -> bool:
        return self._marked_until > self._clock()

    def _mark(self) -> None:
        now = self._clock()
        if self._marked_until - now > _MARK_FOR - 1.0:
            return  # written less than a second ago
        self._marked_until = now + _MARK_FOR
        if self.marks is not None:
            with contextlib.suppress(OSError):
                self.marks.mark(self.actor, self._marked_until)

    async def close(self) -> None:
        if self.bucket is not None:
            await self.bucket.close()
        if self.shared is not None:
            await self.shared.store.close()

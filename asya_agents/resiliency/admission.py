"""The runtime's :class:`~asya_agents.runtime.Admission`, built from ``spec.resiliency``.

Three independent brakes, each in its own module, consulted by the receive loop:

- the circuit breaker (:mod:`.breaker`): while open, take nothing; half-open, one probe;
- adaptive concurrency (:mod:`.adaptive`): fewer messages in flight after 429s;
- the shared rate limit (:mod:`.limiter`): one token per message taken, for the actor
  as a whole.

While the rate limit makes the replica wait, or a 429 cuts its concurrency, the actor is
marked rate-limited (:mod:`.throttle`) so that the local autoscaler adds no replicas.
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
from asya_agents.resiliency.limiter import TokenBucket, refill
from asya_agents.resiliency.throttle import ThrottleMarks
from asya_agents.seams import Admission

__all__ = ["ResilientAdmission"]

log = logging.getLogger("asya.resiliency")

#: Longest nap between looks at the clock: an injected clock moves without us.
_NAP = 0.2
#: Seconds of calls a replica's own pace lets through at once.
_PACE_BURST = 0.1
#: How long one throttling event keeps the actor marked rate-limited.
_MARK_FOR = 10.0


async def _nap(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(min(seconds, _NAP), 0.001))


class ResilientAdmission(Admission):
    def __init__(
        self,
        *,
        actor: str,
        breaker: CircuitBreaker | None = None,
        adaptive: AdaptiveLimit | None = None,
        bucket: TokenBucket | None = None,
        marks: ThrottleMarks | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.actor = actor
        self.breaker = breaker
        self.adaptive = adaptive
        self.bucket = bucket
        self.marks = marks
        self._clock = clock
        self._marked_until = 0.0
        self._paused_until = 0.0
        self._pace_tokens, self._pace_stamp = 1.0, clock()
        self._hits = 0

    def limit(self, concurrency: int) -> int:
        if self.adaptive is not None:
            concurrency = min(concurrency, self.adaptive.current)
        if self.breaker is not None and self.breaker.state == "half-open":
            concurrency = min(concurrency, 1)
        return concurrency

    async def wait(self, stop: asyncio.Event) -> None:
        while self.breaker is not None and not self.breaker.allows() and not stop.is_set():
            await _nap(self.breaker.seconds_to_probe() or _NAP, stop)
        while not stop.is_set() and self._paused_until > self._clock():
            await _nap(self._paused_until - self._clock(), stop)

    async def acquire(self, want: int, stop: asyncio.Event) -> int:
        if self.breaker is not None and self.breaker.state == "half-open":
            want, self.breaker.probing = min(want, 1), True
        while want > 0 and not stop.is_set():
            granted, wait = self._paced(want)
            if granted and self.bucket is not None:
                shared, wait = await self._take_shared(granted)
                self._pace_tokens += granted - shared
                granted = shared
            if granted:
                return granted
            self._hits += 1
            self._mark()
            await _nap(wait, stop)
        if self.breaker is not None:
            self.breaker.probing = False
        return 0

    async def _take_shared(self, want: int) -> tuple[int, float]:
        assert self.bucket is not None
        try:
            return await self.bucket.take(want)
        except TransportError as exc:
            log.warning("rate limit of %s unavailable, waiting: %s", self.actor, exc)
            return 0, 1.0

    def _paced(self, want: int) -> tuple[int, float]:
        """Take up to ``want`` from this replica's own pace (adaptive concurrency),
        a small bucket refilled at the pace; ``(want, 0)`` while there is no pace."""
        pace = self.adaptive.pace if self.adaptive is not None else None
        if pace is None:
            return want, 0.0
        now = self._clock()
        self._pace_tokens = refill(self._pace_tokens, self._pace_stamp, now, rate=pace,
                                   burst=max(1.0, pace * _PACE_BURST))
        self._pace_stamp = now
        granted = min(want, int(self._pace_tokens))
        if granted:
            self._pace_tokens -= granted
            return granted, 0.0
        return 0, (1.0 - self._pace_tokens) / pace

    async def release(self, unused: int) -> None:
        if self.breaker is not None and self.breaker.probing and unused > 0:
            self.breaker.probing = False  # the probe found no message: try again later
        if self.adaptive is not None and self.adaptive.pace is not None and unused > 0:
            self._pace_tokens += unused
        if self.bucket is not None and unused > 0:
            with contextlib.suppress(TransportError):
                await self.bucket.give_back(unused)

    def outcome(self, exc: BaseException | None) -> None:
        if self.breaker is not None:
            before = self.breaker.state
            self.breaker.record(exc)
            if self.breaker.state != before:
                log.warning("circuit of %s %s", self.actor, self.breaker.state)
        if self.adaptive is None:
            return
        if exc is not None:
            pause = self.adaptive.pause_for(exc)
            self._paused_until = max(self._paused_until, self._clock() + pause)
        if self.adaptive.record(exc):
            log.info("%s rate-limited: concurrency now %d", self.actor, self.adaptive.current)
            self._mark()

    def rate_limit_hits(self) -> int:
        """How often a rate limit (shared or this replica's pace) made it wait."""
        return self._hits

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

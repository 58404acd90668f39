"""Adaptive concurrency: each replica finds how much a rate-limited provider takes.

Additive increase, multiplicative decrease (the rule TCP uses for the same problem),
after a slow start (from 2 in flight, +1 per success, until the first pushback): each
success raises the in-flight limit by ``increase / limit`` (so about ``increase``
per window of ``limit`` successes), each rate-limit error of a matched kind (``429`` by
default) multiplies it by ``decrease``, at most once per ``cooldown``: the calls that
were already in flight when the provider pushed back would otherwise cut the limit
once each for one single overload. The limit stays within ``minConcurrency`` and the
actor's ``concurrency``.

Concurrency alone cannot hold a rate: a call answered 429 returns at once and frees
its slot for the next one, so every slot above the provider's share turns into a
stream of 429s. So on a cut the replica also starts to *pace* itself: it measures the
rate it was actually served at over the last seconds (what the provider granted it
while it asked for more), starts calls at ``paceMargin`` of that, and raises the pace
by ``paceGrowth`` of itself per second while calls succeed (5 % while the pace is
still a guess from less than two seconds of answers). The replicas of an actor
each find their share this way, with no coordination.

A 429's ``Retry-After`` is about the account, not the one request: every call sent
before it passes earns another 429 and burns another attempt. So the replica also
stops taking messages until then (capped by ``pauseOnRetryAfter``); they wait in the
queue with their attempts untouched.

A replica that just cut its limit is rate-limited; :mod:`asya_agents.resiliency.admission`
tells the local autoscaler, which then adds no replicas to the actor.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from asya_agents.resiliency.match import ErrorMatcher, retry_after
from asya_agents.resiliency.spec import AdaptiveConcurrencySpec

__all__ = ["AdaptiveLimit"]

#: Seconds of successes the served rate is measured over.
_PACE_WINDOW = 2.0
#: Concurrency a replica starts with (slow start), unless the actor allows less.
_SLOW_START = 2
#: How fast a pace grows from a guess (share of itself per second).
_PROBE_GROWTH = 0.05
#: The slowest pace: one call every ten seconds still finds out when the limit lifts.
_MIN_PACE = 0.1


class AdaptiveLimit:
    def __init__(self, spec: AdaptiveConcurrencySpec, *, ceiling: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.ceiling = max(ceiling, spec.minConcurrency)
        # Slow start: begin low and double each round of successes until the first
        # pushback, rather than opening with the full concurrency against a cold quota.
        self.value = float(min(self.ceiling, max(spec.minConcurrency, _SLOW_START)))
        self._slow_start = True
        #: Calls per second this replica may start; ``None`` until the first 429.
        self.pace: float | None = None
        self._clock = clock
        self._matches = ErrorMatcher(spec.match)
        self._last_cut: float | None = None
        self._served: deque[float] = deque()
        self._first_served: float | None = None
        self._probing = True

    @property
    def current(self) -> int:
        """Messages this replica may hold now."""
        return max(self.spec.minConcurrency, math.floor(self.value))

    def pause_for(self, exc: BaseException) -> float:
        """Seconds the provider asked the whole client to wait (0 when it did not)."""
        if not self.spec.pauseOnRetryAfter or not self._matches(exc):
            return 0.0
        asked = retry_after(exc, now=self._clock) or 0.0
        return min(asked, self.spec.pauseOnRetryAfter)

    def record(self, exc: BaseException | None) -> bool:
        """Adjust to one outcome; ``True`` when this outcome cut the limit."""
        now = self._clock()
        if exc is None:
            step = 1.0 if self._slow_start else self.spec.increase / self.value
            self.value = min(float(self.ceiling), self.value + step)
            self._served.append(now)
            if self._first_served is None:
                self._first_served = now
            if self.pace is not None:
                # +growth of itself per second: one small step per success
                self.pace += _PROBE_GROWTH if self._probing else self.spec.paceGrowth
            return False
        if not self._matches(exc):
            return False
        if self._last_cut is not None and now - self._last_cut < self.spec.cooldown:
            if self.pace is None or self._probing:
                self._cut_pace(now)  # the pace is still a guess: measure again
            return False
        self._last_cut, self._slow_start = now, False
        self.value = max(float(self.spec.minConcurrency), self.value * self.spec.decrease)
        self._cut_pace(now)
        return True

    def _cut_pace(self, now: float) -> None:
        """Pace at a margin under the rate this replica was actually served at: what
        the provider granted it while it was asking for more."""
        window = max(_PACE_WINDOW, self.spec.cooldown)
        while self._served and now - self._served[0] > window:
            self._served.popleft()
        # Early on, measure from the first answer: a high guess is corrected by the next
        # cut, a low one would take long to grow out of.
        span = min(window, now - (self._first_served or now))
        # A measure over less than the window is a guess: climb fast from it (probing)
        # until the next pushback measures again; a full window settles the pace.
        self._probing = span < window
        if self._served and span > 0:
            self.pace = max(len(self._served) / span * self.spec.paceMargin, _MIN_PACE)
        elif self.pace is not None:
            self.pace = max(self.pace * self.spec.decrease, _MIN_PACE)

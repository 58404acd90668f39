"""Adaptive concurrency: each replica finds how much a rate-limited provider takes.

Additive increase, multiplicative decrease (the rule TCP uses for the same problem):
each success raises the in-flight limit by ``increase / limit`` (so about ``increase``
per window of ``limit`` successes), each rate-limit error of a matched kind (``429`` by
default) multiplies it by ``decrease``, at most once per ``cooldown``: the calls that
were already in flight when the provider pushed back would otherwise cut the limit
once each for one single overload. The limit stays within ``minConcurrency`` and the
actor's ``concurrency``.

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
from collections.abc import Callable

from asya_agents.resiliency.match import ErrorMatcher, retry_after
from asya_agents.resiliency.spec import AdaptiveConcurrencySpec

__all__ = ["AdaptiveLimit"]


class AdaptiveLimit:
    def __init__(self, spec: AdaptiveConcurrencySpec, *, ceiling: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.ceiling = max(ceiling, spec.minConcurrency)
        self.value = float(self.ceiling)
        self._clock = clock
        self._matches = ErrorMatcher(spec.match)
        self._last_cut: float | None = None

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
        if exc is None:
            self.value = min(float(self.ceiling), self.value + self.spec.increase / self.value)
            return False
        if not self._matches(exc):
            return False
        now = self._clock()
        if self._last_cut is not None and now - self._last_cut < self.spec.cooldown:
            return False
        self._last_cut = now
        self.value = max(float(self.spec.minConcurrency), self.value * self.spec.decrease)
        return True

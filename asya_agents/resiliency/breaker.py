"""A circuit breaker per replica: stop taking messages while a dependency is down.

Retrying every message against a provider that is down burns each message's attempts
and sends them to ``error-end`` for nothing. After ``failureThreshold`` consecutive
failures of a matched kind the breaker *opens*: the replica takes no messages, so they
wait in the queue with their attempts untouched. After ``openDuration`` it is
*half-open*: one message goes through as a probe. A probe that succeeds closes the
breaker; one that fails the same way opens it again for another ``openDuration``.

Failures of other kinds (a bad payload) neither count nor reset the streak: they say
nothing about the dependency. Time is injected, so tests walk through every state
without sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from asya_agents.resiliency.match import ErrorMatcher
from asya_agents.resiliency.spec import CircuitBreakerSpec

__all__ = ["CircuitBreaker"]

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    def __init__(self, spec: CircuitBreakerSpec, *, clock: Callable[[], float] = time.time):
        self.spec = spec
        self._clock = clock
        self._matches = ErrorMatcher(spec.match)
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if self._clock() - self.opened_at < self.spec.openDuration:
            return "open"
        return "half-open"

    def seconds_to_probe(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(self.opened_at + self.spec.openDuration - self._clock(), 0.0)

    def allows(self) -> bool:
        """May a message be taken now? In half-open, only while no probe is out."""
        state = self.state
        return state == "closed" or (state == "half-open" and not self.probing)

    def counts(self, exc: BaseException) -> bool:
        return not self._matches or self._matches(exc)

    def record(self, exc: BaseException | None) -> None:
        """Told the outcome of each hop."""
        state = self.state
        if exc is None or not self.counts(exc):
            if exc is None or self.probing:
                self._close()
            return
        if state == "open":
            return  # stragglers from before it opened: the clock already runs
        self.failures += 1
        if state == "half-open" or self.failures >= self.spec.failureThreshold:
            self.opened_at = self._clock()
            self.probing = False

    def _close(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

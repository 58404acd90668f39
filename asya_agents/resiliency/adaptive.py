"""Adaptive concurrency: an actor finds how much a rate-limited provider takes.

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
stream of 429s. So a cut also sets a *pace* (:class:`PaceState`): the rate the actor
was actually served at over the last seconds (what the provider granted while it asked
for more) is the *ceiling*, and calls start at ``paceMargin`` of it. While calls
succeed and the pace is what holds them back (a backlog waits for it), the pace climbs:
back towards the ceiling quickly at first and by ``paceGrowth`` a second close to it,
then, once above it with still no 429, faster and faster (its growth rises with the
distance above the ceiling, up to doubling a second): a ceiling measured while the
actor was not asking for more (the rate before a spike) does not bind for long, while
an actor at the provider's limit stays near it.

The pace is the actor's, not a replica's: :mod:`.shared` keeps one :class:`PaceState`
in the store that shares ``rateLimit`` (SQLite on one machine, Redis on a cluster),
so replicas probing at once do not multiply the 429s and a replica the autoscaler adds
starts at the actor's pace. Each replica also keeps its own, which serves while that
store is unreachable.

A 429's ``Retry-After`` is about the account, not the one request: every call sent
before it passes earns another 429 and burns another attempt. So the replica also
stops taking messages until then (capped by ``pauseOnRetryAfter``); they wait in the
queue with their attempts untouched.

A 429 marks the actor rate-limited (:mod:`asya_agents.resiliency.admission`), and the
local autoscaler adds no replicas to it meanwhile; waiting for the pace does not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from asya_agents.resiliency.match import ErrorMatcher, retry_after
from asya_agents.resiliency.spec import AdaptiveConcurrencySpec

__all__ = ["AdaptiveLimit", "PaceState", "tick_of"]

#: Seconds of successes the served rate is measured over.
_PACE_WINDOW = 2.0
#: Concurrency a replica starts with (slow start), unless the actor allows less.
_SLOW_START = 2
#: How fast a pace grows from a guess (share of itself per second).
_PROBE_GROWTH = 0.05
#: Seconds in which a pace under its ceiling closes most of the gap to it.
_APPROACH = 2.0
#: The fastest a pace grows above its ceiling: doubling a second.
_MAX_GROWTH = 1.0
#: The slowest pace: one call every ten seconds still finds out when the limit lifts.
_MIN_PACE = 0.1
#: Seconds of calls a pace lets through at once.
_PACE_BURST = 0.1
#: Resolution of the served rate's measure, in seconds.
_TICK = 0.1
#: A pace that refused a take this recently holds a backlog back: successes grow it.
_BOUND_FOR = 1.0


def tick_of(now: float) -> float:
    """The start of the tick of the served rate's measure that ``now`` falls in."""
    return round(math.floor(now / _TICK) * _TICK, 3)


@dataclass
class PaceState:
    """What an actor (or one replica) knows of the provider's rate: the pace, the
    ceiling it came from and the pace's own token bucket. Plain data, so that
    :mod:`.shared` can keep it in a store and apply the very same rules there."""

    pace: float | None = None
    ceiling: float | None = None
    probing: bool = True
    cut_at: float | None = None
    first: float | None = None
    #: Successes per tenth of a second, ``[start, count]``, over the last window.
    served: list[list[float]] = field(default_factory=list)
    tokens: float = 1.0
    stamp: float = 0.0
    bound_at: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PaceState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def succeeded(self, count: int, now: float, spec: AdaptiveConcurrencySpec) -> None:
        """``count`` calls succeeded just now: count them served and, while the pace
        holds a backlog back, grow it."""
        self.merge([[tick_of(now), count]], now, spec)

    def merge(self, ticks: list[list[float]], now: float,
              spec: AdaptiveConcurrencySpec) -> None:
        """Successes counted per tick (``[start, count]``, by a replica since it last
        told the actor's state): count them served, then grow as :meth:`succeeded`."""
        count = int(sum(c for _, c in ticks))
        if count <= 0:
            return
        first = min(t for t, _ in ticks)
        self.first = first if self.first is None else min(self.first, first)
        counts = {t: c for t, c in self.served}
        for tick, n in ticks:
            counts[tick] = counts.get(tick, 0) + n
        self.served = [[t, counts[t]] for t in sorted(counts)]
        self._forget(now, max(_PACE_WINDOW, spec.cooldown))
        if self.pace is None or self.bound_at is None or now - self.bound_at > _BOUND_FOR:
            return
        for _ in range(count):  # one small step per success: ``growth`` of itself a second
            self.pace += self._growth(spec)

    def _growth(self, spec: AdaptiveConcurrencySpec) -> float:
        assert self.pace is not None
        growth = spec.paceGrowth
        if self.ceiling:
            if self.pace < self.ceiling:
                growth = max(growth, (self.ceiling - self.pace) / (_APPROACH * self.pace))
            else:  # above the rate that earned the last 429, and still none: probe up
                growth = min(_MAX_GROWTH, growth + self.pace / self.ceiling - 1.0)
        return max(growth, _PROBE_GROWTH) if self.probing else growth

    def _forget(self, now: float, window: float) -> None:
        while self.served and now - self.served[0][0] > window + _TICK:
            self.served.pop(0)

    def served_rate(self, now: float, window: float) -> tuple[float, float]:
        """``(successes a second, seconds measured over)`` for the last ``window``."""
        self._forget(now, window)
        # whole ticks only: from the first inside the window, or from the first answer
        start = max(tick_of(now - window) + _TICK, self.first if self.first is not None
                    else now)
        span = max(now - start, 0.0)
        count = sum(c for s, c in self.served if s >= start - 1e-6)
        return (count / span if span > 0 else 0.0), span

    def cut(self, now: float, spec: AdaptiveConcurrencySpec) -> bool:
        """A pushback: pace at a margin under the rate served (what the provider
        granted while it was asked for more); ``True`` when this was a new cut, not
        one of the same burst (``cooldown``)."""
        if self.cut_at is not None and now - self.cut_at < spec.cooldown:
            if self.pace is None or self.probing:
                self._measure(now, spec)  # the pace is still a guess: measure again
            return False
        self.cut_at = now
        self._measure(now, spec)
        return True

    def _measure(self, now: float, spec: AdaptiveConcurrencySpec) -> None:
        window = max(_PACE_WINDOW, spec.cooldown)
        # Early on, measure from the first answer: a high guess is corrected by the next
        # cut, a low one is grown out of by probing above the ceiling.
        rate, span = self.served_rate(now, window)
        # A measure over less than the window is a guess: climb fast from it (probing)
        # until the next pushback measures again; a full window settles the pace.
        self.probing = span < window - 2 * _TICK
        if rate > 0:
            self.ceiling = rate
            self.pace = max(rate * spec.paceMargin, _MIN_PACE)
        elif self.pace is not None:
            self.pace = max(self.pace * spec.decrease, _MIN_PACE)
            self.ceiling = self.pace / spec.paceMargin
        self.tokens = min(self.tokens, 1.0)

    def take(self, want: int, now: float) -> tuple[int, float]:
        """Take up to ``want`` calls from the pace's bucket: ``(granted, 0)`` or ``(0,
        seconds to wait)``; ``(want, 0)`` while there is no pace."""
        if self.pace is None:
            return want, 0.0
        burst = max(1.0, self.pace * _PACE_BURST)
        self.tokens = min(burst, self.tokens + max(now - self.stamp, 0.0) * self.pace)
        self.stamp = now
        granted = min(want, int(self.tokens + 1e-9))
        if granted:
            self.tokens -= granted
            return granted, 0.0
        self.bound_at = now
        return 0, (1.0 - self.tokens) / self.pace

    def give_back(self, count: int) -> None:
        if self.pace is not None and count > 0:
            self.tokens = min(max(1.0, self.pace * _PACE_BURST), self.tokens + count)


class AdaptiveLimit:
    """One replica's in-flight limit (AIMD), and its own :class:`PaceState`."""

    def __init__(self, spec: AdaptiveConcurrencySpec, *, ceiling: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self.ceiling = max(ceiling, spec.minConcurrency)
        # Slow start: begin low and add one per success until the first pushback,
        # rather than opening with the full concurrency against a cold quota.
        self.value = float(min(self.ceiling, max(spec.minConcurrency, _SLOW_START)))
        self._slow_start = True
        self.own = PaceState(stamp=clock())
        self._clock = clock
        self._matches = ErrorMatcher(spec.match)
        self._last_cut: float | None = None
        #: What happened since :mod:`.shared` last told the actor's store: successes
        #: per tick (``[start, count]``) and the last 429.
        self.unsent: list[list[float]] = []
        self.unsent_cut: float | None = None
        #: The actor's shared pace, as :mod:`.shared` last heard it.
        self.actor_pace: float | None = None

    @property
    def pace(self) -> float | None:
        """Calls per second this replica's own pace allows; ``None`` until a 429."""
        return self.own.pace

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
            self.own.succeeded(1, now, self.spec)
            tick = tick_of(now)
            if self.unsent and self.unsent[-1][0] == tick:
                self.unsent[-1][1] += 1
            else:
                self.unsent.append([tick, 1])
            return False
        if not self._matches(exc):
            return False
        paced = self.own.pace is not None or self.actor_pace is not None
        self.unsent_cut = now
        self.own.cut(now, self.spec)
        if self._last_cut is not None and now - self._last_cut < self.spec.cooldown:
            return False
        self._last_cut, self._slow_start = now, False
        if not paced:
            # Once paced, the pace holds the rate and is what a 429 cuts: halving the
            # calls in flight as well would leave too few to keep up the pace.
            self.value = max(float(self.spec.minConcurrency), self.value * self.spec.decrease)
        return True

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
stream of 429s. So the actor also keeps a *pace* (:class:`PaceState`), a token bucket of
calls a second. It starts at ``_START_PACE`` and climbs fast while it holds a backlog
back, so that the first calls are spread out rather than fired at once by every replica.
What the provider granted is counted when the calls went out (not when they were
answered, which lags by a call's latency). A 429 measures the provider: between two
429s its bucket went from empty to empty, and the calls granted meanwhile are its rate;
the window before a 429 counts what the bucket held on top. That measure is the
*ceiling* and calls restart at ``paceMargin`` of it. A 429 is timed by when its call
went out: one sent before the last cut is of that cut's burst (the client library was
slow to raise it) and corrects its measure; one sent after, at the cut's pace, is news
and cuts again. While calls succeed and the pace is what holds them back, the pace
climbs: back towards the ceiling within a second or two and by ``paceGrowth`` a second
close to it, then, once above it with still no 429, faster and faster (its growth rises
with the distance above the ceiling, up to doubling a second): a ceiling measured while
the actor was not asking for more (the rate before a spike) does not bind for long,
while an actor at the provider's limit stays near it.

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

__all__ = ["AdaptiveLimit", "PaceState", "add_tick", "tick_of"]

#: Seconds of calls the granted rate is measured over.
_PACE_WINDOW = 2.0
#: Concurrency a replica starts with (slow start), unless the actor allows less.
_SLOW_START = 2
#: The pace an actor starts at, before any pushback (calls a second): what it sends in
#: its first tenths of a second is spread out, not fired at once by every replica.
_START_PACE = 10.0
#: How fast the starting pace grows while it holds a backlog back (share of itself per
#: second): doubling in about a third of a second, as a slow start's window per answer.
_START_GROWTH = 2.0
#: Seconds over which the starting pace's climb is measured when the first 429 ends it.
_START_WINDOW = 1.0
#: How fast a pace grows from a guess (a measure over less than a window).
_PROBE_GROWTH = 0.25
#: Seconds in which a pace under its ceiling closes most of the gap to it.
_APPROACH = 1.0
#: The fastest a pace grows above its ceiling: doubling a second.
_MAX_GROWTH = 1.0
#: The slowest pace: one call every ten seconds still finds out when the limit lifts.
_MIN_PACE = 0.1
#: Seconds of calls a pace lets through at once.
_PACE_BURST = 0.1
#: Resolution of the granted rate's measure, in seconds.
_TICK = 0.1
#: A pace that refused a take this recently holds a backlog back: successes grow it.
_BOUND_FOR = 1.0
#: A pace this many times what went out over the last second is not what holds the
#: calls back, and does not grow: it would let a burst through once what does lets go.
_UNUSED = 1.5
#: Seconds between two 429s over which the calls granted measure the provider's rate.
_BETWEEN = (1.0, 30.0)
#: A pace this much above the measure between two 429s says the measure is short.
_SLACK = 0.1
#: Seconds after a cut in which a refused call is still of its burst: the provider's
#: bucket, just emptied, refills only by the little the new pace leaves it.
_SETTLE = 0.5
#: A 429 whose call went out longer ago than this is timed when it is heard of.
_STALE = 60.0
#: A measure between two 429s this far under the last window's is not one (the actor
#: asked for less than the limit meanwhile, the provider's bucket filled and overflowed).
_BETWEEN_FLOOR = 0.8


def tick_of(now: float) -> float:
    """The start of the tick of the granted rate's measure that ``now`` falls in."""
    return round(math.floor(now / _TICK) * _TICK, 3)


def add_tick(ticks: list[list[float]], tick: float, calls: float) -> None:
    """Add ``calls`` to the last ``[start, count]`` of ``ticks`` when it is ``tick``'s,
    else start one."""
    if ticks and ticks[-1][0] == tick:
        ticks[-1][1] += calls
    else:
        ticks.append([tick, calls])


@dataclass
class PaceState:
    """What an actor (or one replica) knows of the provider's rate: the pace, the
    ceiling it came from and the pace's own token bucket. Plain data, so that
    :mod:`.shared` can keep it in a store and apply the very same rules there.

    What the provider granted is counted when it granted it: a call is counted when it
    goes out (the replica received a message for a call the pace allowed) and uncounted
    when it is answered 429 (a provider refuses at once, before any work). Counting
    answers instead would lag by a call's latency (seconds for an LLM): a pace measured
    while it climbed would be the rate of a second ago."""

    pace: float | None = None
    ceiling: float | None = None
    probing: bool = True
    cut_at: float | None = None
    #: Calls granted per tenth of a second, ``[start, count]``, over the last window.
    sent: list[list[float]] = field(default_factory=list)
    tokens: float = 1.0
    stamp: float = 0.0
    bound_at: float | None = None
    #: Calls that went out, net of 429s, ever: what a 429's mark is read against.
    total: float = 0.0
    #: The last 429's ``[time the call went out, total then]``: the provider had
    #: nothing left at that moment.
    empty: list[float] | None = None
    #: Seconds of ``sent`` kept: the window a cut measures over.
    keep: float = _PACE_WINDOW
    #: The last cut's measure between two 429s, ``[from, until, calls granted, the pace
    #: then]``.
    between: list[float] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PaceState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def starting(self) -> bool:
        """Still at the starting pace: no pushback yet."""
        return self.ceiling is None and self.cut_at is None

    # -- what the provider granted ----------------------------------------------------

    def count(self, calls: float, now: float) -> None:
        """``calls`` went out just now (negative: answered 429)."""
        if not calls:
            return
        add_tick(self.sent, tick_of(now), calls)
        self.total += calls
        self._forget(now)

    def merge(self, ticks: list[list[float]], now: float) -> None:
        """Calls counted per tick (``[start, count]``) by a replica since it last told
        the actor's state (its ticks may come before another replica's last one)."""
        if not ticks:
            return
        counts = {t: c for t, c in self.sent}
        for tick, calls in ticks:
            counts[tick] = counts.get(tick, 0) + calls
            self.total += calls
        self.sent = [[t, counts[t]] for t in sorted(counts)]
        self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop the ticks older than ``keep``: the state stays the size of a window."""
        while self.sent and now - self.sent[0][0] > self.keep + _TICK:
            self.sent.pop(0)

    def _after(self, moment: float) -> float:
        """Calls counted after ``moment``: in the ticks after the one it falls in, and
        the share of that one's that comes after it (calls spread over a tick)."""
        tick = tick_of(moment)
        later = sum(c for t, c in self.sent if t > tick + 1e-6)
        own = sum(c for t, c in self.sent if abs(t - tick) < 1e-6)
        return later + own * max(0.0, tick + _TICK - moment) / _TICK

    def granted_rate(self, until: float, window: float) -> tuple[float, float]:
        """``(calls granted a second, seconds measured over)`` over the ``window`` up to
        ``until``, from its first tick in which calls went out: a replica asks for calls
        while the queue is empty too, and sends none."""
        begin = tick_of(until - window) + _TICK  # whole ticks only
        last = tick_of(until)
        start = next((t for t, c in self.sent if begin - 1e-6 <= t <= last + 1e-6 and c > 0),
                     until)
        span = max(until - start, 0.0)
        count = sum(c for t, c in self.sent if start - 1e-6 <= t <= last + 1e-6)
        return (max(count, 0.0) / span if span > 0 else 0.0), span

    # -- growth -----------------------------------------------------------------------

    def succeeded(self, count: int, now: float, spec: AdaptiveConcurrencySpec) -> None:
        """``count`` calls succeeded just now: while the pace holds a backlog back, each
        grows it (by ``growth`` of itself a second, at a call per pace)."""
        if count <= 0 or self.pace is None or self.bound_at is None or \
                now - self.bound_at > _BOUND_FOR:
            return
        rate, span = self.granted_rate(now, _BOUND_FOR)
        if span >= _BOUND_FOR / 2 and self.pace > _UNUSED * rate:
            return  # something else holds the calls back (the replicas' concurrency)
        for _ in range(count):
            self.pace += self._growth(spec)

    def _growth(self, spec: AdaptiveConcurrencySpec) -> float:
        assert self.pace is not None
        if self.starting:
            return _START_GROWTH
        growth = spec.paceGrowth
        if self.ceiling:
            if self.pace < self.ceiling:
                growth = max(growth, (self.ceiling - self.pace) / (_APPROACH * self.pace))
            else:  # above the rate that earned the last 429, and still none: probe up
                growth = min(_MAX_GROWTH, growth + self.pace / self.ceiling - 1.0)
        return max(growth, _PROBE_GROWTH) if self.probing else growth

    # -- pushback ---------------------------------------------------------------------

    def cut(self, now: float, spec: AdaptiveConcurrencySpec,
            sent: float | None = None) -> bool:
        """A call answered 429, heard of just now; ``sent``: when it went out (``None``:
        not known, taken as now). Pace at a margin under the rate the provider granted;
        ``True`` when this was a new cut, not one of the same burst.

        A 429 is of the burst the last cut answered when its call went out before that
        cut (a client library takes its time to raise one: tens of ms, hundreds for the
        first) or within ``_SETTLE`` after it (the provider's bucket, just emptied, has
        not refilled yet): it says nothing of the new pace. A call that went out later,
        paced by the cut, and was still refused is news: the pace is still too high.
        Without the time it went out, 429s within ``cooldown`` of the last cut are of
        its burst."""
        at = now if sent is None or not 0.0 <= now - sent <= _STALE else sent
        self.count(-1, at)
        if self.cut_at is None:
            new = True
        elif sent is not None:
            new = at > self.cut_at + _SETTLE
        else:
            new = now - self.cut_at >= spec.cooldown
        mark = self.total - self._after(at)
        if new:
            # Between two 429s the provider's bucket went from empty to empty: what it
            # granted meanwhile is its rate, with no burst in it (a window's measure
            # counts what the bucket held at the window's start on top).
            self.between = None
            if self.empty is not None and _BETWEEN[0] <= at - self.empty[0] <= _BETWEEN[1]:
                self.between = [self.empty[0], at, mark - self.empty[1], self.pace or 0.0]
            refused_at = None if self.starting else self.pace
            self._measure(at, spec, ramp=self.starting)
            if refused_at is not None and self.ceiling is not None and \
                    self.ceiling > refused_at:
                # The provider refused a call sent at this pace: its limit is under it,
                # whatever a measure that counts a full bucket's calls says.
                self.ceiling = refused_at
                self.pace = max(refused_at * spec.paceMargin, _MIN_PACE)
            self.cut_at = now
        elif self.between is not None and at <= self.between[1]:
            # A call of the same burst, sent before the first refused one went out and
            # counted as granted in that measure: take it off, measure again.
            self.between[2] -= 1
            self._measure(self.between[1], spec)
        elif self.probing:
            self._measure(at, spec, ramp=True)  # still a guess: each 429 measures again
        if self.empty is None or at >= self.empty[0]:
            self.empty = [at, mark]
        return new

    def _measure(self, until: float, spec: AdaptiveConcurrencySpec, *,
                 ramp: bool = False) -> None:
        window = self.keep = max(_PACE_WINDOW, spec.cooldown)
        # The starting pace's climb is measured over its last second: over a whole
        # window it would be the rate of a second ago, not the provider's.
        rate, span = self.granted_rate(until, _START_WINDOW if self.starting else window)
        # A measure over less than the window, or over a climb, is a guess: climb fast
        # from it (probing) until the next pushback measures again.
        probing = ramp or span < window - 2 * _TICK
        if self.between is not None:
            start, end, calls, pace = self.between
            since = max(calls, 0.0) / (end - start)
            if pace > (1 + _SLACK) * since:
                # Refused at a pace well above what went out between the 429s: the pace
                # was under the limit for a while meanwhile and the provider's bucket,
                # full, let what it would have granted overflow. The limit lies between
                # that measure and the lower of the pace and the window's measure.
                since = (since + min(pace, rate)) / 2
            if self.probing:
                # A climb from a guess: the bucket filled while the pace was under the
                # limit, and what it let overflow is missing from the measure between
                # the 429s, which is then under the limit; the window's is over it by
                # what the bucket held at its start. The pace settles from the higher.
                rate, probing = max(rate, since), False
            elif since >= _BETWEEN_FLOOR * rate:
                rate, probing = since, False
            else:
                self.between = None
        self.probing = probing
        if rate > 0:
            self.ceiling = rate
            self.pace = max(rate * spec.paceMargin, _MIN_PACE)
        elif self.pace is not None:
            self.pace = max(self.pace * spec.decrease, _MIN_PACE)
            self.ceiling = self.pace / spec.paceMargin
        self.tokens = min(self.tokens, 1.0)

    # -- the pace's bucket ------------------------------------------------------------

    def take(self, want: int, now: float) -> tuple[int, float]:
        """Take up to ``want`` calls from the pace's bucket: ``(granted, 0)`` or ``(0,
        seconds to wait)``. The first take starts the pace at its starting value."""
        if self.pace is None:
            self.pace, self.stamp, self.tokens = _START_PACE, now, 1.0
        burst = max(1.0, self.pace * _PACE_BURST)
        self.tokens = min(burst, self.tokens + max(now - self.stamp, 0.0) * self.pace)
        self.stamp = now
        granted = min(want, int(self.tokens + 1e-9))
        if granted:
            self.tokens -= granted
            return granted, 0.0
        if want:
            self.bound_at = now
        return 0, (1.0 - self.tokens) / self.pace

    def give_back(self, count: int) -> None:
        """``count`` calls taken but not sent (no message was waiting for them)."""
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
        #: What happened since :mod:`.shared` last told the actor's store: calls sent
        #: per tick (``[start, count]``), successes and 429s.
        self.unsent_ok = 0
        #: When each call answered 429 went out (``None``: not known).
        self.unsent_refused: list[float | None] = []
        self.unsent_sent: list[list[float]] = []
        #: The actor's shared pace, as :mod:`.shared` last heard it.
        self.actor_pace: float | None = None

    @property
    def pace(self) -> float | None:
        """Calls per second this replica's own pace allows; ``None`` until it first
        takes from it (a replica that shares the actor's pace does not)."""
        return self.own.pace

    @property
    def current(self) -> int:
        """Messages this replica may hold now."""
        return max(self.spec.minConcurrency, math.floor(self.value))

    def sent(self, count: int) -> None:
        """``count`` calls went out just now."""
        if count <= 0:
            return
        now = self._clock()
        self.own.count(count, now)
        add_tick(self.unsent_sent, tick_of(now), count)

    def pause_for(self, exc: BaseException) -> float:
        """Seconds the provider asked the whole client to wait (0 when it did not)."""
        if not self.spec.pauseOnRetryAfter or not self._matches(exc):
            return 0.0
        asked = retry_after(exc, now=self._clock) or 0.0
        return min(asked, self.spec.pauseOnRetryAfter)

    def record(self, exc: BaseException | None, sent: float | None = None) -> bool:
        """Adjust to one outcome of a call that went out at ``sent`` (``None``: not
        known); ``True`` when this outcome cut the limit."""
        now = self._clock()
        if exc is None:
            step = 1.0 if self._slow_start else self.spec.increase / self.value
            self.value = min(float(self.ceiling), self.value + step)
            self.own.succeeded(1, now, self.spec)
            self.unsent_ok += 1
            return False
        if not self._matches(exc):
            return False
        paced = self.own.pace is not None or self.actor_pace is not None
        self.unsent_refused.append(sent)
        self.own.cut(now, self.spec, sent)  # uncounts the refused call
        if self._last_cut is not None and now - self._last_cut < self.spec.cooldown:
            return False
        self._last_cut, self._slow_start = now, False
        if not paced:
            # Once paced, the pace holds the rate and is what a 429 cuts: halving the
            # calls in flight as well would leave too few to keep up the pace.
            self.value = max(float(self.spec.minConcurrency), self.value * self.spec.decrease)
        return True

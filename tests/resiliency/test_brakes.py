"""The brakes of the Admission seam: circuit breaker, adaptive concurrency, the shared
rate limit, and the mark that stops the autoscaler; all on an injected clock."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from asya_agents.autoscaler import Autoscaler
from asya_agents.manifest import ScalingSpec
from asya_agents.resiliency.adaptive import AdaptiveLimit
from asya_agents.resiliency.admission import ResilientAdmission
from asya_agents.resiliency.breaker import CircuitBreaker
from asya_agents.resiliency.limiter import LocalBucket, RedisBucket, SQLiteBucket
from asya_agents.resiliency.spec import AdaptiveConcurrencySpec, CircuitBreakerSpec
from asya_agents.resiliency.throttle import ThrottleMarks
from tests.conftest import require_service

from .conftest import FakeClock
from .res_steps import StatusError


def breaker(clock: FakeClock) -> CircuitBreaker:
    spec = CircuitBreakerSpec(failureThreshold=3, openDuration=30.0, match=["5xx"])
    return CircuitBreaker(spec, clock=clock)


def test_breaker_opens_after_consecutive_matched_failures(clock: FakeClock) -> None:
    cb = breaker(clock)
    # Given two 503s, a bad payload (not the dependency's fault), then a third 503
    cb.record(StatusError(503))
    cb.record(StatusError(503))
    cb.record(ValueError("bad payload"))
    assert cb.state == "closed"
    cb.record(StatusError(503))
    # Then the breaker is open and takes nothing
    assert cb.state == "open" and not cb.allows()


def test_a_success_resets_the_streak(clock: FakeClock) -> None:
    cb = breaker(clock)
    for outcome in (StatusError(500), StatusError(500), None, StatusError(500)):
        cb.record(outcome)
    assert cb.state == "closed" and cb.failures == 1


def test_breaker_probes_after_open_duration_and_closes_on_success(clock: FakeClock) -> None:
    cb = breaker(clock)
    for _ in range(3):
        cb.record(StatusError(502))
    # When 29s pass it is still open; at 30s it lets one probe through
    clock.advance(29.0)
    assert cb.state == "open" and cb.seconds_to_probe() == pytest.approx(1.0)
    clock.advance(1.0)
    assert cb.state == "half-open" and cb.allows()
    cb.probing = True
    assert not cb.allows(), "one probe at a time"
    # Then a successful probe closes it
    cb.record(None)
    assert cb.state == "closed" and cb.allows()


def test_a_failed_probe_opens_it_for_another_period(clock: FakeClock) -> None:
    cb = breaker(clock)
    for _ in range(3):
        cb.record(StatusError(502))
    clock.advance(30.0)
    cb.probing = True
    cb.record(StatusError(503))
    assert cb.state == "open"
    clock.advance(29.9)
    assert cb.state == "open"
    clock.advance(0.1)
    assert cb.state == "half-open"


def test_aimd_starts_slow_halves_once_per_cooldown_and_climbs_back(clock: FakeClock) -> None:
    spec = AdaptiveConcurrencySpec(minConcurrency=1, decrease=0.5, increase=1.0, cooldown=1.0)
    limit = AdaptiveLimit(spec, ceiling=16, clock=clock)
    # Given a replica in slow start: 2 in flight, one more per success
    assert limit.current == 2
    for _ in range(14):
        limit.record(None)
    assert limit.current == 16
    # When a burst of eight 429s comes from calls that were all in flight together
    cuts = [limit.record(StatusError(429)) for _ in range(8)]
    # Then the limit is cut once, not eight times
    assert cuts.count(True) == 1 and limit.current == 8
    clock.advance(1.0)
    assert limit.record(StatusError(429)) and limit.current == 4
    assert not limit.record(StatusError(500)), "only rate-limit errors cut"
    # When calls succeed, it climbs about one per window of successes
    for _ in range(10):
        limit.record(None)
    assert limit.current == 6
    for _ in range(500):
        limit.record(None)
    assert limit.current == 16, "never above the actor's concurrency"


def _send(limit: AdaptiveLimit, clock: FakeClock, *, rate: float, seconds: float) -> None:
    """Calls go out at ``rate`` for ``seconds`` and all succeed."""
    for _ in range(round(rate * seconds)):
        clock.advance(1 / rate)
        limit.sent(1)
        limit.record(None)


def _refused(limit: AdaptiveLimit, clock: FakeClock) -> bool:
    """One more call goes out and is answered 429 at once."""
    limit.sent(1)
    return limit.record(StatusError(429), clock.now)


def test_a_cut_paces_the_replica_under_the_rate_it_was_served(clock: FakeClock) -> None:
    spec = AdaptiveConcurrencySpec(cooldown=1.0, paceMargin=0.9, paceGrowth=0.01)
    limit = AdaptiveLimit(spec, ceiling=16, clock=clock)
    # Given a replica whose calls went out at 10/s for three seconds, all served
    _send(limit, clock, rate=10, seconds=3)
    assert limit.pace is None, "no pace of its own before it takes from one"
    # When the provider pushes back for the first time
    _refused(limit, clock)
    # Then it paces at 90 % of the 10/s that went out: a guess (it ends a start)
    assert limit.pace == pytest.approx(9.0, rel=0.06) and limit.own.probing
    # When for two seconds its calls go out at that pace, a backlog waiting for it, and
    # the provider pushes back again
    first, went = clock.now, 0
    while clock.now < first + 2.0:
        clock.advance(0.01)
        if limit.own.take(1, clock.now)[0]:
            limit.sent(1)
            limit.record(None)
            went += 1
    refused_at = limit.pace
    _refused(limit, clock)
    # Then what went out between the two 429s measures the provider's rate (no longer a
    # guess), at most the pace that was refused, and the pace sits at 90 % of it
    measured = min(went / (clock.now - first), refused_at)
    assert limit.own.ceiling == pytest.approx(measured, rel=0.03) and not limit.own.probing
    assert limit.pace == pytest.approx(0.9 * measured, rel=0.03)
    # and, while it holds a backlog back, it climbs back towards the ceiling, faster
    # than its 1 % a second while far under it
    before = limit.pace
    clock.advance(0.2)
    assert limit.own.take(100, clock.now)[0] >= 1
    assert limit.own.take(100, clock.now) == (0, pytest.approx(1 / before, rel=0.1))
    for _ in range(9):
        limit.record(None)
    assert before + 0.09 < limit.pace < limit.own.ceiling


def test_a_429_of_calls_sent_before_the_cut_is_the_same_burst(clock: FakeClock) -> None:
    spec = AdaptiveConcurrencySpec(cooldown=5.0, paceMargin=0.9, paceGrowth=0.01)
    limit = AdaptiveLimit(spec, ceiling=16, clock=clock)
    _send(limit, clock, rate=10, seconds=3)
    assert _refused(limit, clock), "the first 429 cuts"
    cut = limit.pace
    # Given calls that went out before that 429 was heard of, answered 429 later
    went = clock.now - 0.05
    clock.advance(0.2)
    limit.sent(1)
    limit.record(StatusError(429), went)
    # Then they are of the burst that first 429 answered, not a new pushback
    assert limit.own.cut_at is not None and limit.own.cut_at < went + 0.2
    assert limit.pace is not None and limit.pace <= cut  # type: ignore[operator]
    cut_at = limit.own.cut_at
    # When a call that went out after the cut, at its pace, is answered 429 (well within
    # the cooldown): that is news, the pace is still too high, and it cuts again
    clock.advance(0.5)
    _refused(limit, clock)
    assert limit.own.cut_at > cut_at


async def test_local_bucket_grants_burst_then_rate(clock: FakeClock) -> None:
    bucket = LocalBucket(rate=10.0, burst=5, clock=clock)
    assert await bucket.take(8) == (5, 0.0)
    granted, wait = await bucket.take(1)
    assert granted == 0 and wait == pytest.approx(0.1)
    clock.advance(0.35)
    assert (await bucket.take(8))[0] == 3
    await bucket.give_back(2)
    assert (await bucket.take(8))[0] == 2


async def test_sqlite_bucket_is_shared_by_replicas(tmp_path: Path, clock: FakeClock) -> None:
    # Given two replicas (two connections) of one actor limited to 4/s, burst 4
    one = SQLiteBucket(tmp_path / "limits.db", "res/judge", 4.0, 4, clock=clock)
    two = SQLiteBucket(tmp_path / "limits.db", "res/judge", 4.0, 4, clock=clock)
    other = SQLiteBucket(tmp_path / "limits.db", "res/upload", 4.0, 4, clock=clock)
    try:
        # When both take as much as they can
        got = [(await one.take(3))[0], (await two.take(3))[0], (await one.take(3))[0]]
        # Then together they got the burst, not twice it; another actor is untouched
        assert got == [3, 1, 0]
        assert (await other.take(4))[0] == 4
        clock.advance(0.5)
        assert (await two.take(5))[0] == 2
    finally:
        for bucket in (one, two, other):
            await bucket.close()


async def test_redis_bucket_is_shared_by_replicas(clock: FakeClock) -> None:
    require_service("Redis", port=6379)
    name = f"test-{uuid.uuid4().hex}"
    one = RedisBucket("redis://127.0.0.1:6379/0", name, 4.0, 4, clock=clock)
    two = RedisBucket("redis://127.0.0.1:6379/0", name, 4.0, 4, clock=clock)
    try:
        got = [(await one.take(3))[0], (await two.take(3))[0], (await one.take(3))[0]]
        assert got == [3, 1, 0]
        granted, wait = await two.take(1)
        assert granted == 0 and wait == pytest.approx(0.25)
        await one.give_back(1)
        clock.advance(0.25)
        assert (await two.take(5))[0] == 2
    finally:
        await one._client.delete(one.key)
        await one.close()
        await two.close()


async def test_admission_waits_for_tokens_and_marks_the_actor(
    tmp_path: Path, clock: FakeClock
) -> None:
    marks = ThrottleMarks(tmp_path)
    adm = ResilientAdmission(actor="judge", bucket=LocalBucket(2.0, 2, clock=clock),
                             marks=marks, clock=clock)
    stop = asyncio.Event()
    # Given a bucket of two, taken
    assert await adm.acquire(5, stop) == 2
    # When the next acquire has to wait, the actor is marked rate-limited
    waiting = asyncio.ensure_future(adm.acquire(5, stop))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    assert marks.limited("judge", now=clock.now) and adm.rate_limited()
    assert adm.rate_limit_hits() >= 1, "the wait is counted for asya_rate_limit_hits_total"
    # Then time passing lets it through with what was earned
    clock.advance(1.0)
    assert await asyncio.wait_for(waiting, 2.0) == 2
    stop.set()


async def test_half_open_admits_a_single_probe(clock: FakeClock) -> None:
    cb = breaker(clock)
    adm = ResilientAdmission(actor="judge", breaker=cb, clock=clock)
    for _ in range(3):
        adm.outcome(StatusError(500))
    stop = asyncio.Event()
    blocked = asyncio.ensure_future(adm.wait(stop))
    await asyncio.sleep(0.05)
    assert not blocked.done(), "open: the loop takes nothing"
    clock.advance(30.0)
    await asyncio.wait_for(blocked, 2.0)
    assert adm.limit(8) == 1 and await adm.acquire(8, stop) == 1
    assert not cb.allows()
    adm.outcome(None)
    assert cb.state == "closed" and adm.limit(8) == 8


def test_the_autoscaler_adds_no_replicas_to_a_rate_limited_actor(
    tmp_path: Path, clock: FakeClock
) -> None:
    marks = ThrottleMarks(tmp_path)
    scaler = Autoscaler(ScalingSpec(maxReplicaCount=8, queueLength=10), clock=clock)
    marks.mark("judge", clock.now + 10)
    held = scaler.decide(200, 2, hold=marks.limited("judge", now=clock.now))
    assert held.replicas == 2 and "held" in held.reason
    clock.advance(11)
    free = scaler.decide(200, 2, hold=marks.limited("judge", now=clock.now))
    assert free.replicas == 8

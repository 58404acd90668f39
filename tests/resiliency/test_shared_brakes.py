"""The adaptive pace and the breaker are the actor's: its replicas share them through the
store that shares ``rateLimit`` (real Redis here, SQLite on one machine), and each goes
on by itself when that store is unreachable; all on an injected clock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from asya_agents.resiliency.adaptive import AdaptiveLimit, PaceState
from asya_agents.resiliency.admission import ResilientAdmission
from asya_agents.resiliency.breaker import CircuitBreaker
from asya_agents.resiliency.build import admission
from asya_agents.resiliency.shared import RedisState, SharedBrakes, SQLiteState
from asya_agents.resiliency.spec import (
    AdaptiveConcurrencySpec,
    CircuitBreakerSpec,
    ResiliencySpec,
)
from asya_agents.resiliency.throttle import ThrottleMarks
from tests.conftest import require_service

from .conftest import FakeClock
from .res_steps import StatusError

pytestmark = pytest.mark.timeout(30)

REDIS = "redis://127.0.0.1:6379/0"
PACING = AdaptiveConcurrencySpec(cooldown=1.0, paceMargin=0.9, paceGrowth=0.01)


class Replica:
    """One replica's brakes: its admission over the actor's shared state."""

    def __init__(self, store: RedisState | SQLiteState, clock: FakeClock, *,
                 breaker: CircuitBreakerSpec | None = None, max_replicas: int = 4) -> None:
        self.adaptive = AdaptiveLimit(PACING, ceiling=16, clock=clock)
        self.breaker = CircuitBreaker(breaker, clock=clock) if breaker else None
        self.shared = SharedBrakes(store, actor="judge", adaptive=self.adaptive,
                                   breaker=self.breaker, unavailable_after=30.0,
                                   max_replicas=max_replicas, clock=clock)
        self.admission = ResilientAdmission(actor="judge", adaptive=self.adaptive,
                                            breaker=self.breaker, shared=self.shared,
                                            clock=clock)


@pytest.fixture
async def redis_name() -> AsyncIterator[str]:
    require_service("Redis", port=6379)
    name = f"test-{uuid.uuid4().hex}"
    yield name
    cleanup = RedisState(REDIS, name)
    await cleanup._client.delete(cleanup.key)
    await cleanup.close()


async def granted_over(replicas: list[Replica], clock: FakeClock, seconds: float) -> int:
    """Calls the replicas take together, each asking as often as it may, over
    ``seconds`` of the fake clock in steps of 10 ms."""
    total = 0
    for _ in range(round(seconds / 0.01)):
        clock.advance(0.01)
        for rep in replicas:
            got, _ = await rep.shared.take(4)
            total += got
    return total


async def served_then_429(rep: Replica, clock: FakeClock, *, rate: float = 10.0) -> None:
    """``rep``'s calls go out at ``rate`` a second for three seconds, all served, then
    one is answered 429."""
    clock.advance(0.5 / rate)  # calls go out in the middle of the measure's ticks
    for _ in range(round(3 * rate)):
        clock.advance(1 / rate)
        rep.adaptive.sent(1)
        rep.admission.outcome(None)
    rep.adaptive.sent(1)
    rep.admission.outcome(StatusError(429), clock.now)
    await rep.shared.take(0)  # tells the store


async def test_two_replicas_pace_at_one_shared_pace(redis_name: str, clock: FakeClock) -> None:
    one = Replica(RedisState(REDIS, redis_name), clock)
    two = Replica(RedisState(REDIS, redis_name), clock)
    try:
        # Given replica one, served 10 calls/s, pushed back by the provider
        await served_then_429(one, clock)
        # When both replicas ask for all they may over the next ten seconds
        taken = await granted_over([one, two], clock, 10.0)
        # Then together they take about one pace, 90 % of the 10/s the actor was served
        # (rising slowly while they wait for it), not one pace each: replica two, never
        # pushed back itself, is paced by what replica one learned
        pace = one.shared.pace
        assert pace == two.shared.pace == pytest.approx(9.0, rel=0.06)
        assert 0.95 * pace * 10 <= taken <= 1.05 * pace * 10 + 1
        assert two.adaptive.pace is None, "its own pace never learned anything"
    finally:
        await one.shared.store.close()
        await two.shared.store.close()


async def test_a_new_replica_starts_at_the_actors_pace(redis_name: str,
                                                       clock: FakeClock) -> None:
    first = Replica(RedisState(REDIS, redis_name), clock)
    try:
        await served_then_429(first, clock)
        learned = first.shared.pace
        assert learned == pytest.approx(9.0, rel=0.06)
        # When the autoscaler adds a replica, alone this time (the first one is idle)
        added = Replica(RedisState(REDIS, redis_name), clock)
        taken = await granted_over([added], clock, 5.0)
        # Then it starts at the actor's learned pace, not unpaced from slow start
        assert added.shared.pace is not None and added.shared.pace >= learned
        assert taken <= 5 * 10.5
        await added.shared.store.close()
    finally:
        await first.shared.store.close()


async def test_a_breaker_opened_by_one_replica_holds_the_others(
        redis_name: str, clock: FakeClock) -> None:
    spec = CircuitBreakerSpec(failureThreshold=3, openDuration=30.0, match=["5xx"])
    one = Replica(RedisState(REDIS, redis_name), clock, breaker=spec)
    two = Replica(RedisState(REDIS, redis_name), clock, breaker=spec)
    assert one.breaker is not None and two.breaker is not None
    stop = asyncio.Event()
    try:
        assert await two.admission.acquire(1, stop) == 1
        await two.admission.release(0)  # its call went out
        # Given replica one meets three 503s in a row: its breaker opens
        for _ in range(3):
            one.admission.outcome(StatusError(503))
        assert one.breaker.state == "open"
        await one.shared.take(0)
        # When replica two next asks for work, it hears of it and takes nothing
        clock.advance(0.2)  # later: the starting pace (10 a second) has a call again
        await two.admission.acquire(1, stop)
        assert two.breaker.state == "open"
        blocked = asyncio.ensure_future(two.admission.wait(stop))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        # Then a probe that succeeds on replica one closes it for replica two too
        clock.advance(30.0)
        await asyncio.wait_for(blocked, 5.0)
        assert await one.admission.acquire(1, stop) == 1
        one.admission.outcome(None)
        assert one.breaker.state == "closed"
        await one.shared.take(0)
        await two.shared.refresh()
        assert two.breaker.state == "closed"
    finally:
        stop.set()
        await one.shared.store.close()
        await two.shared.store.close()


async def test_sqlite_shares_the_pace_on_one_machine(tmp_path: Path, clock: FakeClock) -> None:
    one = Replica(SQLiteState(tmp_path / "limits.db", "res/judge"), clock)
    two = Replica(SQLiteState(tmp_path / "limits.db", "res/judge"), clock)
    try:
        await served_then_429(one, clock)
        taken = await granted_over([one, two], clock, 5.0)
        pace = one.shared.pace
        assert pace is not None and pace == two.shared.pace
        assert 0.95 * pace * 5 <= taken <= 1.05 * pace * 5 + 1
    finally:
        await one.shared.store.close()
        await two.shared.store.close()


async def test_a_store_never_reached_leaves_each_replica_on_its_own(
        clock: FakeClock) -> None:
    # Given no Redis where the actor runs (a closed port)
    rep = Replica(RedisState("redis://127.0.0.1:1/0", "nowhere"), clock)
    # When the replica asks for calls, it gets them at once (no hold), at its own
    # starting pace (one at a time, 10 a second)
    assert await rep.shared.take(3) == (1, 0.0) and rep.shared.alone
    # Then a 429 paces it by its own measure, as a replica without a store
    await served_then_429(rep, clock)
    assert rep.adaptive.pace == pytest.approx(9.0, rel=0.06)
    taken = await granted_over([rep], clock, 4.0)
    assert 8.5 * 4 <= taken <= 10.5 * 4
    await rep.shared.store.close()


async def test_an_outage_holds_then_goes_on_at_a_share_of_the_actors_pace(
        redis_name: str, clock: FakeClock) -> None:
    rep = Replica(RedisState(REDIS, redis_name), clock, max_replicas=3)
    try:
        await served_then_429(rep, clock, rate=30.0)
        actor_pace = rep.shared.pace
        assert actor_pace == pytest.approx(27.0, rel=0.06)
    finally:
        await rep.shared.store.close()
    # Given the store stops answering, after this replica had reached it
    rep.shared.store = RedisState("redis://127.0.0.1:1/0", redis_name)
    clock.advance(1.0)
    # When it fails, the replica holds: takes nothing for unavailableAfter
    assert (await rep.shared.take(3))[0] == 0 and not rep.shared.alone
    clock.advance(29.5)
    assert (await rep.shared.take(3))[0] == 0
    # Then it goes on by itself, paced at its share of the actor's pace (27/s over 3)
    clock.advance(1.0)
    await rep.shared.take(1)
    assert rep.shared.alone and rep.adaptive.pace == pytest.approx(actor_pace / 3)
    await rep.shared.store.close()


def test_a_pace_far_above_its_ceiling_probes_up_fast_while_a_backlog_waits() -> None:
    # Given a pace cut from the 1 call/s an actor was served before a spike
    spec = AdaptiveConcurrencySpec(cooldown=1.0, paceMargin=0.9, paceGrowth=0.01)
    state = PaceState(pace=0.9, ceiling=1.0, probing=False, stamp=0.0)
    now, served = 0.0, 0
    # When for 20 s every call it allows succeeds while more wait (a backlog)
    while now < 20.0:
        now += 0.01
        got, _ = state.take(100, now)
        state.count(got, now)
        state.succeeded(got, now, spec)
        served += got
    # Then it is far above the old ceiling: the provider never said otherwise
    assert state.pace is not None and state.pace > 5.0
    # while at 1 %/s the same 20 s would have added about a fifth


async def test_the_shared_state_stays_the_size_of_a_window(tmp_path: Path,
                                                           clock: FakeClock) -> None:
    rep = Replica(SQLiteState(tmp_path / "limits.db", "res/judge"), clock)
    try:
        # Given a replica whose calls go out for a minute, never refused
        for _ in range(600):
            clock.advance(0.1)
            got, _ = await rep.admission.try_acquire(1)
            await rep.admission.release(0)  # what it got went out
            if got:
                rep.admission.outcome(None)
        await rep.shared.take(0)
        # Then the actor's state keeps the last window of calls, not the whole minute
        state = await rep.shared.store.update(lambda data: data["pace"])
        assert 0 < len(state["sent"]) <= 2.0 / 0.1 + 2
        assert state["total"] >= 500
    finally:
        await rep.shared.store.close()


def test_a_pace_that_holds_nothing_back_does_not_grow() -> None:
    spec = AdaptiveConcurrencySpec(cooldown=1.0, paceMargin=0.9, paceGrowth=0.01)
    state = PaceState(pace=9.0, ceiling=10.0, probing=False, stamp=0.0)
    now = 0.0
    # Given calls arriving at 2/s, well under the pace: it never makes one wait
    for _ in range(40):
        now += 0.5
        got, _ = state.take(1, now)
        state.succeeded(got, now, spec)
    # Then the pace stays where it was, ready for the next spike
    assert state.pace == 9.0


async def test_waiting_for_the_pace_does_not_hold_the_autoscaler(
        tmp_path: Path, clock: FakeClock) -> None:
    marks = ThrottleMarks(tmp_path)
    adaptive = AdaptiveLimit(PACING, ceiling=16, clock=clock)
    adm = ResilientAdmission(actor="judge", adaptive=adaptive, marks=marks, clock=clock)
    stop = asyncio.Event()
    for _ in range(30):
        clock.advance(0.1)
        adm.outcome(None)
    adm.outcome(StatusError(429))
    assert marks.limited("judge", now=clock.now), "a real 429 holds it"
    clock.advance(11.0)  # the 429's mark is over
    # When the replica waits for its own pace, again and again
    assert await adm.acquire(5, stop) >= 1
    waiting = asyncio.ensure_future(adm.acquire(5, stop))
    await asyncio.sleep(0.05)
    # Then it waits, counted as a hit, but the actor is not marked rate-limited
    assert adm.rate_limit_hits() >= 1
    assert not marks.limited("judge", now=clock.now) and not adm.rate_limited()
    clock.advance(1.0)
    assert await asyncio.wait_for(waiting, 2.0) >= 1
    stop.set()


def test_the_flavor_shares_through_the_rate_limits_store(tmp_path: Path) -> None:
    spec = ResiliencySpec.model_validate({
        "adaptiveConcurrency": {"match": [429]},
        "circuitBreaker": {"match": ["5xx"]}})
    built = admission(spec, actor="judge", mesh="res", concurrency=8, transport="embedded",
                      state_dir=tmp_path)
    assert isinstance(built, ResilientAdmission) and built.shared is not None
    assert isinstance(built.shared.store, SQLiteState)
    assert built.shared.store.path == tmp_path / "limits.db"
    local = ResiliencySpec.model_validate({"adaptiveConcurrency": {"store": "local"}})
    alone = admission(local, actor="judge", mesh="res", concurrency=8,
                      transport="embedded", state_dir=tmp_path)
    assert isinstance(alone, ResilientAdmission) and alone.shared is None

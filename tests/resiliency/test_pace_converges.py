"""The actor's shared pace against a provider whose limit it is not told, on a fake clock:
the real brakes (admission, shared pace, adaptive limit) step by step against a token
bucket provider (``pace_sim``), as the receive loop drives them. The same goal as the
benchmark (``bench/bench_llm_resilience.py --goal``), where it runs for real: at least
0.95 of the limit served, at most 2 % of calls answered 429, for 1, 2 and 4 replicas,
short runs and long."""

from __future__ import annotations

import pytest

from .pace_sim import simulate

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("seconds", [20, 60])
@pytest.mark.parametrize("replicas", [1, 2, 4])
async def test_the_replicas_find_the_limit_together(replicas: int, seconds: int) -> None:
    # Given a provider allowing 20 calls/s (0.2 s of burst), answering in 0.3-0.4 s,
    # and a backlog of `seconds` of calls at that rate; a 429 reaches the brakes 15 ms
    # after the provider answered (300 ms for each replica's first one)
    result = await simulate(rate=20, calls=20 * seconds, replicas=replicas,
                            detect=0.015, first_detect=0.3)
    # Then the actor is served near the limit, with few 429s, and every call answered
    assert result.answered == 20 * seconds
    assert result.served >= 0.95, result
    assert result.share_429 <= 0.02, result


async def test_a_replica_added_later_starts_at_the_actors_pace() -> None:
    # Given one replica that has found the limit, then three more added by the
    # autoscaler, ten seconds in
    one = await simulate(rate=20, calls=20 * 30, replicas=1, detect=0.015)
    added = await simulate(rate=20, calls=20 * 30, replicas=4, detect=0.015,
                           joins=[0.0, 10.0, 10.0, 10.0])
    # Then the added replicas take from the actor's pace: no burst of 429s at the
    # join, and no more 429s than one replica alone, give or take one cut's
    late = [t for t in added.refused_at if 10.0 <= t <= 12.0]
    assert len(late) <= 1, added.refused_at
    assert len(added.refused_at) <= len(one.refused_at) + 2
    assert added.served >= 0.95


async def test_a_lower_limit_is_found_from_a_higher_pace() -> None:
    # Given a provider of 5 calls/s (0.4 s of burst): the starting pace (10/s) is above
    result = await simulate(rate=5, calls=5 * 60, replicas=2, detect=0.015, burst=2)
    # Then the pace comes down to it and holds near it. Each cut costs about one 429
    # every few seconds, so at 5 calls/s their share is higher than at 20: under 5 %
    assert result.served >= 0.95, result
    assert result.share_429 <= 0.05, result
    assert result.paces[-1][1] is not None and result.paces[-1][1] < 7.0


async def test_a_higher_limit_is_climbed_to() -> None:
    result = await simulate(rate=80, calls=80 * 60, replicas=4, detect=0.015,
                            latency=0.5)
    assert result.served >= 0.95, result
    assert result.share_429 <= 0.02, result

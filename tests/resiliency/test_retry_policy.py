"""Retry policies: matching, backoff schedules, Retry-After and exhaustion, with an
injected clock and a seeded random source (nothing here waits)."""

from __future__ import annotations

import random
from email.utils import formatdate
from types import SimpleNamespace

import pytest

from asya_agents.envelope import Envelope
from asya_agents.errors import HistoryAlteredError
from asya_agents.resiliency.match import ErrorMatcher, http_status, retry_after
from asya_agents.resiliency.retry import PolicySet, backoff_delay
from asya_agents.resiliency.spec import RetryPolicy

from .conftest import FakeClock
from .res_steps import StatusError


class HTTPError(Exception):
    """Like httpx/requests errors: the status and headers live on ``response``."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.response = SimpleNamespace(status_code=status, headers=headers or {})


def envelope(attempt: int = 1) -> Envelope:
    env = Envelope.create({"x": 1}, ["judge"])
    env.meta.attempt = attempt
    return env


@pytest.mark.parametrize(
    ("backoff", "expected"),
    [
        ("constant", [2.0, 2.0, 2.0, 2.0, 2.0]),
        ("linear", [2.0, 4.0, 6.0, 8.0, 10.0]),
        ("exponential", [2.0, 4.0, 8.0, 10.0, 10.0]),
    ],
)
def test_backoff_schedules_grow_as_declared_and_stop_at_max_interval(
    backoff: str, expected: list[float]
) -> None:
    # Given a policy starting at 2s, capped at 10s, without jitter
    policy = RetryPolicy.model_validate({"backoff": backoff, "initialInterval": "2s",
                                         "maxInterval": "10s", "maxAttempts": 9})
    # When the delays after attempts 1..5 are computed
    delays = [backoff_delay(policy, n, rng=random.Random(1)) for n in range(1, 6)]
    # Then they follow the schedule
    assert delays == expected


def test_jitter_shortens_each_delay_by_at_most_its_share() -> None:
    policy = RetryPolicy(initialInterval=4.0, maxInterval=4.0, jitter=0.25, backoff="constant")
    rng = random.Random(7)
    delays = [backoff_delay(policy, 1, rng=rng) for _ in range(200)]
    assert all(3.0 <= d <= 4.0 for d in delays)
    assert max(delays) - min(delays) > 0.5, "jitter spreads the delays"


@pytest.mark.parametrize(
    ("entries", "exc", "matched"),
    [
        (["builtins.ConnectionError"], ConnectionResetError("x"), True),  # subclass
        (["builtins.ConnectionError"], ValueError("x"), False),
        (["ConnectionError.Nope"], ConnectionError("x"), False),  # the module counts
        ([429], StatusError(429), True),
        (["5xx"], StatusError(503), True),
        (["5xx"], StatusError(429), False),
        (["500-504"], HTTPError(504), True),
        (["500-504"], HTTPError(505), False),
        (["429"], ValueError("no status"), False),
    ],
)
def test_policies_match_by_class_with_module_or_by_http_status(
    entries: list[str | int], exc: Exception, matched: bool
) -> None:
    assert ErrorMatcher([str(e) for e in entries])(exc) is matched


def test_status_is_found_on_the_error_it_was_raised_from() -> None:
    try:
        try:
            raise HTTPError(502)
        except HTTPError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert http_status(outer) == 502


def test_retry_after_reads_milliseconds_seconds_and_http_dates(clock: FakeClock) -> None:
    assert retry_after(HTTPError(429, {"retry-after-ms": "1500", "retry-after": "2"}),
                       now=clock) == 1.5
    assert retry_after(HTTPError(429, {"Retry-After": "7"}), now=clock) == 7.0
    date = formatdate(clock.now + 30, usegmt=True)
    assert retry_after(HTTPError(503, {"Retry-After": date}), now=clock) == pytest.approx(30)
    assert retry_after(HTTPError(429, {"Retry-After": "soon"}), now=clock) is None
    assert retry_after(ValueError("x"), now=clock) is None


def policies(clock: FakeClock, **extra: object) -> PolicySet:
    declared = {
        "rate-limited": RetryPolicy.model_validate(
            {"match": [429], "maxAttempts": 4, "initialInterval": "1s",
             "retryAfterCap": "20s", **extra}),
        "default": RetryPolicy(maxAttempts=3, backoff="exponential", initialInterval=1.0),
    }
    return PolicySet(declared, rng=random.Random(3), clock=clock)


def test_retry_after_replaces_the_backoff_up_to_the_cap(clock: FakeClock) -> None:
    chosen = policies(clock)
    # Given 429s asking for 5s and for an hour
    short = chosen.decide(envelope(), HTTPError(429, {"retry-after": "5"}), actor="judge")
    long = chosen.decide(envelope(), HTTPError(429, {"retry-after": "3600"}), actor="judge")
    # Then the short one is honoured, the long one waits the cap
    assert (short.action, short.delay) == ("retry", 5.0)
    assert (long.action, long.delay) == ("retry", 20.0)


def test_retry_after_can_be_ignored_by_the_policy(clock: FakeClock) -> None:
    decision = policies(clock, retryAfter=False).decide(
        envelope(2), HTTPError(429, {"retry-after": "9"}), actor="judge")
    assert decision.delay == 2.0, "exponential backoff after attempt 2"


def test_unmatched_errors_take_the_default_policy(clock: FakeClock) -> None:
    decision = policies(clock).decide(envelope(2), ValueError("boom"), actor="judge")
    assert (decision.action, decision.delay) == ("retry", 2.0)


def test_exhausted_attempts_go_to_on_exhausted_with_a_reason(clock: FakeClock) -> None:
    chosen = policies(clock, onExhausted="review")
    decision = chosen.decide(envelope(4), StatusError(429), actor="judge")
    assert (decision.action, decision.target) == ("route", "review")
    assert decision.reason == \
        "handler-error: attempts exhausted (4 of 4, policy 'rate-limited')"


def test_envelope_errors_are_never_retried(clock: FakeClock) -> None:
    decision = policies(clock).decide(envelope(), HistoryAlteredError("prev"), actor="judge")
    assert (decision.action, decision.target, decision.reason) == \
        ("route", "error-end", "history-altered")


def test_without_a_default_unmatched_errors_end_at_once(clock: FakeClock) -> None:
    only = PolicySet({"net": RetryPolicy(match=["builtins.OSError"], maxAttempts=5)})
    assert only.decide(envelope(), KeyError("k"), actor="judge").action == "route"
    assert only.decide(envelope(), OSError("k"), actor="judge").action == "retry"

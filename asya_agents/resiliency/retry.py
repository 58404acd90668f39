"""Retry policies: which failure gets another attempt, and after how long.

Named policies are tried in the order the manifest lists them; the first whose
``match`` fits the error decides, and ``default`` (if any) takes the rest. An error
that says the envelope itself is wrong (altered history, unknown actor, too large,
unreadable) is never retried, nor is a URL the storage policy refused: the next attempt
would fail the same way.

The delay is the backoff for the attempt that just failed (constant, linear or
exponential from ``initialInterval``, capped at ``maxInterval``), shortened at random by
up to ``jitter`` of itself so that a burst of failures does not come back as a burst.
When the error carries ``Retry-After`` the server's wish replaces the backoff, capped at
``retryAfterCap``; jitter then only lengthens it, never earlier than asked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from asya_agents import errors
from asya_agents.envelope import Envelope
from asya_agents.resiliency.match import ErrorMatcher, retry_after
from asya_agents.resiliency.spec import RetryPolicy
from asya_agents.seams import Decision, reason_of

__all__ = ["PolicySet", "backoff_delay"]

#: Errors about the envelope, not the call: retrying cannot help.
_NEVER_RETRY = (errors.EnvelopeError, errors.MessageTooLarge, errors.BlobRefused)


def backoff_delay(policy: RetryPolicy, attempt: int, *, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
    base = policy.initialInterval
    if policy.backoff == "linear":
        base *= attempt
    elif policy.backoff == "exponential":
        base *= 2.0 ** min(attempt - 1, 62)
    base = min(base, policy.maxInterval)
    return base * (1.0 - policy.jitter * rng.random())


@dataclass(frozen=True)
class _Named:
    name: str
    policy: RetryPolicy
    matches: ErrorMatcher


class PolicySet:
    """The :class:`~asya_agents.resiliency.decide.FailurePolicy` of an actor with
    ``spec.resiliency.policies``."""

    def __init__(
        self,
        policies: dict[str, RetryPolicy],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._named = [_Named(n, p, ErrorMatcher(p.match))
                       for n, p in policies.items() if n != "default"]
        self._default = policies.get("default")
        self._rng = rng or random.Random()
        self._clock = clock

    def policy_for(self, exc: BaseException) -> tuple[str, RetryPolicy] | None:
        for named in self._named:
            if named.matches(exc):
                return named.name, named.policy
        return ("default", self._default) if self._default else None

    def decide(self, envelope: Envelope, exc: BaseException, *, actor: str) -> Decision:
        reason = reason_of(exc)
        found = None if isinstance(exc, _NEVER_RETRY) else self.policy_for(exc)
        if found is None:
            return Decision("route", reason=reason)
        name, policy = found
        attempt = envelope.meta.attempt
        if attempt >= policy.maxAttempts:
            return Decision("route", target=policy.onExhausted, reason=(
                f"{reason}: attempts exhausted ({attempt} of {policy.maxAttempts}, "
                f"policy {name!r})"))
        return Decision("retry", delay=self.delay(policy, exc, attempt), reason=reason)

    def delay(self, policy: RetryPolicy, exc: BaseException, attempt: int) -> float:
        asked = retry_after(exc, now=self._clock) if policy.retryAfter else None
        if asked is None:
            return backoff_delay(policy, attempt, rng=self._rng)
        wait = min(asked, policy.retryAfterCap)
        return wait * (1.0 + policy.jitter * self._rng.random())

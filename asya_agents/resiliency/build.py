"""Build what the runtime consults from an actor's declared ``spec.resiliency``:
its failure policy and its admission (breaker, adaptive concurrency, rate limit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from asya_agents.resiliency.adaptive import AdaptiveLimit
from asya_agents.resiliency.admission import ResilientAdmission
from asya_agents.resiliency.breaker import CircuitBreaker
from asya_agents.resiliency.limiter import open_bucket
from asya_agents.resiliency.retry import PolicySet
from asya_agents.resiliency.spec import ResiliencySpec
from asya_agents.resiliency.throttle import ThrottleMarks
from asya_agents.seams import Admission, FailurePolicy, NoRetries

__all__ = ["admission", "failure_policy"]


def failure_policy(spec: ResiliencySpec, *,
                   clock: Callable[[], float] = time.time) -> FailurePolicy:
    """The policy the runtime consults on each failure of this actor."""
    if not spec.policies:
        return NoRetries()
    return PolicySet(spec.policies, clock=clock)


def admission(
    spec: ResiliencySpec, *, actor: str, mesh: str, concurrency: int, transport: str,
    state_dir: Path, clock: Callable[[], float] = time.time,
) -> Admission:
    """The runtime's admission for this actor; the plain one when nothing is declared."""
    if spec.rateLimit is None and spec.circuitBreaker is None and \
            spec.adaptiveConcurrency is None:
        return Admission()
    breaker = CircuitBreaker(spec.circuitBreaker, clock=clock) if spec.circuitBreaker else None
    adaptive = AdaptiveLimit(spec.adaptiveConcurrency, ceiling=concurrency, clock=clock) \
        if spec.adaptiveConcurrency else None
    bucket = open_bucket(spec.rateLimit, name=f"{mesh}/{actor}", transport=transport,
                         state_dir=state_dir, clock=clock) if spec.rateLimit else None
    return ResilientAdmission(actor=actor, breaker=breaker, adaptive=adaptive, bucket=bucket,
                              marks=ThrottleMarks(state_dir), clock=clock)

"""Build what the runtime consults from an actor's declared ``spec.resiliency``:
its failure policy and its admission (breaker, adaptive concurrency, rate limit)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from asya_agents.resiliency.adaptive import AdaptiveLimit
from asya_agents.resiliency.admission import ResilientAdmission, SharedBucket
from asya_agents.resiliency.breaker import CircuitBreaker
from asya_agents.resiliency.limiter import LocalBucket, TokenBucket, open_bucket
from asya_agents.resiliency.retry import PolicySet
from asya_agents.resiliency.shared import SharedBrakes, open_state
from asya_agents.resiliency.spec import RateLimitSpec, ResiliencySpec
from asya_agents.resiliency.throttle import OutageMarks, ThrottleMarks
from asya_agents.seams import Admission, FailurePolicy, NoRetries

__all__ = ["admission", "failure_policy", "shared_brakes", "shared_bucket"]

#: Where Redis is when neither the brake nor the rate limit names one.
_REDIS = "redis://127.0.0.1:6379/0"


def failure_policy(spec: ResiliencySpec, *,
                   clock: Callable[[], float] = time.time) -> FailurePolicy:
    """The policy the runtime consults on each failure of this actor."""
    if not spec.policies:
        return NoRetries()
    return PolicySet(spec.policies, clock=clock)


def shared_bucket(spec: RateLimitSpec, *, actor: str, mesh: str, transport: str,
                  state_dir: Path, max_replicas: int = 1,
                  clock: Callable[[], float] = time.time) -> TokenBucket:
    """The actor's rate-limit bucket; a shared one comes with this replica's share of
    the limit (``perSecond / max_replicas``) for while its store is unreachable."""
    bucket = open_bucket(spec, name=f"{mesh}/{actor}", transport=transport,
                         state_dir=state_dir, clock=clock)
    if isinstance(bucket, LocalBucket):
        return bucket  # in this process: it cannot become unreachable
    replicas = max(max_replicas, 1)
    share = LocalBucket(spec.perSecond / replicas, max(1, spec.burst // replicas),
                        clock=clock)
    return SharedBucket(bucket, share, actor=actor, unavailable_after=spec.unavailableAfter,
                        marks=OutageMarks(state_dir), clock=clock)


def admission(
    spec: ResiliencySpec, *, actor: str, mesh: str, concurrency: int, transport: str,
    state_dir: Path, max_replicas: int = 1, clock: Callable[[], float] = time.time,
) -> Admission:
    """The runtime's admission for this actor; the plain one when nothing is declared.
    ``max_replicas`` (``spec.scaling.maxReplicaCount``) sizes a replica's share of a
    shared rate limit."""
    if spec.rateLimit is None and spec.circuitBreaker is None and \
            spec.adaptiveConcurrency is None:
        return Admission()
    breaker = CircuitBreaker(spec.circuitBreaker, clock=clock) if spec.circuitBreaker else None
    adaptive = AdaptiveLimit(spec.adaptiveConcurrency, ceiling=concurrency, clock=clock) \
        if spec.adaptiveConcurrency else None
    bucket = shared_bucket(spec.rateLimit, actor=actor, mesh=mesh, transport=transport,
                           state_dir=state_dir, max_replicas=max_replicas,
                           clock=clock) if spec.rateLimit else None
    shared = shared_brakes(spec, actor=actor, mesh=mesh, transport=transport,
                           state_dir=state_dir, adaptive=adaptive, breaker=breaker,
                           max_replicas=max_replicas, clock=clock)
    return ResilientAdmission(actor=actor, breaker=breaker, adaptive=adaptive, bucket=bucket,
                              marks=ThrottleMarks(state_dir), shared=shared, clock=clock)


def shared_brakes(spec: ResiliencySpec, *, actor: str, mesh: str, transport: str,
                  state_dir: Path, adaptive: AdaptiveLimit | None,
                  breaker: CircuitBreaker | None, max_replicas: int = 1,
                  clock: Callable[[], float] = time.time) -> SharedBrakes | None:
    """The actor's shared pace and breaker, in the store that shares ``rateLimit``
    (``adaptiveConcurrency``'s ``store`` and ``redisUrl``, else the breaker's); ``None``
    when that is ``local`` (each replica on its own)."""
    brake = spec.adaptiveConcurrency or spec.circuitBreaker
    if brake is None or brake.store == "local":
        return None
    limit = spec.rateLimit
    url = brake.redisUrl or (limit.redisUrl if limit is not None else _REDIS)
    store = open_state(brake.store, name=f"{mesh}/{actor}", transport=transport,
                       state_dir=state_dir, redis_url=url)
    return SharedBrakes(store, actor=actor, adaptive=adaptive, breaker=breaker,
                        unavailable_after=limit.unavailableAfter if limit else 30.0,
                        max_replicas=max_replicas, clock=clock)

"""Declared resiliency settings (``spec.resiliency`` of an AsyncActor).

Every model forbids unknown fields and checks what it can at load time (a ``match``
entry that is neither a class path nor an HTTP status, a ``maxInterval`` below the
``initialInterval``), so a typo fails when the manifest loads, naming the file and the
field, rather than on the first failure in production.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from asya_agents.durations import Duration

__all__ = [
    "DEFAULT_MAX_DELIVERIES",
    "AdaptiveConcurrencySpec",
    "CircuitBreakerSpec",
    "RateLimitSpec",
    "ResiliencySpec",
    "RetryPolicy",
    "check_match",
]

#: ``429``, ``5xx``, ``500-599``; or ``module.Class`` (a dotted path, the module included).
_STATUS = re.compile(r"^(\d{3}|[1-5]xx|\d{3}-\d{3})$")
_CLASS = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+$")
#: Deliveries of one message an actor takes before it ends the message at ``error-end``
#: (reason ``delivery-limit``) instead of handing it to the handler again.
DEFAULT_MAX_DELIVERIES = 10


def check_match(value: str | int) -> str:
    """One ``match`` entry, normalised to text; ``ValueError`` names what is wrong."""
    text = str(value).strip()
    if _STATUS.match(text):
        if "-" in text:
            low, high = (int(p) for p in text.split("-"))
            if low > high:
                raise ValueError(f"status range {text!r} runs backwards")
        return text
    if _CLASS.match(text):
        return text
    raise ValueError(
        f"{value!r} is neither an HTTP status (429, '5xx', '500-599') nor an exception "
        "class with its module ('litellm.RateLimitError', 'builtins.TimeoutError')"
    )


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Matching(_Spec):
    match: list[str | int] = Field(
        default_factory=list,
        description="exception classes (module.Class, subclasses too) or HTTP statuses "
        "(429, '5xx', '500-599') found on the exception",
    )

    @field_validator("match")
    @classmethod
    def _match_entries(cls, value: list[str | int]) -> list[str | int]:
        return [check_match(v) for v in value]


class RetryPolicy(_Matching):
    """One named retry policy; ``default`` applies to errors no other policy matches."""

    maxAttempts: int = Field(default=1, ge=1, description="total tries, the first included")
    backoff: Literal["constant", "linear", "exponential"] = "exponential"
    initialInterval: Duration = 1.0
    maxInterval: Duration = 60.0
    jitter: float = Field(
        default=0.0, ge=0.0, le=1.0,
        description="share of each delay drawn at random (0.2: 80..100 % of the backoff)",
    )
    retryAfter: bool = Field(default=True, description="honour Retry-After when the error has one")
    retryAfterCap: Duration = Field(
        default=300.0, description="longest Retry-After honoured; longer ones wait this long"
    )
    onExhausted: str = Field(default="error-end", description="actor that gets the envelope")

    @model_validator(mode="after")
    def _intervals(self) -> RetryPolicy:
        if self.maxInterval < self.initialInterval:
            raise ValueError(
                f"maxInterval ({self.maxInterval:g}s) is below initialInterval "
                f"({self.initialInterval:g}s)"
            )
        return self


class RateLimitSpec(_Spec):
    """A token bucket for the actor as a whole, shared by all its replicas."""

    perSecond: float = Field(gt=0, description="messages taken per second, all replicas")
    burst: int = Field(default=1, ge=1, description="tokens saved up while idle")
    store: Literal["auto", "sqlite", "redis", "local"] = Field(
        default="auto",
        description="where the bucket lives: auto = SQLite in the mesh state folder on the "
        "embedded transport, Redis otherwise; local = per replica (tests only)",
    )
    redisUrl: str = Field(default="redis://127.0.0.1:6379/0", description="for store redis")
    unavailableAfter: Duration = Field(
        default=30.0, gt=0,
        description="when the store has failed this long, the replica reports it "
        "unreachable and limits itself to perSecond / scaling.maxReplicaCount until the "
        "store answers again",
    )


class _Shared(_Spec):
    """Where the replicas of an actor share what a brake learned (its pace, its breaker's
    state): the store that shares ``rateLimit``."""

    store: Literal["auto", "sqlite", "redis", "local"] = Field(
        default="auto",
        description="auto = SQLite in the mesh state folder on the embedded transport, "
        "Redis otherwise; local = each replica on its own",
    )
    redisUrl: str | None = Field(
        default=None, description="for store redis; default: rateLimit's redisUrl, else "
        "redis://127.0.0.1:6379/0",
    )


class CircuitBreakerSpec(_Matching, _Shared):
    """Stop taking messages after consecutive failures of a matched kind."""

    failureThreshold: int = Field(default=5, ge=1, description="consecutive failures to open")
    openDuration: Duration = Field(default=30.0, description="how long to stay open")
    # An empty ``match`` counts every failure; flavors name the transient kinds.


class AdaptiveConcurrencySpec(_Matching, _Shared):
    """AIMD on the in-flight limit of each replica when calls are rate-limited."""

    match: list[str | int] = Field(
        default_factory=lambda: list[str | int](["429"]), description="what counts as 'slow down'",
    )
    minConcurrency: int = Field(default=1, ge=1)
    decrease: float = Field(default=0.5, gt=0, lt=1, description="multiplier on a 429")
    increase: float = Field(default=1.0, gt=0, description="added per window of successes")
    cooldown: Duration = Field(
        default=1.0, description="at most one decrease per cooldown: one burst, one cut"
    )
    paceMargin: float = Field(
        default=0.9, gt=0, le=1,
        description="after a 429, start calls at this share of the rate actually served",
    )
    paceGrowth: float = Field(
        default=0.01, gt=0, le=1,
        description="then raise that pace by at least this share per second while it holds "
        "a backlog back (faster far under the ceiling it was cut from, and faster and "
        "faster above it)",
    )
    pauseOnRetryAfter: Duration = Field(
        default=60.0,
        description="a rate-limit error's Retry-After also stops the replica taking "
        "messages for that long, up to this cap (0: never pause)",
    )


class ResiliencySpec(_Spec):
    actorTimeout: Duration = 300.0
    maxDeliveries: int = Field(
        default=DEFAULT_MAX_DELIVERIES, ge=1,
        description="deliveries of one message (of one attempt) that may end without a "
        "result, the replica dying with it (a crash, an OOM kill, os._exit, a lease that "
        "ran out), before the next delivery goes to error-end with reason delivery-limit "
        "instead of to the handler; below the broker's own limit",
    )
    policies: dict[str, RetryPolicy] = Field(default_factory=dict)
    rateLimit: RateLimitSpec | None = None
    circuitBreaker: CircuitBreakerSpec | None = None
    adaptiveConcurrency: AdaptiveConcurrencySpec | None = None

    @field_validator("actorTimeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("actorTimeout must be above 0")
        return value

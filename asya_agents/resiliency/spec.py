"""Declared resiliency settings (``spec.resiliency`` of an AsyncActor).

Every model forbids unknown fields, so a typo fails when the manifest loads, naming the
file and the field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from asya_agents.durations import Duration

__all__ = ["ResiliencySpec", "RetryPolicy"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetryPolicy(_Spec):
    """One named retry policy; ``default`` applies to errors no other policy matches."""

    maxAttempts: int = Field(default=1, ge=1, description="total tries, the first included")
    backoff: Literal["constant", "linear", "exponential"] = "exponential"
    initialInterval: Duration = 1.0
    maxInterval: Duration = 60.0
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)
    match: list[str | int] = Field(
        default_factory=list,
        description="exception classes (module.Class) or HTTP statuses (429, '5xx', '500-599')",
    )
    retryAfterCap: Duration = 300.0
    onExhausted: str = Field(default="error-end", description="actor that gets the envelope")


class ResiliencySpec(_Spec):
    actorTimeout: Duration = 300.0
    policies: dict[str, RetryPolicy] = Field(default_factory=dict)

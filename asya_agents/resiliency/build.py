"""Build the failure policy of an actor from its declared ``spec.resiliency``."""

from __future__ import annotations

from asya_agents.resiliency.decide import FailurePolicy, NoRetries
from asya_agents.resiliency.spec import ResiliencySpec

__all__ = ["failure_policy"]


def failure_policy(spec: ResiliencySpec) -> FailurePolicy:
    """The policy the runtime consults on each failure of this actor."""
    return NoRetries()

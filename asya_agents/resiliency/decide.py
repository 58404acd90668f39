"""The seam between the runtime and the retry policies: what to do with a failure.

The runtime calls :meth:`FailurePolicy.decide` once per failed hop and acts on the
:class:`Decision`: ``retry`` republishes the envelope to the same actor with
``meta.attempt + 1`` after ``delay`` seconds (a delayed redelivery, no replica waits),
``route`` sends it to ``target`` (``error-end`` unless a policy says otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from asya_agents.envelope import ERROR_END, Envelope

__all__ = ["Decision", "FailurePolicy", "NoRetries", "reason_of"]


@dataclass(frozen=True)
class Decision:
    action: Literal["retry", "route"]
    delay: float = 0.0
    target: str = ERROR_END
    reason: str = "handler-error"


class FailurePolicy(Protocol):
    def decide(self, envelope: Envelope, exc: BaseException, *, actor: str) -> Decision: ...


class NoRetries:
    """Every failure ends at ``error-end``; what an actor without policies does."""

    def decide(self, envelope: Envelope, exc: BaseException, *, actor: str) -> Decision:
        return Decision("route", target=ERROR_END, reason=reason_of(exc))


def reason_of(exc: BaseException) -> str:
    """A short machine-readable reason for ``meta.error.reason``."""
    from asya_agents import errors

    for kind, reason in (
        (errors.ActorTimeout, "timeout"),
        (errors.HistoryAlteredError, "history-altered"),
        (errors.UnknownActorError, "unknown-actor"),
        (errors.MessageTooLarge, "too-large"),
        (errors.EnvelopeError, "invalid-envelope"),
    ):
        if isinstance(exc, kind):
            return reason
    return "handler-error"

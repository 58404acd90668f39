"""The seams of the runtime: the few things a replica's loop asks other subsystems.

The routing runtime (:mod:`asya_agents.runtime`) knows nothing of retry policies, rate
limits, metrics or OpenTelemetry. It calls five small interfaces, defined here with a
default that does nothing (or the simplest right thing), and the subsystems above the
runtime plug their implementations in when a replica is built:

- :class:`Clock`: wall time (hop timings, deadlines) and monotonic time (leases,
  batching, heartbeats), injected so that tests drive time instead of sleeping;
- :class:`Admission`: may the replica take more work now? (``resiliency``: breaker,
  adaptive concurrency, rate limit);
- :class:`FailurePolicy` and its :class:`Decision`: what happens to a failed hop
  (``resiliency``: retry policies);
- :class:`Observer`: what happened (``observe``: logs, metrics);
- :class:`Tracer` and its :class:`HopSpan`: the trace context each hop stamps on what it
  publishes (``observe.spans`` adds OpenTelemetry spans).

This module sits at the bottom of the package, beside the envelope: the runtime and the
plug-ins import it, it imports neither.
"""

from __future__ import annotations

import asyncio
import time as _time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from asya_agents import errors
from asya_agents.envelope import ERROR_END, Envelope
from asya_agents.tracecontext import TRACEPARENT, TraceContext

__all__ = [
    "Admission",
    "Clock",
    "Decision",
    "FailurePolicy",
    "HopSpan",
    "NoRetries",
    "Observer",
    "Tracer",
    "reason_of",
]


@dataclass(frozen=True)
class Clock:
    """The two clocks a replica reads: ``time`` (epoch seconds, for hop timings and
    deadlines that other processes read) and ``monotonic`` (durations on this host)."""

    time: Callable[[], float] = _time.time
    monotonic: Callable[[], float] = _time.monotonic

    @classmethod
    def of(cls, clock: Clock | Callable[[], float] | None) -> Clock:
        """A :class:`Clock` from a clock, a wall-clock function (the monotonic clock
        stays real) or ``None`` (both real)."""
        if clock is None:
            return cls()
        if isinstance(clock, Clock):
            return clock
        return cls(time=clock)


class Observer:
    """Hooks the runtime calls; the default does nothing. Metrics and logs subclass it."""

    def received(self, actor: str, envelope: Envelope | None) -> None: ...

    def succeeded(self, actor: str, envelope: Envelope, seconds: float) -> None: ...

    def failed(self, actor: str, envelope: Envelope, exc: BaseException,
               decision: Decision, seconds: float) -> None: ...

    def batch(self, actor: str, size: int) -> None: ...


class Admission:
    """Whether the replica may take more work. The default always may, up to
    ``concurrency``; rate limits, breakers and adaptive concurrency subclass it."""

    def limit(self, concurrency: int) -> int:
        """How many messages may be in flight now."""
        return concurrency

    async def wait(self, stop: asyncio.Event) -> None:
        """Return when a message may be taken (or when ``stop`` is set)."""

    async def acquire(self, want: int, stop: asyncio.Event) -> int:
        """How many of ``want`` messages may be received now (one rate-limit token
        each); waits for at least one unless ``stop`` is set (then 0)."""
        return want

    async def release(self, unused: int) -> None:
        """Give back what :meth:`acquire` granted but the queue had no message for."""

    def outcome(self, exc: BaseException | None, started: float | None = None) -> None:
        """Told after each hop: ``None`` on success, else the error; ``started``: when
        the handler was called for it (``None``: not known)."""

    async def close(self) -> None:
        """Release what it holds (a rate-limit store connection) once the loop ends."""


# -- failures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What to do with a failed hop: ``retry`` republishes the envelope to the same actor
    with ``meta.attempt + 1`` after ``delay`` seconds (a delayed redelivery; no replica
    waits), ``route`` sends it to ``target`` (``error-end`` unless a policy says other)."""

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
    for kind, reason in (
        (errors.ActorTimeout, "timeout"),
        (errors.DeliveryLimitExceeded, "delivery-limit"),
        (errors.HistoryAlteredError, "history-altered"),
        (errors.UnknownActorError, "unknown-actor"),
        (errors.HopLimitExceeded, "hop-limit"),
        (errors.MessageTooLarge, "too-large"),
        (errors.EnvelopeError, "invalid-envelope"),
        (errors.BlobRefused, "blob-refused"),
    ):
        if isinstance(exc, kind):
            return reason
    return "handler-error"


# -- trace context --------------------------------------------------------------------------


class HopSpan:
    """A hop in progress. ``context`` is what the hop's outputs carry."""

    def __init__(self, context: TraceContext) -> None:
        self.context = context

    @property
    def traceparent(self) -> str:
        return self.context.header

    def end(self, error: BaseException | None = None) -> None:
        """The hop is over (``error`` when it failed)."""


class Tracer:
    """Starts a :class:`HopSpan` per hop: the incoming trace with a new span id (or a new
    trace when the envelope carries none). ``observe.spans.HopTracer`` adds
    OpenTelemetry spans."""

    def start(self, actor: str, headers: dict[str, Any], *, envelope_id: str,
              attempt: int) -> HopSpan:
        incoming = TraceContext.parse(headers.get(TRACEPARENT))
        return HopSpan((incoming or TraceContext.new()).child())

"""W3C trace context (``traceparent``) carried in envelope headers.

An envelope crosses processes through queues, so the trace travels with it: the header
``traceparent`` (https://www.w3.org/TR/trace-context/, version ``00``) names the trace
and the span of the hop that produced this copy. ``asya send`` starts a trace; every
hop keeps the trace id and stamps its own new span id on what it publishes (the next
hop, a retry, each fan-out child), so one trace id follows an envelope and all of its
children from the entry to ``happy-end`` or ``error-end``.

Standard library only: the envelope and the runtime import this module.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["TRACEPARENT", "TraceContext", "ensure_traceparent", "trace_id_of"]

#: The header name, lower case as the W3C recommends.
TRACEPARENT = "traceparent"

_PATTERN = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True)
class TraceContext:
    """A parsed ``traceparent``: the trace, the parent span and the flags."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @classmethod
    def new(cls) -> TraceContext:
        """The start of a new trace (sampled)."""
        return cls(_random_hex(16, _ZERO_TRACE), _random_hex(8, _ZERO_SPAN))

    @classmethod
    def parse(cls, value: Any) -> TraceContext | None:
        """The context in ``value``, or ``None`` when it is not a valid ``traceparent``."""
        if not isinstance(value, str):
            return None
        match = _PATTERN.match(value.strip().lower())
        if match is None or match[1] == _ZERO_TRACE or match[2] == _ZERO_SPAN:
            return None
        return cls(match[1], match[2], match[3])

    def child(self, span_id: str | None = None) -> TraceContext:
        """The same trace with a new span: what a hop stamps on what it publishes."""
        return TraceContext(self.trace_id, span_id or _random_hex(8, _ZERO_SPAN), self.flags)

    @property
    def header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def ensure_traceparent(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` with a valid ``traceparent``: kept when present, else a new trace."""
    if TraceContext.parse(headers.get(TRACEPARENT)) is not None:
        return headers
    return {**headers, TRACEPARENT: TraceContext.new().header}


def trace_id_of(headers: dict[str, Any]) -> str | None:
    """The trace id in ``headers``, or ``None`` when there is no valid ``traceparent``."""
    ctx = TraceContext.parse(headers.get(TRACEPARENT))
    return ctx.trace_id if ctx else None


def _random_hex(nbytes: int, zero: str) -> str:
    """Random ids as the W3C asks (random, not all zero); like OpenTelemetry's SDK this
    uses ``random`` rather than ``secrets``: ids must be unique, not unguessable, and
    one is made per hop."""
    while True:
        value = f"{_random.getrandbits(nbytes * 8):0{nbytes * 2}x}"
        if value != zero:
            return value


_random = random.Random()

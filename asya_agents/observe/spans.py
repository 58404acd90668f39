"""One OpenTelemetry span per hop, plugged into the runtime's tracer seam.

The runtime asks its :class:`~asya_agents.seams.Tracer` for a
:class:`~asya_agents.seams.HopSpan` when it takes an envelope and ends it when the hop
is over. The span's ``context`` (the envelope's trace id, this hop's span id) is what
the runtime writes into the ``traceparent`` of every envelope the hop publishes: the
next hop, a retry, each fan-out child. The seam's own tracer only does that;
:class:`HopTracer` here does it through OpenTelemetry when OpenTelemetry is there.

With the ``otel`` extra installed and a tracer provider configured (by the replica from
``ASYA_TRACE_EXPORT``, or by an application that embeds the runtime), each hop is also
an OpenTelemetry span whose parent is the previous hop's span, so the spans of one
envelope form one trace in any OpenTelemetry backend. Without it, this costs a random
span id per hop and nothing else.
"""

from __future__ import annotations

import time
from typing import Any

from asya_agents.seams import HopSpan, Tracer
from asya_agents.tracecontext import TRACEPARENT, TraceContext

__all__ = ["HopTracer", "OtelSpan", "build_provider"]


class OtelSpan(HopSpan):
    """A hop in progress that is also an OpenTelemetry span."""

    def __init__(self, context: TraceContext, otel_span: Any) -> None:
        super().__init__(context)
        self._otel = otel_span

    def end(self, error: BaseException | None = None) -> None:
        if self._otel is None:
            return
        span, self._otel = self._otel, None
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()


class HopTracer(Tracer):
    """Starts hop spans. ``provider`` is an OpenTelemetry ``TracerProvider``; without
    one the global provider is used when it is a real one (not the API's no-op)."""

    #: How long a "no tracer" answer from the global provider is kept (it is looked
    #: up through the environment): a provider installed later is used from then on.
    RECHECK_S = 1.0

    def __init__(self, *, provider: Any = None) -> None:
        self._provider = provider
        self._cached: Any = None
        self._cached_until = -1.0

    def start(self, actor: str, headers: dict[str, Any], *, envelope_id: str,
              attempt: int) -> HopSpan:
        incoming = TraceContext.parse(headers.get(TRACEPARENT))
        tracer = self._tracer()
        if tracer is None:
            return HopSpan((incoming or TraceContext.new()).child())
        return _otel_span(tracer, actor, incoming, envelope_id=envelope_id, attempt=attempt)

    def _tracer(self) -> Any:
        now = time.monotonic()
        if now < self._cached_until:
            return self._cached
        tracer = self._lookup()
        self._cached = tracer
        self._cached_until = float("inf") if tracer is not None else now + self.RECHECK_S
        return tracer

    def _lookup(self) -> Any:
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        provider = self._provider or trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        return provider.get_tracer("asya_agents")


def _otel_span(tracer: Any, actor: str, incoming: TraceContext | None, *, envelope_id: str,
               attempt: int) -> HopSpan:
    from opentelemetry import trace

    parent = None
    if incoming is not None:
        remote = trace.SpanContext(
            trace_id=int(incoming.trace_id, 16), span_id=int(incoming.span_id, 16),
            is_remote=True, trace_flags=trace.TraceFlags(int(incoming.flags, 16)),
        )
        parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    span = tracer.start_span(
        f"asya {actor}", context=parent, kind=trace.SpanKind.CONSUMER,
        attributes={"asya.actor": actor, "asya.envelope_id": envelope_id,
                    "asya.attempt": attempt},
    )
    ctx = span.get_span_context()
    if not ctx.is_valid:
        span.end()
        return HopSpan((incoming or TraceContext.new()).child())
    flags = f"{int(ctx.trace_flags):02x}"
    return OtelSpan(TraceContext(f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", flags), span)


def build_provider(export: str) -> Any:
    """An OpenTelemetry SDK provider exporting to ``export`` (``console`` or ``otlp``),
    or ``None`` for ``none``. Raises ConfigError naming the setting when it cannot."""
    from asya_agents.errors import ConfigError

    if export == "none":
        return None
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise ConfigError(
            "ASYA_TRACE_EXPORT needs OpenTelemetry: pip install 'asya-agents[otel]'"
        ) from exc
    if export == "console":
        exporter: Any = ConsoleSpanExporter()
    elif export == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise ConfigError(
                "ASYA_TRACE_EXPORT=otlp needs pip install opentelemetry-exporter-otlp-proto-http"
            ) from exc
        exporter = OTLPSpanExporter()
    else:
        raise ConfigError(f"ASYA_TRACE_EXPORT must be none, console or otlp, not {export!r}")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider

"""Observability: metrics, spans and structured logs for every replica.

Operators of a mesh must see where envelopes are, why they fail and which actor is the
bottleneck without reading code. The runtime reports what happens through its
:class:`~asya_agents.seams.Observer` and :class:`~asya_agents.seams.Tracer` seams; the
modules here are plug-ins above the runtime that turn those reports into

- :mod:`~asya_agents.observe.spans`: one OpenTelemetry span per hop, when installed,
- :mod:`~asya_agents.observe.metrics`: Prometheus counters, histograms and gauges served
  on each replica's ``/metrics`` (``pip install 'asya-agents[metrics]'``),
- :mod:`~asya_agents.observe.logs`: one JSON line per event, text on a terminal,
- :mod:`~asya_agents.observe.wiring`: plugging all of them into a replica's runtime,
- :mod:`~asya_agents.observe.scrape`, :mod:`~asya_agents.observe.watch` and
  :mod:`~asya_agents.observe.paths`: what ``asya status --watch`` and
  ``asya results --id`` read,
- :mod:`~asya_agents.observe.history`: the bounded history the local supervisor keeps
  in the state folder, which ``asya status --watch`` and the console draw.

The W3C trace context itself (``traceparent`` in envelope headers) is part of the wire
format and lives beside the envelope, in :mod:`asya_agents.tracecontext`.
"""

__all__: list[str] = []

"""Observability: metrics, trace context and structured logs for every replica.

Operators of a mesh must see where envelopes are, why they fail and which actor is the
bottleneck without reading code. The runtime reports what happens through its
:class:`~asya_agents.runtime.Observer` seam; the modules here turn those reports into

- :mod:`~asya_agents.observe.tracecontext`: W3C ``traceparent`` carried in envelope
  headers (stdlib only; the runtime and the envelope use it),
- :mod:`~asya_agents.observe.spans`: one span per hop, OpenTelemetry when installed,
- :mod:`~asya_agents.observe.metrics`: Prometheus counters, histograms and gauges served
  on each replica's ``/metrics`` (``pip install 'asya-agents[metrics]'``),
- :mod:`~asya_agents.observe.logs`: one JSON line per event, text on a terminal,
- :mod:`~asya_agents.observe.scrape` and :mod:`~asya_agents.observe.paths`: what
  ``asya status --watch`` and ``asya results --id`` read.

This package's ``__init__`` imports nothing, so that the low layers (the envelope, the
runtime) can import :mod:`tracecontext` without pulling in the rest.
"""

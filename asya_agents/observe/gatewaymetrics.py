"""Prometheus metrics of the gateway, served on its own ``/metrics``.

What an operator of the gateway asks: how many requests each route answers and with
which status, how long they take, how many jobs each client submitted, and how many
streams (SSE, MCP calls, A2A streams) are open now. One registry per gateway (no
process-wide globals); prometheus-client is the ``metrics`` extra and comes in only
under ``observe/``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asya_agents.errors import ConfigError

__all__ = ["GatewayMetrics"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigError(
            "gateway metrics need prometheus-client: pip install 'asya-agents[metrics]'"
        ) from exc
    return prometheus_client


class GatewayMetrics:
    """The gateway's counters; ``open_streams`` is read at scrape time."""

    def __init__(self, *, mesh: str, open_streams: Callable[[], int]) -> None:
        prom = self._prom = _prometheus()
        self.registry = prom.CollectorRegistry()
        labels = {"registry": self.registry}
        self.requests = prom.Counter(
            "asya_gateway_requests", "HTTP requests answered, by route and status code",
            ["mesh", "route", "method", "code"], **labels)
        self.seconds = prom.Histogram(
            "asya_gateway_request_seconds", "Time to answer an HTTP request (a stream: "
            "until it ended)", ["mesh", "route"], buckets=_BUCKETS, **labels)
        self.submitted = prom.Counter(
            "asya_gateway_jobs_submitted", "Jobs submitted, by client and protocol",
            ["mesh", "client", "protocol"], **labels)
        streams = prom.Gauge("asya_gateway_open_streams",
                             "Streams open now (SSE, MCP calls, A2A streams)", ["mesh"],
                             **labels)
        streams.labels(mesh).set_function(open_streams)
        self.mesh = mesh
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, route: str, method: str, code: int, seconds: float) -> None:
        key = (route, method, code)
        children = self._children.get(key)
        if children is None:  # labels() costs more than the count: look it up once
            children = self._children[key] = (
                self.requests.labels(self.mesh, route, method, str(code)),
                self.seconds.labels(self.mesh, route))
        children[0].inc()
        children[1].observe(seconds)

    def job(self, client: str, protocol: str) -> None:
        self.submitted.labels(self.mesh, client, protocol).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition and its content type."""
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST

"""Prometheus metrics of a replica: an :class:`~asya_agents.runtime.Observer` and a server.

Each replica owns one registry (no process-wide globals) and serves it on ``/metrics``
(``ASYA_METRICS_PORT``; 0 picks a free port). The runtime reports every envelope it
takes, every success and every failure with the failure policy's decision, so the
counters say how many envelopes each actor received, how many succeeded, failed (by
reason), were retried or were dead-lettered; the histograms say how long handlers ran,
how long envelopes waited in the queue and how full batches were. Gauges are read at
scrape time from the runtime (messages in flight) and from its admission object
(concurrency limit, breaker state, rate limit hits; see :class:`AdmissionReport`).

Metric names, types and labels are listed in ``docs/observability.md``; keep the two in
step. prometheus-client is the ``metrics`` extra and is imported only here.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from asya_agents.envelope import Envelope
from asya_agents.errors import ConfigError
from asya_agents.runtime import Runtime
from asya_agents.seams import Decision, Observer

__all__ = [
    "BREAKER_STATES",
    "DURATION_BUCKETS",
    "AdmissionReport",
    "MetricsObserver",
    "MetricsServer",
    "SupervisorCollector",
    "queue_wait",
    "serve_metrics",
    "serve_supervisor_metrics",
]

#: Seconds: from a fast function to a slow LLM or GPU call.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0, 300.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
#: ``asya_circuit_breaker_state`` values.
BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


@runtime_checkable
class AdmissionReport(Protocol):
    """What an :class:`~asya_agents.runtime.Admission` may also report for the gauges.

    Every method is optional: an admission without them shows a closed breaker, no
    rate limit hits and a reachable rate-limit store (an admission with a ``breaker``
    attribute whose ``state`` is one of :data:`BREAKER_STATES` is read from there;
    ``rate_limited() -> bool``, when present, becomes the ``asya_rate_limited`` gauge).
    They are called from the metrics server's thread, so they should only read plain
    attributes.
    """

    def breaker_state(self) -> str:
        """``closed``, ``half-open`` or ``open``."""
        ...

    def rate_limit_hits(self) -> int:
        """How many times the rate limit made this replica wait, since it started."""
        ...

    def rate_limit_store_up(self) -> bool:
        """False while the shared rate-limit store counts as unreachable."""
        ...

    def rate_limit_store_failures(self) -> int:
        """Calls to the shared rate-limit store that failed, since the replica started."""
        ...


def _prometheus() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigError(
            "metrics need prometheus-client: pip install 'asya-agents[metrics]'"
        ) from exc
    return prometheus_client


def queue_wait(envelope: Envelope, now: float) -> float | None:
    """Seconds ``envelope`` waited in its queue: since the previous hop (or retry)
    ended, or since it was sent for a first hop; ``None`` when unknown."""
    meta = envelope.meta
    since = meta.hops[-1].ended if meta.hops else meta.created
    return None if since is None else max(now - since, 0.0)


class MetricsObserver(Observer):
    """Counts what the runtime reports into its own registry."""

    def __init__(self, *, registry: Any = None, clock: Callable[[], float] = time.time,
                 process: bool = True) -> None:
        prom = _prometheus()
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        self._clock = clock
        reg, actor = self.registry, ["actor"]
        self._received = prom.Counter("asya_envelopes_received", "Envelopes taken from the "
                                      "queue (valid ones)", actor, registry=reg)
        self._invalid = prom.Counter("asya_envelopes_invalid", "Messages that were not "
                                     "envelopes, sent to error-end", actor, registry=reg)
        self._succeeded = prom.Counter("asya_envelopes_succeeded", "Hops that succeeded and "
                                       "were routed on", actor, registry=reg)
        self._failed = prom.Counter("asya_envelopes_failed", "Hops that failed, by reason",
                                    ["actor", "reason"], registry=reg)
        self._retried = prom.Counter("asya_envelopes_retried", "Failed hops sent back for "
                                     "another attempt", ["actor", "reason"], registry=reg)
        self._dead = prom.Counter("asya_envelopes_dead_lettered", "Failed hops routed away "
                                  "(error-end or a policy's target)",
                                  ["actor", "reason", "target"], registry=reg)
        self._duration = prom.Histogram("asya_handler_duration_seconds", "Time from taking "
                                        "an envelope to the end of its hop",
                                        ["actor", "outcome"], buckets=DURATION_BUCKETS,
                                        registry=reg)
        self._wait = prom.Histogram("asya_queue_wait_seconds", "Time an envelope waited "
                                    "in the queue before this hop", actor,
                                    buckets=DURATION_BUCKETS, registry=reg)
        self._batch = prom.Histogram("asya_batch_size", "Envelopes per batch handler call",
                                     actor, buckets=_BATCH_BUCKETS, registry=reg)
        if process:
            prom.ProcessCollector(registry=reg)

    # -- the Observer seam --------------------------------------------------------------

    def received(self, actor: str, envelope: Envelope | None) -> None:
        if envelope is None:
            self._invalid.labels(actor).inc()
            return
        self._received.labels(actor).inc()
        waited = queue_wait(envelope, self._clock())
        if waited is not None:
            self._wait.labels(actor).observe(waited)

    def succeeded(self, actor: str, envelope: Envelope, seconds: float) -> None:
        self._succeeded.labels(actor).inc()
        self._duration.labels(actor, "succeeded").observe(max(seconds, 0.0))

    def failed(self, actor: str, envelope: Envelope, exc: BaseException,
               decision: Decision, seconds: float) -> None:
        self._failed.labels(actor, decision.reason).inc()
        self._duration.labels(actor, "failed").observe(max(seconds, 0.0))
        if decision.action == "retry":
            self._retried.labels(actor, decision.reason).inc()
        else:
            self._dead.labels(actor, decision.reason, decision.target).inc()

    def batch(self, actor: str, size: int) -> None:
        self._batch.labels(actor).observe(size)

    # -- gauges read at scrape time --------------------------------------------------------

    def watch(self, runtime: Runtime) -> None:
        """Expose ``runtime``'s in-flight count and its admission's state as gauges."""
        self.registry.register(_ReplicaCollector(runtime))


class _ReplicaCollector:
    """Reads the runtime and its admission object when Prometheus scrapes."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        cfg = self.runtime.cfg
        admission = cfg.admission
        limited = getattr(admission, "rate_limited", None)
        values = [
            (GaugeMetricFamily, "asya_envelopes_in_flight", "Envelopes this replica holds",
             self.runtime.in_flight),
            (GaugeMetricFamily, "asya_concurrency", "Configured messages in flight per "
             "replica (spec.concurrency)", cfg.concurrency),
            (GaugeMetricFamily, "asya_concurrency_limit", "Messages that may be in flight "
             "now, after admission (adaptive concurrency, breaker)",
             admission.limit(cfg.concurrency)),
            (GaugeMetricFamily, "asya_circuit_breaker_state", "0 closed, 1 half-open, 2 open",
             BREAKER_STATES.get(_breaker_state(admission), 0)),
            (GaugeMetricFamily, "asya_rate_limited", "1 while the actor is marked "
             "rate-limited (the autoscaler adds no replicas)",
             bool(limited()) if callable(limited) else 0),
            (CounterMetricFamily, "asya_rate_limit_hits", "Times the rate limit made this "
             "replica wait", _call_or(admission, "rate_limit_hits", 0)),
            (GaugeMetricFamily, "asya_rate_limit_store_up", "0 once the shared rate-limit "
             "store has failed for rateLimit.unavailableAfter (the replica takes its share "
             "of the limit), else 1", bool(_call_or(admission, "rate_limit_store_up", True))),
            (CounterMetricFamily, "asya_rate_limit_store_failures", "Calls to the shared "
             "rate-limit store that failed", _call_or(admission, "rate_limit_store_failures",
                                                      0)),
        ]
        groups = getattr(self.runtime.worker, "groups", None)
        if isinstance(groups, dict):
            fan_in = CounterMetricFamily("asya_fanin_groups", "fanIn groups this replica "
                                         "opened and ended, by outcome (opened, gathered, "
                                         "failed, timeout)", labels=["actor", "outcome"])
            for outcome, count in groups.items():
                fan_in.add_metric([cfg.actor, outcome], float(count))
            yield fan_in
        for family, name, doc, value in values:
            metric = family(name, doc, labels=["actor"])
            metric.add_metric([cfg.actor], float(value))
            yield metric


def _call_or(obj: Any, name: str, default: Any) -> Any:
    method = getattr(obj, name, None)
    return method() if callable(method) else default


def _breaker_state(admission: Any) -> str:
    """``breaker_state()`` when the admission reports it, else its ``breaker.state``."""
    state = _call_or(admission, "breaker_state", None)
    if state is None:
        state = getattr(getattr(admission, "breaker", None), "state", None)
    return state if isinstance(state, str) else "closed"


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint."""

    url: str
    _server: Any

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_metrics(registry: Any, *, host: str = "127.0.0.1", port: int = 0,
                  tries: int = 100) -> MetricsServer:
    """Serve ``registry`` on ``http://host:port/metrics`` from a daemon thread.

    ``port`` 0 picks a free port; another port is the first one tried, then the next
    ones, so that several replicas on one machine can share one setting.
    """
    prom = _prometheus()
    candidates = [0] if port == 0 else range(port, port + tries)
    last: OSError | None = None
    for candidate in candidates:
        try:
            server, _ = prom.start_http_server(candidate, addr=host, registry=registry)
        except OSError as exc:
            last = exc
            continue
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return MetricsServer(f"http://{shown}:{server.server_port}/metrics", server)
    raise ConfigError(f"no free port for /metrics on {host} from {port} "
                      f"(ASYA_METRICS_PORT): {last}")


class SupervisorCollector:
    """The local supervisor's autoscaler decisions, read from its ``status()`` when
    Prometheus scrapes: desired and running replicas, the queue counts the decision
    was made on, whether the trigger is active, scale events and restarts."""

    _GAUGES = (
        ("desired", "asya_autoscaler_desired_replicas", "Replicas the autoscaler wants"),
        ("replicas", "asya_autoscaler_replicas", "Replicas running (not stopping)"),
        ("depth", "asya_autoscaler_queue_depth", "Ready messages at the last poll"),
        ("in_flight", "asya_autoscaler_queue_in_flight", "Leased messages at the last poll"),
        ("active", "asya_autoscaler_active", "1 while the scaling trigger is active"),
    )

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        actors: dict[str, dict[str, Any]] = self.status().get("actors", {})
        for key, name, doc in self._GAUGES:
            gauge = GaugeMetricFamily(name, doc, labels=["actor"])
            for actor, row in actors.items():
                gauge.add_metric([actor], float(row.get(key) or 0))
            yield gauge
        events = CounterMetricFamily("asya_autoscaler_scale_events", "Changes of the desired "
                                     "replica count", labels=["actor", "direction"])
        restarts = CounterMetricFamily("asya_replica_restarts", "Replicas that died and were "
                                       "replaced", labels=["actor"])
        for actor, row in actors.items():
            events.add_metric([actor, "up"], float(row.get("scale_ups", 0)))
            events.add_metric([actor, "down"], float(row.get("scale_downs", 0)))
            restarts.add_metric([actor], float(row.get("restarts", 0)))
        yield events
        yield restarts


def serve_supervisor_metrics(status: Callable[[], dict[str, Any]], *, host: str,
                             port: int) -> MetricsServer:
    """Serve the autoscaler's decisions (see :class:`SupervisorCollector`)."""
    registry = _prometheus().CollectorRegistry()
    registry.register(SupervisorCollector(status))
    return serve_metrics(registry, host=host, port=port)

"""Wiring a replica for observation: logs, metrics and spans, from the settings.

:func:`instrument` is what ``python -m asya_agents.replica`` calls after it has built
its runtime: it plugs a :class:`LogObserver` and (when prometheus-client is installed
and ``ASYA_METRICS_PORT`` is not negative) a :class:`MetricsObserver` into the runtime's
Observer seam, serves ``/metrics``, and announces the URL in the state folder
(``replicas/<pid>.json``) so that the local supervisor can list it in ``status.json``
and ``asya status --json`` can print it. On Kubernetes the same port is scraped through
the pod's annotations instead, and the announcement is harmless.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.envelope import Envelope
from asya_agents.errors import ConfigError
from asya_agents.observe.events import EventWriter, HopEvents
from asya_agents.observe.logs import LogObserver
from asya_agents.observe.spans import HopTracer, build_provider
from asya_agents.runtime import Runtime
from asya_agents.seams import Decision, Observer
from asya_agents.settings import MeshSettings

__all__ = ["Instrumented", "Observers", "announced", "instrument", "withdraw"]

log = logging.getLogger("asya.observe")
_ANNOUNCE_DIR = "replicas"


class Observers(Observer):
    """Several observers behind the one seam, called in order."""

    def __init__(self, observers: list[Observer]) -> None:
        self.observers = observers

    def received(self, actor: str, envelope: Envelope | None) -> None:
        for obs in self.observers:
            obs.received(actor, envelope)

    def succeeded(self, actor: str, envelope: Envelope, seconds: float) -> None:
        for obs in self.observers:
            obs.succeeded(actor, envelope, seconds)

    def failed(self, actor: str, envelope: Envelope, exc: BaseException,
               decision: Decision, seconds: float) -> None:
        for obs in self.observers:
            obs.failed(actor, envelope, exc, decision, seconds)

    def batch(self, actor: str, size: int) -> None:
        for obs in self.observers:
            obs.batch(actor, size)


@dataclass
class Instrumented:
    """What :func:`instrument` started; :meth:`close` stops it and flushes spans."""

    metrics_url: str | None = None
    _closers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()


def instrument(runtime: Runtime, *, settings: MeshSettings, state_dir: Path,
               events: EventWriter | None = None) -> Instrumented:
    """Plug logs, metrics and spans into ``runtime`` as ``settings`` ask, and hop events
    for the gateway when ``events`` is given (which :meth:`Instrumented.close` closes)."""
    done = Instrumented()
    observers: list[Observer] = [LogObserver()]
    if events is not None:
        observers.append(HopEvents.of(runtime, events))
        done._closers.append(events.close)
    if settings.metrics_port >= 0:
        observers.extend(_metrics(runtime, settings, state_dir, done))
    provider = build_provider(settings.trace_export)
    if provider is not None:
        done._closers.append(provider.shutdown)
    runtime.cfg.tracer = HopTracer(provider=provider)
    runtime.cfg.observer = Observers(observers)
    return done


def _metrics(runtime: Runtime, settings: MeshSettings, state_dir: Path,
             done: Instrumented) -> list[Observer]:
    from asya_agents.observe.metrics import MetricsObserver, serve_metrics

    try:
        metrics = MetricsObserver()
    except ConfigError as exc:
        log.warning("no /metrics for %s: %s", runtime.cfg.actor, exc)
        return []
    metrics.watch(runtime)
    server = serve_metrics(metrics.registry, host=settings.metrics_host,
                           port=settings.metrics_port)
    done.metrics_url = server.url
    done._closers.append(server.close)
    done._closers.append(_announce(state_dir, runtime.cfg.actor, server.url))
    log.info("metrics of %s at %s", runtime.cfg.actor, server.url)
    return [metrics]


def _announce(state_dir: Path, actor: str, url: str) -> Any:
    """Write ``replicas/<pid>.json``; returns what removes it."""
    folder = state_dir / _ANNOUNCE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{os.getpid()}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"actor": actor, "pid": os.getpid(), "metrics": url}))
    tmp.replace(path)
    return lambda: withdraw(state_dir, os.getpid())


def withdraw(state_dir: Path, pid: int) -> None:
    """Forget what replica ``pid`` announced (the supervisor, once it has exited)."""
    (state_dir / _ANNOUNCE_DIR / f"{pid}.json").unlink(missing_ok=True)


def announced(state_dir: Path, pid: int) -> str | None:
    """The metrics URL replica ``pid`` announced, or ``None`` (not yet, or none)."""
    try:
        data = json.loads((state_dir / _ANNOUNCE_DIR / f"{pid}.json").read_text())
    except (OSError, ValueError):
        return None
    url = data.get("metrics") if isinstance(data, dict) else None
    return url if isinstance(url, str) else None

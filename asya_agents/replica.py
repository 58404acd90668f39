"""One replica of one actor, as its own OS process (``python -m asya_agents.replica``).

The supervisor starts these; on Kubernetes the container's command is the same. SIGTERM
stops taking messages and lets in-flight ones finish (up to the actor's timeout) before
the process exits, which is what scale-down and shutdown rely on. A replica whose sync
handler overran its timeout cannot cancel that thread, so it exits with
:data:`EXIT_RESTART` and the supervisor starts a fresh one. It marks in the state folder
when it got going and, when it dies of an error, why (:mod:`asya_agents.restarts`): the
supervisor backs off restarting replicas that never get going and shows their error.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from asya_agents import eventloop
from asya_agents.autoscaler import ActivityMarks
from asya_agents.crew import crew_runtime
from asya_agents.envelope import ERROR_END, HAPPY_END, MAX_ENVELOPE_BYTES
from asya_agents.errors import AsyaError, ConfigError
from asya_agents.fanin import GatherWorker
from asya_agents.handlers import Handler, load_handler
from asya_agents.manifest import FanInSpec, LoadedMesh, load_mesh
from asya_agents.observe.events import hop_events
from asya_agents.observe.logs import configure_logging
from asya_agents.observe.wiring import Observers, instrument
from asya_agents.resiliency.build import admission, failure_policy
from asya_agents.restarts import mark_ready, record_error
from asya_agents.review import PARK_HANDLER, build_review_runtime
from asya_agents.runtime import Runtime, RuntimeConfig, lease_for
from asya_agents.seams import Clock
from asya_agents.settings import Settings
from asya_agents.stores import open_group_store, open_result_store
from asya_agents.transports import Transport, open_transport

__all__ = ["EXIT_RESTART", "add_python_paths", "beat", "build_runtime", "check_delivery_limits",
           "main", "serve"]

EXIT_RESTART = 3
log = logging.getLogger("asya.replica")


def add_python_paths(loaded: LoadedMesh) -> None:
    for path in reversed(loaded.python_paths()):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def build_runtime(
    loaded: LoadedMesh, actor: str, transport: Transport, *, settings: Settings,
    state_dir: Path, clock: Clock | None = None,
) -> Runtime:
    """The runtime of ``actor`` of ``loaded`` on ``transport``: the same code path for
    replicas, tests and the public test helper. ``clock`` drives its hop timings,
    leases, batching, retries and brakes (real time when ``None``)."""
    clock = clock or Clock()
    names = loaded.actor_names
    if actor in (HAPPY_END, ERROR_END):
        store = open_result_store(settings.store.url, state_dir=state_dir,
                                  mesh=loaded.name)
        # Crew actors accept whatever the transport carried, so nothing is refused at
        # the very end of a route; many in flight let their writes be group-committed.
        # No delivery limit of their own: they run no user code, and what fails them
        # is the store, whose give-backs must not count a result out; the broker's
        # limit is their backstop.
        cfg = RuntimeConfig(actor=actor, actors=names, concurrency=64, timeout=30.0,
                            lease=lease_for(30.0), max_bytes=transport.max_message_bytes,
                            gathers=loaded.gathers)
        return crew_runtime(cfg, transport=transport, store=store, actors=loaded.actors,
                            sweep_every=settings.mesh.dlq_sweep_interval, clock=clock)
    if actor not in loaded.actors:
        raise KeyError(f"mesh {loaded.name!r} has no actor {actor!r}")
    check_delivery_limits(loaded, transport, actors=[actor])
    spec = loaded.actors[actor].spec
    if spec.handler == PARK_HANDLER:
        # Parking for human review is a terminal actor, like the crew (see review.py).
        return build_review_runtime(loaded, actor, transport, settings=settings,
                                    state_dir=state_dir, clock=clock)
    add_python_paths(loaded)
    assert spec.handler is not None
    handler = load_handler(spec.handler, config=spec.config, threads=spec.concurrency,
                           storage=loaded.storage_policy(actor, settings.s3, state_dir))
    timeout = spec.resiliency.actorTimeout
    cfg = RuntimeConfig(
        actor=actor, actors=names, mode=spec.handlerMode, concurrency=spec.concurrency,
        timeout=timeout, lease=lease_for(timeout),
        batch_size=spec.batch.maxSize if spec.batch else None,
        batch_wait=spec.batch.maxWait if spec.batch else 0.0,
        max_bytes=min(spec.maxMessageBytes or MAX_ENVELOPE_BYTES, transport.max_message_bytes),
        hop_limit=loaded.mesh.spec.hopLimit,
        max_deliveries=spec.resiliency.maxDeliveries,
        gathers=loaded.gathers,
    )
    cfg.failure = failure_policy(spec.resiliency, clock=clock.time)
    cfg.admission = admission(spec.resiliency, actor=actor, mesh=loaded.name,
                              concurrency=spec.concurrency, transport=transport.name,
                              state_dir=state_dir, max_replicas=spec.scaling.maxReplicaCount,
                              clock=clock.time)
    if spec.fanIn is not None:
        return _gather_runtime(loaded, cfg, spec.fanIn, transport, handler,
                               settings=settings, state_dir=state_dir, clock=clock)
    return Runtime(cfg, transport=transport, handler=handler, clock=clock)


def _gather_runtime(loaded: LoadedMesh, cfg: RuntimeConfig, fan_in: FanInSpec,
                    transport: Transport, handler: Handler, *, settings: Settings,
                    state_dir: Path, clock: Clock) -> Runtime:
    """A ``fanIn`` actor's runtime: its groups in the mesh's group store (the store
    URL, SQLite in the state folder when unset)."""
    cfg.fan_in = (fan_in.timeout, fan_in.partial)
    cfg.sweep_every = min(max(fan_in.timeout / 10, 0.05), 1.0)
    store = open_group_store(settings.store.groups_url or settings.store.url,
                             state_dir=state_dir, mesh=loaded.name)
    worker = GatherWorker(cfg, transport=transport, handler=handler, store=store,
                          clock=clock)
    return Runtime(cfg, transport=transport, worker=worker, clock=clock)


#: Where each broker's own delivery limit is set, for the error that names it.
_BROKER_LIMITS = {
    "rabbitmq": "ASYA_RABBITMQ_DELIVERY_LIMIT, the quorum queues' x-delivery-limit",
    "sqs": "ASYA_SQS_MAX_RECEIVE_COUNT, the redrive policy's maxReceiveCount",
}


def check_delivery_limits(loaded: LoadedMesh, transport: Transport, *,
                          actors: list[str] | None = None) -> None:
    """Refuse an actor whose ``maxDeliveries`` is not below the broker's own limit: the
    broker would move such a message to its dead-letter queue before the actor could
    end it with its reason. Review actors are terminals, the broker's limit is theirs."""
    limit = transport.delivery_limit
    if limit is None:
        return
    for name in actors if actors is not None else list(loaded.actors):
        spec = loaded.actors[name].spec
        wanted = spec.resiliency.maxDeliveries
        if spec.handler != PARK_HANDLER and wanted >= limit:
            where = _BROKER_LIMITS.get(transport.name, "its delivery limit")
            raise ConfigError(
                f"{loaded.sources.get(name, name)}: actor {name!r}: "
                f"spec.resiliency.maxDeliveries is {wanted}, not below the {transport.name} "
                f"broker's own delivery limit of {limit} ({where}); lower maxDeliveries or "
                f"raise the broker's limit above it")


HEARTBEAT_EVERY = 5.0


async def beat(path: Path, stop: asyncio.Event, *, every: float = HEARTBEAT_EVERY) -> None:
    """Touch ``path`` every ``every`` seconds from the event loop until ``stop``. A
    liveness probe that finds it stale knows the loop stopped turning (Kubernetes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while not stop.is_set():
        path.touch()
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass


async def serve(mesh: Path, actor: str, *, transport_kind: str, state_dir: Path,
                settings: Settings, heartbeat: Path | None = None) -> int:
    loaded = load_mesh(mesh)
    transport = open_transport(transport_kind, settings=settings, state_dir=state_dir,
                               mesh=loaded.name)
    runtime = build_runtime(loaded, actor, transport, settings=settings, state_dir=state_dir)
    observed = instrument(runtime, settings=settings.mesh, state_dir=state_dir,
                          events=hop_events(loaded, settings, state_dir))
    # the supervisor's sign that messages keep arriving (autoscaler.ActivityMarks)
    runtime.cfg.observer = Observers([runtime.cfg.observer, ActivityMarks(state_dir)])
    mark_ready(state_dir)  # got going: if it dies from now on, it is restarted at once
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # the first beat comes once the handler (and its model) has loaded
    beating = asyncio.create_task(beat(heartbeat, stop)) if heartbeat else None
    try:
        await runtime.run(stop)
    finally:
        stop.set()
        if beating is not None:
            await beating
        await transport.close()
        observed.close()
    return EXIT_RESTART if runtime.restart_needed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asya_agents.replica")
    parser.add_argument("mesh", type=Path)
    parser.add_argument("actor")
    parser.add_argument("--transport", default="embedded")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--heartbeat-file", type=Path, default=None,
                        help="touched every few seconds while the event loop runs")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(actor=args.actor, fmt=settings.mesh.log_format,
                      level=settings.mesh.log_level)
    try:
        code = eventloop.run(serve(args.mesh, args.actor, transport_kind=args.transport,
                                   state_dir=args.state_dir, settings=settings,
                                   heartbeat=args.heartbeat_file),
                             kind=settings.mesh.event_loop)
    except Exception as exc:
        return _died(args.state_dir, exc)
    if code == EXIT_RESTART:
        # A sync handler that overran its timeout still runs on a worker thread, and
        # interpreter exit would wait for it: leave now so the supervisor replaces us.
        logging.shutdown()
        os._exit(code)
    return code


def _died(state_dir: Path, exc: Exception) -> int:
    """Leave what kills this replica for the supervisor (``asya status`` shows it): one
    line for this project's errors, which say it all, the traceback for any other."""
    known = isinstance(exc, AsyaError)
    summary = str(exc) if known else f"{type(exc).__name__}: {exc}"
    record_error(state_dir, summary)
    log.error("replica failed: %s", summary, exc_info=None if known else exc)
    return 2 if known else 1


if __name__ == "__main__":
    sys.exit(main())

"""One replica of one actor, as its own OS process (``python -m asya_agents.replica``).

The supervisor starts these; on Kubernetes the container's command is the same. SIGTERM
stops taking messages and lets in-flight ones finish (up to the actor's timeout) before
the process exits, which is what scale-down and shutdown rely on. A replica whose sync
handler overran its timeout cannot cancel that thread, so it exits with
:data:`EXIT_RESTART` and the supervisor starts a fresh one.
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
from asya_agents.crew import crew_terminal
from asya_agents.envelope import ERROR_END, HAPPY_END, MAX_ENVELOPE_BYTES
from asya_agents.handlers import load_handler
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.observe.logs import configure_logging
from asya_agents.observe.wiring import instrument
from asya_agents.resiliency.build import admission, failure_policy
from asya_agents.review import PARK_HANDLER, build_review_runtime
from asya_agents.runtime import Runtime, RuntimeConfig, lease_for
from asya_agents.seams import Clock
from asya_agents.settings import Settings
from asya_agents.stores import open_result_store
from asya_agents.transports import Transport, open_transport

__all__ = ["EXIT_RESTART", "add_python_paths", "beat", "build_runtime", "main", "serve"]

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
        store = open_result_store(settings.store.url, state_dir=state_dir)
        # Crew actors accept whatever the transport carried, so nothing is refused at
        # the very end of a route; many in flight let their writes be group-committed.
        cfg = RuntimeConfig(actor=actor, actors=names, concurrency=64, timeout=30.0,
                            lease=lease_for(30.0), max_bytes=transport.max_message_bytes)
        return Runtime(cfg, transport=transport, terminal=crew_terminal(actor, store),
                       clock=clock)
    if actor not in loaded.actors:
        raise KeyError(f"mesh {loaded.name!r} has no actor {actor!r}")
    spec = loaded.actors[actor].spec
    if spec.handler == PARK_HANDLER:
        # Parking for human review is a terminal actor, like the crew (see review.py).
        return build_review_runtime(loaded, actor, transport, settings=settings,
                                    state_dir=state_dir, clock=clock)
    add_python_paths(loaded)
    assert spec.handler is not None
    handler = load_handler(spec.handler, config=spec.config, threads=spec.concurrency)
    timeout = spec.resiliency.actorTimeout
    cfg = RuntimeConfig(
        actor=actor, actors=names, mode=spec.handlerMode, concurrency=spec.concurrency,
        timeout=timeout, lease=lease_for(timeout),
        batch_size=spec.batch.maxSize if spec.batch else None,
        batch_wait=spec.batch.maxWait if spec.batch else 0.0,
        max_bytes=min(spec.maxMessageBytes or MAX_ENVELOPE_BYTES, transport.max_message_bytes),
    )
    cfg.failure = failure_policy(spec.resiliency, clock=clock.time)
    cfg.admission = admission(spec.resiliency, actor=actor, mesh=loaded.name,
                              concurrency=spec.concurrency, transport=transport.name,
                              state_dir=state_dir, clock=clock.time)
    return Runtime(cfg, transport=transport, handler=handler, clock=clock)


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
    observed = instrument(runtime, settings=settings.mesh, state_dir=state_dir)
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
    code = eventloop.run(serve(args.mesh, args.actor, transport_kind=args.transport,
                               state_dir=args.state_dir, settings=settings,
                               heartbeat=args.heartbeat_file),
                         kind=settings.mesh.event_loop)
    if code == EXIT_RESTART:
        # A sync handler that overran its timeout still runs on a worker thread, and
        # interpreter exit would wait for it: leave now so the supervisor replaces us.
        logging.shutdown()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

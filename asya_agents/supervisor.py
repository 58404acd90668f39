"""The local supervisor: ``asya up``, an actor mesh on one machine.

Each actor runs in its own OS processes (replicas), scaled 0..N from its queue by the
:class:`~asya_agents.autoscaler.Autoscaler` with KEDA's semantics, exactly as KEDA would
scale the same manifest on Kubernetes. A replica that dies is replaced; a replica that
is scaled down or shut down gets SIGTERM, finishes what it holds (up to the actor's
timeout) and exits, and only then is it killed if it has not.

The supervisor writes ``status.json`` in the state folder so that ``asya status`` (in
another terminal) can show replicas beside the queue counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.autoscaler import Autoscaler, ScaleDecision
from asya_agents.context import MeshContext
from asya_agents.crew import CREW_SCALING, crew_scaling
from asya_agents.envelope import ERROR_END, HAPPY_END
from asya_agents.manifest import LoadedMesh, ScalingSpec
from asya_agents.observe.wiring import announced, withdraw
from asya_agents.replica import EXIT_RESTART
from asya_agents.resiliency.throttle import ThrottleMarks
from asya_agents.status import write_supervisor
from asya_agents.transports import Backend

__all__ = ["Supervisor", "run_supervisor"]

log = logging.getLogger("asya.supervisor")
_TICK = 0.2
_KILL_GRACE = 5.0


@dataclass
class _Replica:
    proc: asyncio.subprocess.Process
    started: float
    stopping_since: float | None = None


@dataclass
class _Actor:
    name: str
    scaling: ScalingSpec
    timeout: float
    scaler: Autoscaler
    replicas: list[_Replica] = field(default_factory=list)
    desired: int = 0
    next_poll: float = 0.0
    last: ScaleDecision | None = None
    restarts: int = 0
    depth: int = 0
    in_flight: int = 0
    scale_ups: int = 0
    scale_downs: int = 0


class Supervisor:
    def __init__(
        self,
        loaded: LoadedMesh,
        transport: Backend,
        *,
        transport_kind: str,
        state_dir: Path,
        env: dict[str, str] | None = None,
        metrics_port: int = -1,
        metrics_host: str = "127.0.0.1",
        crew: ScalingSpec = CREW_SCALING,
    ) -> None:
        self.loaded = loaded
        self.transport = transport
        self.kind = transport_kind
        self.state_dir = state_dir
        self.env = env
        self.throttle = ThrottleMarks(state_dir)
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.metrics_url: str | None = None
        self.actors: dict[str, _Actor] = {}
        for name, actor in loaded.actors.items():
            spec = actor.spec
            self.actors[name] = _Actor(name, spec.scaling, spec.resiliency.actorTimeout,
                                       Autoscaler(spec.scaling))
        for name in (HAPPY_END, ERROR_END):
            self.actors[name] = _Actor(name, crew, 30.0, Autoscaler(crew))

    # -- main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        await self.transport.ensure_queues(sorted(self.actors))
        metrics = self._serve_metrics()
        log.info("mesh %s up on %s: %s", self.loaded.name, self.kind, ", ".join(self.actors))
        try:
            while not stop.is_set():
                now = time.monotonic()
                for actor in self.actors.values():
                    await self._poll(actor, now)
                    await self._reconcile(actor)
                self._write_status()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _TICK)
        finally:
            await self.shutdown()
            if metrics is not None:
                metrics.close()

    def _serve_metrics(self) -> Any:
        """The autoscaler's decisions on ``/metrics`` (see observe/metrics.py)."""
        if self.metrics_port < 0:
            return None
        from asya_agents.errors import ConfigError
        from asya_agents.observe.metrics import serve_supervisor_metrics

        try:
            server = serve_supervisor_metrics(self.status, host=self.metrics_host,
                                              port=self.metrics_port)
        except ConfigError as exc:
            log.warning("no /metrics for the supervisor: %s", exc)
            return None
        self.metrics_url = server.url
        log.info("autoscaler metrics at %s", server.url)
        return server

    async def _poll(self, actor: _Actor, now: float) -> None:
        self._reap(actor)
        if now < actor.next_poll:
            return
        actor.next_poll = now + actor.scaling.pollingInterval
        try:
            stats = await self.transport.stats(actor.name)
        except Exception as exc:
            log.warning("stats of %s failed: %s", actor.name, exc)
            return
        actor.depth, actor.in_flight = stats.depth, stats.in_flight
        # Replicas mark an actor held back by its rate limit or by 429s: more replicas
        # would only wait for the same tokens, so the autoscaler holds.
        held = self.throttle.limited(actor.name, now=time.time())
        decision = actor.scaler.decide(stats.total, len(self._alive(actor)), hold=held)
        if actor.last is None or decision.replicas != actor.desired:
            log.info("scale %s: %d -> %d (%s)", actor.name, actor.desired,
                     decision.replicas, decision.reason)
            actor.scale_ups += decision.replicas > actor.desired
            actor.scale_downs += decision.replicas < actor.desired
        actor.desired, actor.last = decision.replicas, decision

    def _alive(self, actor: _Actor) -> list[_Replica]:
        return [r for r in actor.replicas if r.stopping_since is None]

    def _reap(self, actor: _Actor) -> None:
        for rep in list(actor.replicas):
            code = rep.proc.returncode
            if code is None:
                continue
            actor.replicas.remove(rep)
            withdraw(self.state_dir, rep.proc.pid)  # a killed replica could not itself
            if rep.stopping_since is None:
                actor.restarts += 1
                why = "asked to be replaced" if code == EXIT_RESTART else f"exit code {code}"
                log.warning("replica %s of %s died (%s); replacing", rep.proc.pid,
                            actor.name, why)

    async def _reconcile(self, actor: _Actor) -> None:
        alive = self._alive(actor)
        for _ in range(actor.desired - len(alive)):
            actor.replicas.append(await self._start(actor.name))
        for rep in sorted(alive, key=lambda r: r.started)[actor.desired:]:
            self._stop(rep)
        now = time.monotonic()
        for rep in actor.replicas:
            if rep.stopping_since is not None and rep.proc.returncode is None and \
                    now - rep.stopping_since > actor.timeout + _KILL_GRACE:
                with contextlib.suppress(ProcessLookupError):
                    rep.proc.kill()

    async def _start(self, actor: str) -> _Replica:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asya_agents.replica", str(self.loaded.path), actor,
            "--transport", self.kind, "--state-dir", str(self.state_dir),
            env=self.env, start_new_session=True,
        )
        log.info("started replica %s of %s", proc.pid, actor)
        return _Replica(proc, time.monotonic())

    def _stop(self, rep: _Replica) -> None:
        rep.stopping_since = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            rep.proc.send_signal(signal.SIGTERM)

    async def shutdown(self) -> None:
        """SIGTERM every replica, wait for them to drain, kill what is left."""
        procs = []
        for actor in self.actors.values():
            actor.desired = 0
            for rep in actor.replicas:
                if rep.proc.returncode is None:
                    self._stop(rep)
                    procs.append((rep, actor.timeout))
        deadline = time.monotonic() + max([t for _, t in procs], default=0) + _KILL_GRACE
        for rep, _ in procs:
            try:
                await asyncio.wait_for(rep.proc.wait(), max(deadline - time.monotonic(), 0.1))
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    rep.proc.kill()
                await rep.proc.wait()
        for actor in self.actors.values():
            actor.replicas.clear()
        self._write_status()

    # -- status -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "mesh": self.loaded.name,
            "transport": self.kind,
            "supervisor_pid": os.getpid(),
            "updated": time.time(),
            "metrics": self.metrics_url,
            "actors": {
                a.name: {
                    "replicas": len(self._alive(a)),
                    "desired": a.desired,
                    "pids": [r.proc.pid for r in self._alive(a)],
                    "restarts": a.restarts,
                    "depth": a.depth,
                    "in_flight": a.in_flight,
                    "reason": a.last.reason if a.last else None,
                    "active": bool(a.last and a.last.active),
                    "scale_ups": a.scale_ups,
                    "scale_downs": a.scale_downs,
                    "metrics": self._metrics_urls(a),
                }
                for a in self.actors.values()
            },
        }

    def _metrics_urls(self, actor: _Actor) -> list[str]:
        urls = (announced(self.state_dir, r.proc.pid) for r in self._alive(actor))
        return [u for u in urls if u]

    def _write_status(self) -> None:
        write_supervisor(self.state_dir, self.status())


async def run_supervisor(ctx: MeshContext) -> None:
    """``asya up``: supervise ``ctx``'s mesh until SIGINT or SIGTERM, then drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with ctx.connected() as transport:
        supervisor = Supervisor(ctx.loaded, transport, transport_kind=ctx.kind,
                                state_dir=ctx.state_dir,
                                metrics_port=ctx.settings.mesh.metrics_port,
                                metrics_host=ctx.settings.mesh.metrics_host,
                                crew=crew_scaling(ctx.store_url))
        await supervisor.run(stop)

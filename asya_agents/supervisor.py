"""The local supervisor: ``asya up``, an actor mesh on one machine.

Each actor runs in its own OS processes (replicas), scaled 0..N from its queue by the
:class:`~asya_agents.autoscaler.Autoscaler` with KEDA's semantics, exactly as KEDA would
scale the same manifest on Kubernetes. A replica that dies is replaced: at once if it
got going, after a growing backoff if it died before (:mod:`asya_agents.restarts`; the
actor is then *crash-looping*, with its last error in the status). A replica that is
scaled down or shut down gets SIGTERM, finishes what it holds (up to the actor's
timeout) and exits, and only then is it killed if it has not.

The supervisor writes ``status.json`` in the state folder so that ``asya status`` (in
another terminal) can show replicas beside the queue counts, and keeps the last hour of
samples in ``history.jsonl`` (:mod:`asya_agents.observe.history`), which the console's
charts and ``asya status --watch`` draw.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.autoscaler import ActivityMarks, Autoscaler, ScaleDecision
from asya_agents.context import MeshContext
from asya_agents.crew import CREW_SCALING, crew_scaling
from asya_agents.envelope import ERROR_END, HAPPY_END
from asya_agents.errors import TransportError
from asya_agents.manifest import LoadedMesh, ScalingSpec
from asya_agents.observe.history import Recorder
from asya_agents.observe.wiring import announced, withdraw
from asya_agents.replica import EXIT_RESTART, check_delivery_limits
from asya_agents.resiliency.throttle import ThrottleMarks
from asya_agents.restarts import Restarts, is_ready, take_marks
from asya_agents.settings import environ_with
from asya_agents.status import totals as store_totals
from asya_agents.status import write_supervisor
from asya_agents.transports import Backend
from asya_agents.transports.base import dead_letter_queue

__all__ = ["Supervisor", "run_supervisor"]

log = logging.getLogger("asya.supervisor")
_TICK = 0.2
_KILL_GRACE = 5.0
#: Return codes of a replica killed from outside (by an operator, a test, the OOM killer)
#: rather than failing on its own.
_KILLED = frozenset(-int(sig) for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT,
                                          signal.SIGHUP))


@dataclass
class _Replica:
    proc: asyncio.subprocess.Process
    started: float
    stopping_since: float | None = None
    got_going: bool = False


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
    crashes: Restarts = field(default_factory=Restarts)


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
        totals: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        self.loaded = loaded
        self.transport = transport
        self.kind = transport_kind
        self.state_dir = state_dir
        self.env = env
        self.throttle = ThrottleMarks(state_dir)
        self.activity = ActivityMarks(state_dir)
        self.metrics_port, self.metrics_host = metrics_port, metrics_host
        self.metrics_url: str | None = None
        # the bounded history the console and `asya status --watch` draw (history.jsonl)
        self.history = Recorder(state_dir, totals=totals)
        self.actors: dict[str, _Actor] = {}
        for name, actor in loaded.actors.items():
            spec = actor.spec
            self.actors[name] = _Actor(name, spec.scaling, spec.resiliency.actorTimeout,
                                       Autoscaler(spec.scaling))
        for name in (HAPPY_END, ERROR_END):
            self.actors[name] = _Actor(name, crew, 30.0, Autoscaler(crew))

    # -- main loop --------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        check_delivery_limits(self.loaded, self.transport)  # before any replica starts
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
                self.history.tick(self.status)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), _TICK)
        finally:
            await self.history.aclose()
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
        # Received since the last poll: messages keep arriving, though a fast actor is
        # rarely caught holding one (autoscaler.ActivityMarks).
        busy = time.time() - self.activity.last(actor.name) <= actor.scaling.pollingInterval
        waiting = stats.total + await self._dead_letters(actor)
        decision = actor.scaler.decide(waiting, len(self._alive(actor)), hold=held,
                                       busy=busy)
        if actor.last is None or decision.replicas != actor.desired:
            log.info("scale %s: %d -> %d (%s)", actor.name, actor.desired,
                     decision.replicas, decision.reason)
            actor.scale_ups += decision.replicas > actor.desired
            actor.scale_downs += decision.replicas < actor.desired
        actor.desired, actor.last = decision.replicas, decision

    async def _dead_letters(self, actor: _Actor) -> int:
        """For error-end: what waits in the actors' dead-letter queues, which its
        replica sweeps (crew.py), so that they scale it up from zero too."""
        if actor.name != ERROR_END or self.transport.delivery_limit is None:
            return 0
        waiting = 0
        for name in self.loaded.actors:
            with contextlib.suppress(TransportError):
                waiting += (await self.transport.stats(dead_letter_queue(name))).total
        return waiting

    def _alive(self, actor: _Actor) -> list[_Replica]:
        return [r for r in actor.replicas if r.stopping_since is None]

    def _reap(self, actor: _Actor) -> None:
        now = time.monotonic()
        for rep in list(actor.replicas):
            code = rep.proc.returncode
            if code is None:
                self._watch(actor, rep, now)
                continue
            actor.replicas.remove(rep)
            withdraw(self.state_dir, rep.proc.pid)  # a killed replica could not itself
            got_going, error = take_marks(self.state_dir, rep.proc.pid)
            if rep.stopping_since is None:
                self._died(actor, rep, code, got_going=got_going, error=error, now=now)

    def _watch(self, actor: _Actor, rep: _Replica, now: float) -> None:
        """Note when a running replica got going, and tell the restart record."""
        if not rep.got_going:
            rep.got_going = is_ready(self.state_dir, rep.proc.pid)
        if rep.got_going:
            actor.crashes.up(now, since=rep.started)

    def _died(self, actor: _Actor, rep: _Replica, code: int, *, got_going: bool,
              error: str | None, now: float) -> None:
        actor.restarts += 1
        why = "asked to be replaced" if code == EXIT_RESTART else f"exit code {code}"
        killed = error is None and code in _KILLED
        delay = actor.crashes.died(now, got_going=got_going, error=error or why,
                                   killed=killed)
        if delay <= 0:
            log.warning("replica %s of %s died (%s); replacing", rep.proc.pid, actor.name,
                        why)
            return
        log.warning("replica %s of %s died before it got going (%s): %s; crash-looping, "
                    "next start in %gs", rep.proc.pid, actor.name, why,
                    actor.crashes.last_error, delay)

    def _to_start(self, actor: _Actor, alive: list[_Replica]) -> int:
        """Replicas to start now: what the autoscaler wants, but while the actor is
        crash-looping only one at a time, once its backoff is over."""
        wanted = actor.desired - len(alive)
        if wanted <= 0 or not actor.crashes.may_start(time.monotonic()):
            return 0
        if actor.crashes.crash_looping and not any(r.got_going for r in alive):
            return 0 if alive else 1  # one probe at a time, until one gets going
        return wanted

    async def _reconcile(self, actor: _Actor) -> None:
        alive = self._alive(actor)
        for _ in range(self._to_start(actor, alive)):
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
        take_marks(self.state_dir, proc.pid)  # a recycled pid's, long before its own
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
                    **self._crash_status(a),
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

    def _crash_status(self, actor: _Actor) -> dict[str, Any]:
        """``crash_looping`` (no replica got going since the last crash), the last error
        and the seconds until the next start (``None`` when nothing waits)."""
        looping = actor.crashes.crash_looping and \
            not any(r.got_going for r in self._alive(actor))
        wait = actor.crashes.next_start_in(time.monotonic())
        return {"crash_looping": looping, "last_error": actor.crashes.last_error,
                "next_restart_in": round(wait, 1) if looping and wait > 0 else None}

    def _metrics_urls(self, actor: _Actor) -> list[str]:
        urls = (announced(self.state_dir, r.proc.pid) for r in self._alive(actor))
        return [u for u in urls if u]

    def _write_status(self) -> None:
        write_supervisor(self.state_dir, self.status())


async def run_supervisor(ctx: MeshContext, *, gateway: list[str] | None = None) -> None:
    """``asya up``: supervise ``ctx``'s mesh until SIGINT or SIGTERM, then drain. With
    ``gateway`` (its flags), ``asya gateway`` runs beside the replicas, which then write
    hop events for it; it is stopped first, so that its streams end with a last event."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    env = environ_with(ASYA_GATEWAY_EVENTS="true") if gateway is not None else None
    async with ctx.connected() as transport:
        supervisor = Supervisor(ctx.loaded, transport, transport_kind=ctx.kind,
                                state_dir=ctx.state_dir, env=env,
                                metrics_port=ctx.settings.mesh.metrics_port,
                                metrics_host=ctx.settings.mesh.metrics_host,
                                crew=crew_scaling(ctx.store_url),
                                totals=lambda: store_totals(ctx.results()))
        beside = asyncio.ensure_future(_gateway(ctx, gateway, env, stop)) \
            if gateway is not None else None
        try:
            await supervisor.run(stop)
        finally:
            if beside is not None:
                stop.set()
                await beside


async def _gateway(ctx: MeshContext, args: list[str], env: dict[str, str] | None,
                   stop: asyncio.Event) -> None:
    """``asya gateway`` as a child process until ``stop``, replaced if it dies."""
    while not stop.is_set():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "asya_agents", "gateway", str(ctx.loaded.path),
            "--transport", ctx.kind, "--state-dir", str(ctx.state_dir), *args,
            env=env, start_new_session=True)
        exited = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(exited, 15.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
            return
        log.warning("the gateway exited (code %s); starting it again", proc.returncode)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)

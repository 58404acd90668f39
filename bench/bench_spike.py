"""Benchmark: a three-step AI pipeline under a 10x spike, as REST services chained by a
synchronous caller ('before') and as an actor mesh on RabbitMQ ('after').

The steps are the same functions in both designs (bench/meshes/spike/spike_steps.py):
``fast`` (a few ms of CPU), ``llm`` (one litellm call to a local provider that allows
``--rate`` calls/s and answers 429 with Retry-After beyond that; neither design is told
the limit) and ``gpu`` (1.5 s holding the process's one "GPU").

- **before** (bench/spike_rest.py): each step a FastAPI service of W uvicorn worker
  processes, scaled as one unit (every step gets W workers); a caller with ``16 W``
  threads chains the three calls, balanced by least outstanding requests, each with a
  30 s timeout and up to 6 attempts with exponential backoff slept in the thread.
- **after**: ``asya up bench/meshes/spike --transport rabbitmq``, each actor 0..N on its
  own queue by the local autoscaler (fast and llm up to 2, gpu up to 8), the llm actor on
  the ``llm-resilient`` flavor (adaptive concurrency finds the provider's limit).

Both get the same open-loop load, arrivals evenly spaced whatever the design does:
``--steady`` jobs/s, then 10x that for ``--spike`` seconds, then steady again. The budget
is the same at the spike's peak: W = 3 gives the chain 9 worker processes, the largest
chain that fits in the 10 the mesh uses at its peak (1 + 1 + 8; the output says what it
really used), since scaling as one unit adds a worker to every step at once.

Every second: jobs waiting and in flight per step, replicas (workers) per step, busy
GPUs, 429s answered by the provider, failed calls. Per design: completions, failures,
lost jobs (sent and never ended within the window), latency percentiles (arrival to
end), and goodput: jobs completed per second during the spike window, plus the share of
those within a 30 s SLO. Written to ``--out``: spike-depth.png, spike-replicas.png,
spike-completions.png (both designs side by side), spike-summary.json and
spike-series.json. docs/why.md shows the run made with ``--out docs/img``.

    python bench/bench_spike.py [--quick] [--out bench/out/spike] [--only rest|mesh]
                                [--provider-burst S] [--replot]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
MESH = HERE / "meshes" / "spike"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import spike_report  # noqa: E402
from spike_rest import STEPS, Caller, service_stats  # noqa: E402

WARM_UP = 3


@dataclass(frozen=True)
class Load:
    """Steady, a spike of ``factor`` x steady, steady again; then up to ``grace`` s for
    what is left to end."""

    steady: float = 0.6
    factor: float = 10.0
    pre: float = 20.0
    spike: float = 60.0
    post: float = 40.0
    grace: float = 40.0

    @property
    def window(self) -> tuple[float, float]:
        return self.pre, self.pre + self.spike

    @property
    def length(self) -> float:
        return self.pre + self.spike + self.post

    def arrivals(self) -> list[float]:
        """Seconds from the start at which jobs arrive, evenly spaced in each phase."""
        times: list[float] = []
        for start, seconds, rate in ((0.0, self.pre, self.steady),
                                     (self.pre, self.spike, self.steady * self.factor),
                                     (self.pre + self.spike, self.post, self.steady)):
            count = round(seconds * rate)
            times += [start + (i + 0.5) / rate for i in range(count)]
        return times


@dataclass
class Run:
    """One design's run: what was sent when, what ended when, a sample per second."""

    design: str
    t0: float = 0.0
    arrivals: dict[str, float] = field(default_factory=dict)
    ended: dict[str, tuple[str, float]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    workers: dict[str, int] = field(default_factory=dict)


# -- the provider -----------------------------------------------------------------------


def provider(args: argparse.Namespace) -> Any:
    from asya_agents.fakes import FakeLLMProvider

    # A fresh provider per design, its bucket full.
    return FakeLLMProvider(rate=args.rate, burst=max(args.rate * args.provider_burst, 1),
                           latency=0.3, responder=lambda request: '{"caption": "a photo"}')


def _env(llm: Any, args: argparse.Namespace, **extra: str) -> dict[str, str]:
    return {**os.environ, "SPIKE_LLM_API_BASE": llm.base_url,
            "SPIKE_GPU_SECONDS": str(args.gpu_seconds), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_OFFLINE_MODE": "true", **extra}


async def _ticks(run: Run, load: Load, sample: Callable[[], Awaitable[dict[str, Any]]],
                 llm: Any, done: Callable[[], bool]) -> None:
    """Sample every second from t0 until every job ended or the window closed."""
    limit = run.t0 + load.length + load.grace
    seen_429 = llm.stats.rate_limited
    tick = 0
    while True:
        at = run.t0 + tick
        await asyncio.sleep(max(0.0, at - time.time()))
        row = await sample()
        row["t"], row["rate_limited"] = tick, llm.stats.rate_limited - seen_429
        seen_429 = llm.stats.rate_limited
        run.samples.append(row)
        tick += 1
        if (at > run.t0 + load.length and done()) or at >= limit:
            return


def _wait(what: str, ready: Callable[[], bool], seconds: float = 120.0) -> None:
    deadline = time.time() + seconds
    while not ready():
        if time.time() > deadline:
            raise RuntimeError(f"{what} did not happen within {seconds:.0f} s")
        time.sleep(0.2)


# -- after: the mesh ---------------------------------------------------------------------


def run_mesh(load: Load, args: argparse.Namespace) -> Run:
    from asya_agents.context import MeshContext
    from asya_agents.settings import Settings

    run, prefix = Run("mesh"), f"spike{uuid.uuid4().hex[:6]}"
    state = Path(tempfile.mkdtemp(prefix="asya-spike-"))
    settings = Settings(rabbitmq={"queue_prefix": prefix, "management_url": ""})
    ctx = MeshContext.open(MESH, transport="rabbitmq", state_dir=state, settings=settings)
    with provider(args) as llm:
        env = _env(llm, args, ASYA_RABBITMQ_QUEUE_PREFIX=prefix,
                   ASYA_RABBITMQ_MANAGEMENT_URL="", ASYA_LOG_LEVEL="ERROR")
        up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(MESH),
                               "--transport", "rabbitmq", "--state-dir", str(state)], env=env)
        try:
            asyncio.run(_drive_mesh(ctx, run, load, llm))
        finally:
            up.send_signal(signal.SIGINT)
            up.wait(120)
            asyncio.run(_delete_queues(ctx))
            ctx.close()
            shutil.rmtree(state, ignore_errors=True)
    return run


async def _drive_mesh(ctx: Any, run: Run, load: Load, llm: Any) -> None:
    from asya_agents.envelope import Envelope
    from asya_agents.observe.watch import Watcher

    store = ctx.results()
    async with ctx.connected() as sender, ctx.connected() as watcher_tr:
        await sender.ensure_queues(sorted(ctx.loaded.actor_names))
        warm = [Envelope.create({"job": f"warm-{n}"}, ctx.loaded.route) for n in range(WARM_UP)]
        await ctx.send(sender, warm)  # every actor up (litellm imported) before the clock
        deadline = time.time() + 120
        while store.totals().succeeded < WARM_UP:
            if time.time() > deadline:
                raise RuntimeError("the mesh's warm-up did not end within 120 s")
            await asyncio.sleep(0.2)
        watcher = Watcher(lambda: ctx.status(watcher_tr))
        await watcher.report()  # the first report has no rates
        run.t0 = time.time() + 1.0
        run.arrivals = {f"j{i:04d}": run.t0 + at for i, at in enumerate(load.arrivals())}
        sending = asyncio.create_task(_send_paced(sender, ctx.loaded.route, run))
        total = WARM_UP + len(run.arrivals)
        await _sample_mesh(run, load, watcher, llm,
                           lambda: store.totals().succeeded + store.totals().failed >= total)
        await sending
    for rec in store.results():
        if rec.id in run.arrivals:
            run.ended[rec.id] = (rec.status, rec.recorded_at)
    run.workers = {"fast": 2, "llm": 2, "gpu": 8}  # the caps; the peak is measured


async def _send_paced(transport: Any, route: list[str], run: Run) -> None:
    """Open loop: each job enqueued at its arrival time, whatever the mesh is doing."""
    from asya_agents.envelope import Envelope
    from asya_agents.transports import Outgoing

    for job, at in run.arrivals.items():
        await asyncio.sleep(max(0.0, at - time.time()))
        env = Envelope.create({"job": job}, route, id=job)
        await transport.send([Outgoing(env.route.curr, env.encode())])


async def _sample_mesh(run: Run, load: Load, watcher: Any, llm: Any,
                       done: Callable[[], bool]) -> None:
    async def sample() -> dict[str, Any]:
        rows = (await watcher.report())["actors"]  # asya status --watch --json's object
        return {
            "depth": {s: rows[s]["depth"] for s in STEPS},
            "in_flight": {s: rows[s]["in_flight"] for s in STEPS},
            "replicas": {s: rows[s]["replicas"] for s in STEPS},
            "busy_gpus": min(rows["gpu"]["in_flight"], rows["gpu"]["replicas"]),
            "errors": sum(rows[s].get("errors") or 0.0 for s in STEPS),
        }

    await _ticks(run, load, sample, llm, done)


async def _delete_queues(ctx: Any) -> None:
    async with ctx.connected() as transport:
        await transport.delete_queues(ctx.actors)


# -- before: REST services and a synchronous caller ----------------------------------------


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (all bound at once, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def run_rest(load: Load, args: argparse.Namespace) -> Run:
    run, workers = Run("rest"), args.rest_workers
    stats = Path(tempfile.mkdtemp(prefix="asya-spike-rest-"))
    free = iter(_free_ports(workers * len(STEPS)))
    ports = {step: [next(free) for _ in range(workers)] for step in STEPS}
    with provider(args) as llm:
        env = _env(llm, args, SPIKE_STATS_DIR=str(stats))
        services = [subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"spike_rest:{step}_app", "--app-dir",
             str(HERE), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
             "--no-access-log"], env=env)
            for step in STEPS for port in ports[step]]
        caller = Caller({s: [f"http://127.0.0.1:{p}" for p in ps] for s, ps in ports.items()},
                        threads=16 * workers)
        try:
            _wait_for_workers(stats, workers)
            caller.start()
            for n in range(WARM_UP):
                caller.inbox.put(f"warm-{n}")
            _wait("the REST chain's warm-up", lambda: len(caller.ended) >= WARM_UP)
            _drive_rest(run, load, caller, stats, llm)
        finally:
            caller.stop.set()
            for proc in services:  # the run is over: what they still hold is not wanted
                proc.kill()
                proc.wait()
            shutil.rmtree(stats, ignore_errors=True)
    run.workers = dict.fromkeys(STEPS, workers)
    return run


def _wait_for_workers(stats: Path, workers: int) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if all(service_stats(stats, s, now=time.time())["workers"] >= workers for s in STEPS):
            return
        time.sleep(0.3)
    raise RuntimeError(f"the REST services did not start {workers} workers each in 120 s")


def _drive_rest(run: Run, load: Load, caller: Caller, stats: Path, llm: Any) -> None:
    run.t0 = time.time() + 1.0
    jobs = [f"j{i:04d}" for i in range(len(load.arrivals()))]
    run.arrivals = {job: run.t0 + at for job, at in zip(jobs, load.arrivals(), strict=True)}

    def arrive() -> None:  # open loop: into the inbox at its time, whatever the caller does
        for job in jobs:
            time.sleep(max(0.0, run.arrivals[job] - time.time()))
            caller.inbox.put(job)

    threading.Thread(target=arrive, daemon=True).start()
    failed_calls = caller.failed_calls

    async def sample() -> dict[str, Any]:
        nonlocal failed_calls
        snap = caller.snapshot()
        rows = {s: service_stats(stats, s, now=time.time()) for s in STEPS}
        errors, failed_calls = snap["failed_calls"] - failed_calls, snap["failed_calls"]
        return {"depth": {s: rows[s]["waiting"] for s in STEPS},
                "in_flight": {s: rows[s]["running"] for s in STEPS},
                "replicas": {s: rows[s]["workers"] for s in STEPS},
                "busy_gpus": rows["gpu"]["busy"], "errors": errors,
                "inbox": snap["inbox"], "sleeping": snap["sleeping"],
                "timeouts": snap["timeouts"]}

    asyncio.run(_ticks(run, load, sample, llm, lambda: all(j in caller.ended for j in jobs)))
    run.ended = {job: (e.status, e.at) for job, e in list(caller.ended.items())
                 if job in run.arrivals}


# -- the run ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a 15 s spike instead of 60 s: about a minute in all")
    parser.add_argument("--steady", type=float, default=0.6, help="jobs/s outside the spike")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="the provider's calls/s (below the spike's arrival rate)")
    parser.add_argument("--provider-burst", type=float, default=1.0,
                        help="seconds of calls the provider's bucket holds (its burst)")
    parser.add_argument("--gpu-seconds", type=float, default=1.5)
    parser.add_argument("--rest-workers", type=int, default=3, help="W: workers per service")
    parser.add_argument("--slo", type=float, default=30.0, help="latency SLO, seconds")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "spike")
    parser.add_argument("--only", choices=["rest", "mesh"])
    parser.add_argument("--replot", action="store_true",
                        help="only draw --out's plots again from its JSON files")
    args = parser.parse_args()
    if args.replot:
        spike_report.replot(args.out, lambda d: Load(
            steady=d["steady"], factor=d["spike"] / d["steady"], pre=d["phases_s"][0],
            spike=d["phases_s"][1], post=d["phases_s"][2], grace=d["grace_s"]))
        return
    load = Load(steady=args.steady, pre=5, spike=15, post=5, grace=10) if args.quick \
        else Load(steady=args.steady)
    runs = {}
    for design, runner in (("rest", run_rest), ("mesh", run_mesh)):
        if args.only in (None, design):
            began = time.time()
            print(f"running {design} ...", flush=True)
            runs[design] = runner(load, args)
            run = runs[design]
            print(f"{design}: {run.t0 - began:.0f} s to start and warm up, "
                  f"{len(run.samples)} s sampled, {time.time() - began:.0f} s in all",
                  flush=True)
    report = spike_report.summarize(runs, load, args)
    spike_report.print_table(report)
    args.out.mkdir(parents=True, exist_ok=True)
    spike_report.write(report, runs, load, args.out)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('spike-*')))} to {args.out}")
    print(json.dumps(report["goals"]))


if __name__ == "__main__":
    main()

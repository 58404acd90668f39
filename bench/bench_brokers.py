"""Benchmark: the 3-actor mesh on RabbitMQ beside raw aio-pika and a Celery chain.

Three systems move the same N messages through three trivial steps on the same
RabbitMQ broker, one after the other in this run:

- **asya mesh**: ``asya up bench/meshes/trio --transport rabbitmq`` (one replica per
  actor plus happy-end, which records every result in SQLite); quorum queues,
  persistent messages, publisher confirms, manual acks.
- **raw aio-pika**: the hand-written floor, three processes, one per hop; each consumes
  with manual acks (prefetch = the mesh's concurrency), decodes JSON, adds a key,
  publishes the next hop persistently and waits for the broker's confirm, then acks.
  Durable classic queues; the third hop publishes to a queue this process drains.
- **Celery**: a ``chain`` of three tasks (``acks_late``), one worker with three
  prefork processes; the last task appends its completion time to a file.

Each system runs ``--rounds`` times, interleaved, and the best round of each is shown
(other work on the machine then hits all three alike). All N are published at once;
envelopes/s is N over the time from the first publish to the last completion, latency
is completion minus creation per message (so at saturation p50 includes queueing).
Ratios are against the baselines of this run.

The mesh's replicas log at WARNING and serve no ``/metrics``, as the other two have
neither; ``--observed`` runs it with INFO logs (one JSON line per hop) and ``/metrics``.

    python bench/bench_brokers.py [--count 3000] [--rounds 3] [--only mesh|raw|celery]
                                  [--observed]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asya_agents.envelope import Envelope  # noqa: E402
from asya_agents.stores import SQLiteResultStore  # noqa: E402
from asya_agents.transports import Outgoing  # noqa: E402
from asya_agents.transports.rabbitmq import RabbitMQTransport  # noqa: E402

URL = "amqp://guest:guest@127.0.0.1:5672/"
MESH = ROOT / "bench" / "meshes" / "trio"
STEPS = ["first", "second", "third"]
PREFETCH = 32  # the trio mesh's concurrency
QUEUE_TYPE = "quorum"  # as the mesh's queues: the same durability
RUN = uuid.uuid4().hex[:8]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(count: int, began: float, done: list[tuple[float, float]]) -> dict[str, Any]:
    """``done``: (created, completed) per message."""
    last = max(end for _, end in done)
    latencies = [end - start for start, end in done]
    return {"rate": count / (last - began), "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99)}


# -- the mesh ---------------------------------------------------------------------------


def run_mesh(count: int, *, observed: bool = False) -> dict[str, Any]:
    """The mesh with its replicas logging at WARNING and serving no /metrics (the raw and
    Celery pipelines have neither); ``observed``: INFO logs (one JSON line per hop, to a
    file) and /metrics on every replica, as ``asya up`` runs by default."""
    state = Path(tempfile.mkdtemp(prefix="asya-bench-brokers-"))
    prefix = f"bench{RUN}"
    env = {**os.environ, "ASYA_RABBITMQ_QUEUE_PREFIX": prefix,
           "ASYA_RABBITMQ_MANAGEMENT_URL": ""}
    env.update({"ASYA_LOG_LEVEL": "INFO", "ASYA_LOG_FORMAT": "json", "ASYA_METRICS_PORT": "0"}
               if observed else {"ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1"})
    logs = open(state / "mesh.log", "w") if observed else None
    up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(MESH), "--transport",
                           "rabbitmq", "--state-dir", str(state)], env=env, stderr=logs)
    store = SQLiteResultStore(state / "results.db")
    transport = RabbitMQTransport(URL, mesh="trio", prefix=prefix)
    try:
        asyncio.run(_wait_for_consumers(transport, STEPS))
        # happy-end starts on demand (minReplicaCount 0): one envelope through the route
        # starts it, so that its start-up is not timed (the raw pipeline's sink and the
        # Celery worker are running before their clocks start, too).
        warm_up = Envelope.create({"warm-up": True}, STEPS)
        asyncio.run(_send_envelopes(transport, [warm_up]))
        while store.totals().succeeded < 1:
            time.sleep(0.05)
        envelopes = [Envelope.create({"i": i}, STEPS) for i in range(count)]
        window = CpuWindow([up.pid])
        window.start()
        began = time.time()
        asyncio.run(_send_envelopes(transport, envelopes))
        while store.totals().succeeded < count + 1:
            time.sleep(0.05)
        window.stop()
        records = [r for r in store.results() if r.envelope["id"] != warm_up.id]
        return {**summary(count, began, [(r.envelope["meta"]["created"], r.recorded_at)
                                         for r in records]),
                "cpu": window.per_message(count)}
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        if logs is not None:
            logs.close()
        store.close()
        asyncio.run(_delete(transport, [*STEPS, "happy-end", "error-end"]))


async def _wait_for_consumers(transport: RabbitMQTransport, actors: list[str]) -> None:
    """Until each of ``actors``' queues exists and has a consumer (replicas started,
    minReplicaCount 1)."""
    import aio_pika

    conn = await aio_pika.connect(URL)
    try:
        while True:
            ready = 0
            for actor in actors:
                channel = await conn.channel()
                try:
                    queue = await channel.declare_queue(transport.queue_name(actor),
                                                        passive=True)
                    ready += bool(queue.declaration_result.consumer_count)
                    await channel.close()
                except aio_pika.exceptions.ChannelClosed:
                    pass
            if ready == len(actors):
                return
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


async def _send_envelopes(transport: RabbitMQTransport, envelopes: list[Envelope]) -> None:
    for start in range(0, len(envelopes), 500):
        await transport.send([Outgoing(e.route.curr, e.encode())
                              for e in envelopes[start:start + 500]])
    await transport.close()


async def _delete(transport: RabbitMQTransport, actors: list[str]) -> None:
    await transport.delete_queues(actors)
    await transport.close()


# -- raw aio-pika ---------------------------------------------------------------------


def raw_queue(hop: int) -> str:
    return f"bench-raw-{RUN}-{hop}"


async def raw_hop(hop: int, run: str) -> None:
    """One hop of the hand-written pipeline: consume, transform, publish, confirm, ack."""
    import aio_pika

    conn = await aio_pika.connect_robust(URL)
    channel = await conn.channel(publisher_confirms=True)
    await channel.set_qos(prefetch_count=PREFETCH)
    inbox = await channel.declare_queue(f"bench-raw-{run}-{hop}", durable=True,
                                        arguments={"x-queue-type": QUEUE_TYPE})
    target = f"bench-raw-{run}-{hop + 1}"

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        body = json.loads(message.body)
        body[f"hop{hop}"] = 1
        await channel.default_exchange.publish(
            aio_pika.Message(json.dumps(body).encode(),
                             delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=target)
        await message.ack()

    await inbox.consume(on_message)
    await asyncio.Future()


def run_raw(count: int) -> dict[str, Any]:
    asyncio.run(_declare_raw())
    hops = [subprocess.Popen([sys.executable, __file__, "--raw-hop", str(h), "--run", RUN])
            for h in (1, 2, 3)]
    try:
        window = CpuWindow([p.pid for p in hops])
        row: dict[str, Any] = asyncio.run(_drive_raw(count, window))
        return {**row, "cpu": window.per_message(count)}
    finally:
        for proc in hops:
            proc.terminate()
            proc.wait(10)
        asyncio.run(_delete_raw())


async def _declare_raw() -> None:
    import aio_pika

    conn = await aio_pika.connect(URL)
    channel = await conn.channel()
    for hop in (1, 2, 3, 4):
        await channel.declare_queue(raw_queue(hop), durable=True,
                                    arguments={"x-queue-type": QUEUE_TYPE})
    await conn.close()


async def _drive_raw(count: int, window: CpuWindow) -> dict[str, Any]:
    import aio_pika

    conn = await aio_pika.connect(URL)
    channel = await conn.channel(publisher_confirms=True)
    while True:  # every hop consuming
        counts = [(await channel.declare_queue(raw_queue(h), passive=True))
                  .declaration_result.consumer_count for h in (1, 2, 3)]
        if all(counts):
            break
        await asyncio.sleep(0.2)
    done: list[tuple[float, float]] = []
    finished = asyncio.Event()

    async def on_done(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        done.append((json.loads(message.body)["created"], time.time()))
        await message.ack()
        if len(done) >= count:
            finished.set()

    sink = await channel.declare_queue(raw_queue(4), passive=True)
    await sink.consume(on_done)
    window.start()
    began = time.time()
    for start in range(0, count, 500):
        await asyncio.gather(*(
            channel.default_exchange.publish(
                aio_pika.Message(json.dumps({"i": i, "created": time.time()}).encode(),
                                 delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=raw_queue(1))
            for i in range(start, min(start + 500, count))))
    await finished.wait()
    window.stop()
    await conn.close()
    return summary(count, began, done)


async def _delete_raw() -> None:
    import aio_pika

    conn = await aio_pika.connect(URL)
    channel = await conn.channel()
    for hop in (1, 2, 3, 4):
        await channel.queue_delete(raw_queue(hop))
    await conn.close()


# -- Celery ---------------------------------------------------------------------------


def celery_app(run: str, done_file: str) -> Any:
    from celery import Celery

    app = Celery("bench_brokers", broker=URL.replace("5672/", "5672//"))
    app.conf.update(task_acks_late=True, task_default_queue=f"bench-celery-{run}",
                    worker_enable_remote_control=False, worker_send_task_events=False,
                    broker_connection_retry_on_startup=True, task_ignore_result=True,
                    worker_hijack_root_logger=False)

    @app.task(name="bench.first")
    def first(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "a": 1}

    @app.task(name="bench.second")
    def second(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "b": 2}

    @app.task(name="bench.third")
    def third(payload: dict[str, Any]) -> None:
        with open(done_file, "a") as out:
            out.write(f"{payload['created']} {time.time()}\n")

    app.bench_tasks = (first, second, third)
    return app


def run_celery(count: int) -> dict[str, Any]:
    from celery import chain

    done_file = tempfile.mktemp(prefix="asya-bench-celery-")
    Path(done_file).touch()
    worker = subprocess.Popen([sys.executable, __file__, "--celery-worker", "--run", RUN,
                               "--done-file", done_file],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = celery_app(RUN, done_file)
    first, second, third = app.bench_tasks
    try:
        time.sleep(5)  # the worker connects and its three processes fork
        window = CpuWindow([worker.pid])
        window.start()
        began = time.time()
        with app.producer_or_acquire() as producer:
            for _ in range(count):
                chain(first.s({"created": time.time()}), second.s(), third.s()) \
                    .apply_async(producer=producer)
        while True:
            lines = Path(done_file).read_text().splitlines()
            if len(lines) >= count:
                break
            time.sleep(0.05)
        window.stop()
        done = [(float(a), float(b)) for a, b in (line.split() for line in lines)]
        return {**summary(count, began, done), "cpu": window.per_message(count)}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(f"bench-celery-{RUN}")
        os.unlink(done_file)


# -- report -------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, float, str] | None:
    """(parent pid, CPU seconds, command line) of a live process."""
    try:
        head, tail = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    fields = tail.split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return int(fields[1]), cpu, cmd or head.split("(", 1)[-1]


class CpuWindow:
    """CPU used by process trees (a system's own processes) and by the broker between
    ``start()`` and ``stop()``: steady-state cost per message, startup left out."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.before: dict[int, tuple[float, str]] = {}
        self.after: dict[int, tuple[float, str]] = {}

    def _snapshot(self) -> dict[int, tuple[float, str]]:
        stats = {int(p.name): st for p in Path("/proc").iterdir()
                 if p.name.isdigit() and (st := _stat(int(p.name))) is not None}
        wanted, frontier = set(self.roots), list(self.roots)
        while frontier:
            parent = frontier.pop()
            kids = [pid for pid, st in stats.items() if st[0] == parent and pid not in wanted]
            wanted.update(kids)
            frontier.extend(kids)
        snap = {pid: (stats[pid][1], stats[pid][2]) for pid in wanted if pid in stats}
        snap.update({-pid: (st[1], "broker") for pid, st in stats.items()
                     if "beam.smp" in st[2]})
        return snap

    def start(self) -> None:
        self.before = self._snapshot()

    def stop(self) -> None:
        self.after = self._snapshot()

    def per_message(self, count: int) -> dict[str, float]:
        used: dict[str, float] = {}
        for pid, (cpu, cmd) in self.after.items():
            label = "broker" if pid < 0 else _label(cmd)
            used[label] = used.get(label, 0.0) + cpu - self.before.get(pid, (0.0, ""))[0]
        return {label: seconds * 1000 / count for label, seconds in used.items()}


def _label(cmd: str) -> str:
    words = cmd.split()
    if "asya_agents.replica" in cmd:
        return f"replica {words[words.index('asya_agents.replica') + 2]}"
    if "--raw-hop" in words:
        return f"raw hop {words[words.index('--raw-hop') + 1]}"
    if "asya_agents" in cmd:
        return "supervisor"
    return "celery worker" if "--celery-worker" in words else words[0] if words else "?"


def cpu_columns(row: dict[str, Any]) -> tuple[float, float]:
    own = sum(v for k, v in row["cpu"].items() if k != "broker")
    return own, row["cpu"].get("broker", 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of each system, interleaved; the best of each is shown")
    parser.add_argument("--only", choices=["mesh", "raw", "celery"], help="one system alone")
    parser.add_argument("--observed", action="store_true",
                        help="the mesh with INFO logs and /metrics on (as asya up by default)")
    parser.add_argument("--raw-hop", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--celery-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--done-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_hop:
        asyncio.run(raw_hop(args.raw_hop, args.run))
        return
    if args.celery_worker:
        celery_app(args.run, args.done_file).worker_main(
            ["worker", "-c", "3", "-P", "prefork", "--loglevel", "WARNING", "--without-gossip",
             "--without-mingle", "--without-heartbeat"])
        return
    if args.only:
        row = ({"mesh": lambda n: run_mesh(n, observed=args.observed), "raw": run_raw,
                "celery": run_celery}[args.only](args.count))
        print(f"{args.only}: {row['rate']:.0f} msg/s, p50 {row['p50'] * 1000:.0f} ms, "
              f"p99 {row['p99'] * 1000:.0f} ms; CPU ms/msg by process: "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(row["cpu"].items())))
        return
    rows: dict[str, list[dict[str, Any]]] = {"mesh": [], "raw": [], "celery": []}
    for _ in range(args.rounds):  # interleaved, so a busy moment hits every system
        rows["raw"].append(run_raw(args.count))
        rows["celery"].append(run_celery(args.count))
        rows["mesh"].append(run_mesh(args.count, observed=args.observed))
    raw, celery, mesh = (max(rows[k], key=lambda r: r["rate"])
                         for k in ("raw", "celery", "mesh"))
    print(f"\n{args.count} messages, 3 hops, RabbitMQ 127.0.0.1, {os.cpu_count()} cores, "
          f"best of {args.rounds} interleaved rounds")
    print(f"{'system':<36}{'msg/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/msg':>12}"
          f"{'broker ms/msg':>15}")
    # CPU: of the system's own processes and of RabbitMQ, per message, while it ran.
    for name, row in (("asya mesh (rabbitmq transport)", mesh),
                      ("raw aio-pika 3 processes, confirms", raw),
                      ("Celery chain, acks_late, 3 procs", celery)):
        own, broker = cpu_columns(row)
        print(f"{name:<36}{row['rate']:>8.0f}{row['p50'] * 1000:>9.0f}"
              f"{row['p99'] * 1000:>9.0f}{own:>12.2f}{broker:>15.2f}")
    print("every round, msg/s: " + "; ".join(
        f"{k} " + ", ".join(f"{r['rate']:.0f}" for r in rows[k])
        for k in ("mesh", "raw", "celery")))
    print("mesh CPU ms/msg by process: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(mesh["cpu"].items())))
    vs_raw, vs_celery = mesh["rate"] / raw["rate"], mesh["rate"] / celery["rate"]
    print(f"mesh / raw aio-pika: {vs_raw:.2f}x (goal >= 0.9x: "
          f"{'met' if vs_raw >= 0.9 else 'NOT met'})")
    print(f"mesh / Celery:       {vs_celery:.2f}x (goal >= 2.5x: "
          f"{'met' if vs_celery >= 2.5 else 'NOT met'})")


if __name__ == "__main__":
    main()

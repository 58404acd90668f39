"""Benchmark: the CPU one RabbitMQ hop costs, one replica at a time, on a preloaded queue.

``bench_brokers.py`` times whole pipelines on a 2-core machine, where five processes and
the broker share the cores and the figures drift with whatever else runs. This one
isolates a single process: it fills a queue with N envelopes, starts one consumer on it
and reads that consumer's CPU time (and the broker's) from ``/proc`` while it drains
the queue, between two marks past its start-up. Three consumers, one after the other:

- **mesh hop**: a replica of the trio mesh's ``first`` actor (``python -m
  asya_agents.replica``), publishing to ``second`` with confirms, acking its input;
- **raw aio-pika hop**: ``bench_brokers.py``'s hand-written hop (consume, JSON, publish
  with a confirm, ack) with the same prefetch, the baseline;
- **happy-end**: the crew replica recording each envelope in SQLite, then acking.

It prints CPU microseconds per message for each, the broker's beside them, and the mesh
hop's ratio to the raw hop. Lower is better; the throughput of the CPU-bound pipeline
follows the sum.

``--observed`` runs the replicas as ``asya up`` does by default: one JSON log line per
hop (to a file) and ``/metrics``.

    python bench/bench_hop.py [--count 20000] [--only mesh|raw|happy] [--observed]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_brokers import MESH, PREFETCH, QUEUE_TYPE, URL  # noqa: E402

from asya_agents.envelope import Envelope  # noqa: E402
from asya_agents.transports import Outgoing  # noqa: E402
from asya_agents.transports.rabbitmq import RabbitMQTransport  # noqa: E402

RUN = uuid.uuid4().hex[:8]
STEPS = ["first", "second", "third"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def broker_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"beam.smp" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


async def depth(channel: Any, queue: str) -> int:
    declared = await channel.queue_declare(queue, passive=True)
    return int(declared.message_count or 0)


async def measure(pid: int, count: int, consumed: Any) -> dict[str, float]:
    """CPU per message of ``pid`` and of the broker while ``consumed()`` (messages done
    so far) goes from 10% to 90% of ``count``: start-up and the tail are left out."""
    low, high = count // 10, count * 9 // 10
    while (done := await consumed()) < low:
        await asyncio.sleep(0.01)
    brokers = broker_pids()
    start = (done, cpu_seconds(pid), sum(cpu_seconds(p) for p in brokers), time.monotonic())
    while (done := await consumed()) < high:
        await asyncio.sleep(0.01)
    end = (done, cpu_seconds(pid), sum(cpu_seconds(p) for p in brokers), time.monotonic())
    n = end[0] - start[0]
    return {"own": (end[1] - start[1]) * 1e6 / n, "broker": (end[2] - start[2]) * 1e6 / n,
            "rate": n / (end[3] - start[3])}


def envelopes(count: int, at: str) -> list[Envelope]:
    made = [Envelope.create({"i": i}, STEPS) for i in range(count)]
    if at == "happy-end":  # as the third hop would publish it
        made = [e.advanced().advanced().advanced() for e in made]
    return made


async def preload(transport: RabbitMQTransport, items: list[Envelope]) -> None:
    for start in range(0, len(items), 1000):
        await transport.send([Outgoing(e.route.curr, e.encode())
                              for e in items[start:start + 1000]])


async def run_replica(actor: str, count: int, *, observed: bool) -> dict[str, float]:
    """One replica of the trio mesh's ``actor`` (``first`` or ``happy-end``)."""
    import aio_pika

    prefix = f"benchhop{RUN}"
    transport = RabbitMQTransport(URL, mesh="trio", prefix=prefix)
    queues = [*STEPS, "happy-end", "error-end"]
    await transport.ensure_queues(queues)
    await preload(transport, envelopes(count, actor))
    state = Path(tempfile.mkdtemp(prefix="asya-bench-hop-"))
    env = {**os.environ, "ASYA_RABBITMQ_QUEUE_PREFIX": prefix,
           "ASYA_RABBITMQ_MANAGEMENT_URL": ""}
    env.update({"ASYA_LOG_LEVEL": "INFO", "ASYA_LOG_FORMAT": "json", "ASYA_METRICS_PORT": "0"}
               if observed else {"ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1"})
    with open(state / "replica.log", "w") as logs:
        proc = subprocess.Popen([sys.executable, "-m", "asya_agents.replica", str(MESH),
                                 actor, "--transport", "rabbitmq", "--state-dir", str(state)],
                                env=env, stderr=logs)
    conn = await aio_pika.connect(URL)
    channel = await (await conn.channel()).get_underlay_channel()
    inbox = transport.queue_name(actor)
    try:
        async def consumed() -> int:
            return count - await depth(channel, inbox)

        return await measure(proc.pid, count, consumed)
    finally:
        proc.terminate()
        proc.wait(30)
        await conn.close()
        await transport.delete_queues(queues)
        await transport.close()


async def run_raw(count: int) -> dict[str, float]:
    import aio_pika

    conn = await aio_pika.connect(URL)
    pub = await conn.channel(publisher_confirms=True)
    names = [f"bench-raw-{RUN}-{hop}" for hop in (1, 2)]
    for name in names:
        await pub.declare_queue(name, durable=True, arguments={"x-queue-type": QUEUE_TYPE})
    body = Envelope.create({"i": 0}, STEPS).encode()
    for start in range(0, count, 1000):
        await asyncio.gather(*(pub.default_exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
            routing_key=names[0]) for _ in range(start, min(start + 1000, count))))
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "bench_brokers.py"),
                             "--raw-hop", "1", "--run", RUN])
    channel = await pub.get_underlay_channel()
    try:
        async def consumed() -> int:
            return await depth(channel, names[1])

        return await measure(proc.pid, count, consumed)
    finally:
        proc.terminate()
        proc.wait(30)
        for name in names:
            await pub.queue_delete(name)
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--only", choices=["mesh", "raw", "happy"])
    parser.add_argument("--observed", action="store_true",
                        help="replicas with INFO logs and /metrics (as asya up by default)")
    args = parser.parse_args()
    runs = {"mesh": lambda: run_replica("first", args.count, observed=args.observed),
            "raw": lambda: run_raw(args.count),
            "happy": lambda: run_replica("happy-end", args.count, observed=args.observed)}
    rows = {name: asyncio.run(run()) for name, run in runs.items()
            if args.only in (None, name)}
    print(f"\n{args.count} messages preloaded, one consumer at a time, prefetch {PREFETCH}, "
          f"{os.cpu_count()} cores")
    print(f"{'consumer':<28}{'own CPU us/msg':>16}{'broker us/msg':>15}{'msg/s':>8}")
    labels = {"mesh": "mesh hop (first -> second)", "raw": "raw aio-pika hop",
              "happy": "happy-end (SQLite)"}
    for name, row in rows.items():
        print(f"{labels[name]:<28}{row['own']:>16.0f}{row['broker']:>15.0f}"
              f"{row['rate']:>8.0f}")
    if "mesh" in rows and "raw" in rows:
        print(f"mesh hop / raw hop CPU: {rows['mesh']['own'] / rows['raw']['own']:.2f}x "
              f"(below 1: the mesh hop is cheaper)")


if __name__ == "__main__":
    main()

"""Benchmark: a 3-actor mesh end to end on the embedded transport.

Starts ``asya up bench/meshes/trio`` (one replica per actor plus the crew, each its own
OS process), sends N envelopes with ``asya send`` machinery, and measures envelopes/s
from the first send to the last one recorded by happy-end, and per-envelope latency
(recorded_at - created). The baseline, run in the same process, is the floor of any
3-hop Python pipeline: three processes passing dicts through ``multiprocessing`` queues
with no durability at all. The ratio says what durability, leases and routing cost.

    python bench/bench_mesh.py [--count 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asya_agents.envelope import Envelope  # noqa: E402
from asya_agents.stores import SQLiteResultStore  # noqa: E402
from asya_agents.transports import Outgoing  # noqa: E402
from asya_agents.transports.embedded import EmbeddedTransport  # noqa: E402

MESH = ROOT / "bench" / "meshes" / "trio"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_mesh(count: int, rate: float | None = None) -> dict[str, float]:
    """Burst (``rate`` None): all envelopes queued at once, for throughput. Paced: sent
    at ``rate`` per second in batches of 10, for latency under a steady load."""
    state = Path(tempfile.mkdtemp(prefix="asya-bench-"))
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING"}
    up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(MESH),
                           "--state-dir", str(state)], env=env)
    store = SQLiteResultStore(state / "results.db")
    try:
        time.sleep(3)  # replicas start (minReplicaCount 1)
        envelopes = [Envelope.create({"i": i}, ["first", "second", "third"])
                     for i in range(count)]

        async def push() -> None:
            tr = EmbeddedTransport(state / "queues.db")
            step = 500 if rate is None else 10
            t0 = time.monotonic()
            for start in range(0, count, step):
                if rate is not None:
                    await asyncio.sleep(max(0.0, t0 + start / rate - time.monotonic()))
                    for e in envelopes[start:start + step]:
                        e.meta.created = time.time()
                await tr.send([Outgoing("first", e.encode())
                               for e in envelopes[start:start + step]])
            await tr.close()

        began = time.time()
        asyncio.run(push())
        while store.totals().succeeded < count:
            time.sleep(0.05)
        records = store.results()
        last = max(r.recorded_at for r in records)
        latencies = [r.recorded_at - r.envelope["meta"]["created"] for r in records]
        return {"rate": count / (last - began), "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99)}
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(60)
        store.close()


def _stage(inbox: Any, outbox: Any, key: str) -> None:
    while (item := inbox.get()) is not None:
        item[key] = 1
        outbox.put(item)
    outbox.put(None)


def run_raw(count: int) -> dict[str, float]:
    queues = [mp.Queue() for _ in range(4)]
    procs = [mp.Process(target=_stage, args=(queues[i], queues[i + 1], k))
             for i, k in enumerate("abc")]
    for p in procs:
        p.start()
    began = time.time()
    for i in range(count):
        queues[0].put({"i": i, "created": time.time()})
    queues[0].put(None)
    latencies = []
    while (item := queues[3].get()) is not None:
        latencies.append(time.time() - item["created"])
    elapsed = time.time() - began
    for p in procs:
        p.join()
    return {"rate": count / elapsed, "p50": percentile(latencies, 0.5),
            "p99": percentile(latencies, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--paced-rate", type=float, default=300.0,
                        help="offered load (env/s) of the latency run")
    args = parser.parse_args()
    raw = run_raw(args.count)
    mesh = run_mesh(args.count)
    paced = run_mesh(min(args.count, int(args.paced_rate * 10)), rate=args.paced_rate)
    print(f"\n{args.count} envelopes, 3 hops, {os.cpu_count()} cores")
    print(f"{'system':<40}{'env/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, row in (("asya mesh, burst (embedded, durable)", mesh),
                      (f"asya mesh, paced at {args.paced_rate:.0f} env/s", paced),
                      ("baseline: mp.Queue, no durability", raw)):
        print(f"{name:<40}{row['rate']:>10.0f}{row['p50'] * 1000:>10.1f}"
              f"{row['p99'] * 1000:>10.1f}")
    print(f"ratio mesh / baseline: {mesh['rate'] / raw['rate']:.3f}")
    print(f"goal >= 500 env/s: {'met' if mesh['rate'] >= 500 else 'NOT met'} "
          f"({mesh['rate']:.0f} env/s)")


if __name__ == "__main__":
    main()

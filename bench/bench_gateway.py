"""Benchmark: the gateway in front of a one-actor mesh, against direct enqueueing.

Starts ``asya up bench/meshes/solo --gateway`` (the real supervisor, one replica of the
actor, the crew, the gateway, each its own OS process, on the embedded transport) and
measures, in the same run:

- submissions per second: ``--count`` jobs posted to ``POST /v1/jobs`` by ``--clients``
  concurrent keep-alive connections, against the same number of envelopes enqueued
  the way ``asya send`` does (``MeshContext.send``, in chunks);
- latency from submit to end, one job at a time (``--latency-jobs`` per path, the two
  paths taking turns after random pauses): through the gateway, from the POST to the
  ``end`` event of the job's SSE stream; directly, from the enqueue to the moment the
  result store shows the job ended (read every millisecond, as a tight
  ``asya send --wait`` would). Beside it, how long after the result store recorded the
  job each client saw its end: the notification's own share, free of the replicas'
  polling.

The client is a small HTTP/1.1 client on asyncio streams, so the figures are the
gateway's, not an HTTP library's.

    python bench/bench_gateway.py [--count 3000] [--clients 32] [--latency-jobs 200]
                                  [--transport embedded|rabbitmq]

On the embedded transport an idle replica polls its queue (every 20 to 50 ms), which
sets the latency of both paths and blurs a difference of a few milliseconds; on
RabbitMQ deliveries are pushed, and the difference shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asya_agents.context import MeshContext  # noqa: E402
from asya_agents.envelope import Envelope  # noqa: E402
from asya_agents.settings import Settings  # noqa: E402
from asya_agents.stores.base import ResultStore  # noqa: E402
from asya_agents.transports import Backend  # noqa: E402

MESH = ROOT / "bench" / "meshes" / "solo"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Connection:
    """One keep-alive HTTP/1.1 connection: enough client for a benchmark."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                          f"content-type: application/json\r\ncontent-length: {len(body)}"
                          "\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return status, await self.reader.readexactly(length)

    async def stream_until_end(self, path: str) -> None:
        """GET an SSE stream and read it until its ``end`` event."""
        self.writer.write(f"GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                          "accept: text/event-stream\r\n\r\n".encode())
        while b"event: end" not in await self.reader.readuntil(b"\r\n\r\n"):
            pass

    def close(self) -> None:
        self.writer.close()


async def gateway_submissions(port: int, count: int, clients: int) -> float:
    body = json.dumps({"payload": {"n": 1}}).encode()
    conns = [await Connection.open(port) for _ in range(clients)]

    async def client(conn: Connection, share: int) -> None:
        for _ in range(share):
            status, _ = await conn.request("POST", "/v1/jobs", body)
            assert status == 201, status

    started = time.perf_counter()
    await asyncio.gather(*(client(c, count // clients) for c in conns))
    elapsed = time.perf_counter() - started
    for conn in conns:
        conn.close()
    return (count // clients) * clients / elapsed


async def direct_submissions(ctx: MeshContext, count: int) -> float:
    envelopes = [Envelope.create({"n": 1}, ctx.route()) for _ in range(count)]
    async with ctx.connected() as transport:
        started = time.perf_counter()
        await ctx.send(transport, envelopes)
        return count / (time.perf_counter() - started)


async def _gateway_job(post: Connection, port: int, body: bytes,
                       store: ResultStore) -> tuple[float, float]:
    """The job's submit-to-end latency, and how long after the result store recorded
    it the client saw its end (the gateway's own share of the wait)."""
    stream = await Connection.open(port)
    started = time.perf_counter()
    _, answer = await post.request("POST", "/v1/jobs", body)
    job = json.loads(answer)["id"]
    await stream.stream_until_end(f"/v1/jobs/{job}/events")
    seen, took = time.time(), time.perf_counter() - started
    stream.close()
    return took, seen - _recorded_at(store, job)


def _recorded_at(store: ResultStore, job: str) -> float:
    record = store.get(job)
    assert record is not None and record.recorded_at is not None, job
    return float(record.recorded_at)


async def _direct_job(ctx: MeshContext, transport: Backend,
                      store: ResultStore) -> tuple[float, float]:
    envelope = Envelope.create({"n": 1}, ctx.route())
    started = time.perf_counter()
    await ctx.send(transport, [envelope])
    while store.ended_weight([envelope.id])[envelope.id] < 1:
        await asyncio.sleep(0.001)
    seen, took = time.time(), time.perf_counter() - started
    return took, seen - _recorded_at(store, envelope.id)


Timed = list[tuple[float, float]]


async def latencies(port: int, ctx: MeshContext, jobs: int) -> tuple[Timed, Timed]:
    """One job at a time, the two paths taking turns, each after a random pause: the
    embedded transport's replicas poll their queue, and a fixed rhythm would meet their
    polls at a different phase on each path. Each job gives its latency and how long
    after its record its end was seen."""
    body, pause = json.dumps({"payload": {"n": 1}}).encode(), random.Random(7)
    gateway, direct = [], []
    post, store = await Connection.open(port), ctx.results()
    async with ctx.connected() as transport:
        for _ in range(jobs):
            await asyncio.sleep(pause.uniform(0, 0.06))
            gateway.append(await _gateway_job(post, port, body, store))
            await asyncio.sleep(pause.uniform(0, 0.06))
            direct.append(await _direct_job(ctx, transport, store))
    post.close()
    return gateway, direct


def wait_listening(port: int, up: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """Until the gateway answers ``/healthz`` (a broker makes the start slower)."""
    async def answers() -> bool:
        try:
            conn = await Connection.open(port)
        except OSError:
            return False
        try:
            status, _ = await conn.request("GET", "/healthz")
            return status == 200
        finally:
            conn.close()

    deadline = time.monotonic() + timeout
    while not asyncio.run(answers()):
        if up.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the gateway did not start (see the output above)")
        time.sleep(0.1)


def wait_drained(ctx: MeshContext, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while ctx.results().totals().succeeded < expected:
        if time.monotonic() > deadline:
            raise TimeoutError("the mesh did not finish the submitted jobs")
        time.sleep(0.1)


def run(count: int, clients: int, latency_jobs: int, transport: str) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="asya-bench-gw-"))
    port, prefix = free_port(), f"asya-bench-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1",
           "ASYA_GATEWAY_KEYS": "", "ASYA_RABBITMQ_QUEUE_PREFIX": prefix}
    env.pop("ASYA_STORE_URL", None)
    up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(MESH),
                           "--state-dir", str(state), "--transport", transport,
                           "--gateway", "--gateway-port", str(port), "--gateway-insecure"],
                          env=env)
    settings = Settings()
    settings = settings.model_copy(update={"rabbitmq": settings.rabbitmq.model_copy(
        update={"queue_prefix": prefix})})
    ctx = MeshContext.open(MESH, transport=transport, state_dir=state, settings=settings)
    try:
        wait_listening(port, up)  # the replica, the crew and the gateway start
        asyncio.run(latencies(port, ctx, 5))  # warm up both paths
        out = {"gw_rate": asyncio.run(gateway_submissions(port, count, clients))}
        wait_drained(ctx, 10 + count // clients * clients)
        out["direct_rate"] = asyncio.run(direct_submissions(ctx, count))
        wait_drained(ctx, 10 + count // clients * clients + count)
        gw, direct = asyncio.run(latencies(port, ctx, latency_jobs))
        for name, timed in (("gw", gw), ("direct", direct)):
            took, after = [t for t, _ in timed], [a for _, a in timed]
            out.update({f"{name}_p50": percentile(took, 0.5),
                        f"{name}_p99": percentile(took, 0.99),
                        f"{name}_seen_p50": percentile(after, 0.5)})
        return out
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        if transport == "rabbitmq":
            asyncio.run(_delete_queues(ctx))
        ctx.close()


async def _delete_queues(ctx: MeshContext) -> None:
    async with ctx.connected() as admin:
        await admin.delete_queues(sorted(ctx.loaded.actor_names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--latency-jobs", type=int, default=200)
    parser.add_argument("--transport", choices=["embedded", "rabbitmq"], default="embedded",
                        help="the mesh's transport (rabbitmq: a broker on 127.0.0.1:5672)")
    args = parser.parse_args()
    r = run(args.count, args.clients, args.latency_jobs, args.transport)
    print(f"\n{args.count} submissions by {args.clients} clients, "
          f"{args.latency_jobs} jobs one at a time per path, one actor, {args.transport}, "
          f"{os.cpu_count()} cores")
    print(f"{'path':<44}{'submit/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, key in (("gateway: POST /v1/jobs, SSE end", "gw"),
                      ("direct: asya send-style enqueue, store read", "direct")):
        print(f"{name:<44}{r[key + '_rate']:>10.0f}{r[key + '_p50'] * 1000:>10.2f}"
              f"{r[key + '_p99'] * 1000:>10.2f}")
    print(f"end seen after the store recorded it, p50: gateway "
          f"{r['gw_seen_p50'] * 1000:.2f} ms, direct {r['direct_seen_p50'] * 1000:.2f} ms")
    added = (r["gw_p50"] - r["direct_p50"]) * 1000
    print(f"ratio submissions gateway / direct: {r['gw_rate'] / r['direct_rate']:.3f}")
    print(f"ratio p50 latency gateway / direct: {r['gw_p50'] / r['direct_p50']:.2f} "
          f"(+{added:.2f} ms)")
    print(f"goal >= 1000 submissions/s: {'met' if r['gw_rate'] >= 1000 else 'NOT met'} "
          f"({r['gw_rate']:.0f}/s)")
    print(f"goal <= 5 ms added to the p50 latency: {'met' if added <= 5 else 'NOT met'} "
          f"({added:+.2f} ms)")


if __name__ == "__main__":
    main()

"""Benchmark: what observation costs a replica per hop.

One actor (an instant payload handler) on the embedded transport, in this process,
handles N envelopes three times: with the runtime's defaults (no metrics, no logs, a
traceparent stamped per hop: the baseline), with Prometheus metrics and JSON event
logs (to a null stream), and with OpenTelemetry spans on top (SDK provider, in-memory
exporter behind the batch processor replicas use). Prints hops/s and the ratio to
the baseline measured in the same run.

    python bench/bench_observe.py [--count 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asya_agents.envelope import Envelope  # noqa: E402
from asya_agents.handlers import load_handler  # noqa: E402
from asya_agents.observe.logs import LogObserver, configure_logging  # noqa: E402
from asya_agents.observe.metrics import MetricsObserver  # noqa: E402
from asya_agents.observe.spans import HopTracer  # noqa: E402
from asya_agents.observe.wiring import Observers  # noqa: E402
from asya_agents.runtime import Runtime, RuntimeConfig  # noqa: E402
from asya_agents.seams import Observer  # noqa: E402
from asya_agents.transports import Outgoing  # noqa: E402
from asya_agents.transports.embedded import EmbeddedTransport  # noqa: E402


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


async def run(count: int, observer: Observer, tracer: HopTracer) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        transport = EmbeddedTransport(Path(tmp) / "q.db", poll_interval=0.001)
        await transport.ensure_queues(["echo", "happy-end"])
        bodies = [Outgoing("echo", Envelope.create({"i": i}, ["echo"]).encode())
                  for i in range(count)]
        for start in range(0, count, 500):
            await transport.send(bodies[start:start + 500])
        handler = load_handler("bench_observe.echo", threads=8)
        cfg = RuntimeConfig(actor="echo", actors={"echo", "happy-end"}, concurrency=32,
                            receive_wait=0.01, observer=observer, tracer=tracer)
        runtime = Runtime(cfg, transport=transport, handler=handler)
        stop = asyncio.Event()
        began = time.perf_counter()
        task = asyncio.ensure_future(runtime.run(stop))
        while (await transport.stats("happy-end")).depth < count:
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - began
        stop.set()
        await task
        await transport.close()
        handler.close()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    configure_logging(actor="echo", fmt="json", level="INFO", stream=io.StringIO())
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(InMemorySpanExporter()))  # as replicas do
    cases = [
        ("baseline (defaults)", lambda: Observer(), lambda: HopTracer()),
        ("metrics + JSON logs", lambda: Observers([MetricsObserver(), LogObserver()]),
         lambda: HopTracer()),
        ("metrics + logs + OTel spans", lambda: Observers([MetricsObserver(), LogObserver()]),
         lambda: HopTracer(provider=provider)),
    ]
    best: dict[str, float] = {}
    for _ in range(args.rounds):  # interleaved, best of: the machine is shared and noisy
        for name, observer, tracer in cases:
            rate = asyncio.run(run(args.count, observer(), tracer()))
            best[name] = max(best.get(name, 0.0), rate)
    base = best[cases[0][0]]
    print(f"{'case':<30} {'hops/s':>10} {'ratio':>7}   (best of {args.rounds})")
    for name, rate in best.items():
        print(f"{name:<30} {rate:>10.0f} {rate / base:>7.2f}")


if __name__ == "__main__":
    main()

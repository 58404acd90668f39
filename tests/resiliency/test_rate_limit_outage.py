"""An unreachable rate-limit store: the replica holds for ``unavailableAfter``, then says
so (metrics, ``asya status``) and takes its own share of the limit until the store
answers again; on a real Redis behind a port that is first closed and then opened, with
an injected clock."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from asya_agents import status
from asya_agents.observe.metrics import MetricsObserver
from asya_agents.resiliency.admission import ResilientAdmission, SharedBucket
from asya_agents.resiliency.build import shared_bucket
from asya_agents.resiliency.spec import RateLimitSpec
from asya_agents.resiliency.throttle import FRESH_FOR, OutageMarks
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import require_service

from .conftest import FakeClock

pytestmark = pytest.mark.timeout(30)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def forwarder(port: int, to: int = 6379) -> AsyncIterator[None]:
    """``127.0.0.1:port`` forwarding to the real Redis: the store coming back."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", to)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


async def until(check: Callable[[], bool]) -> None:
    """Let the admission's loop get somewhere (the clock is fake: nothing here waits
    for time to pass)."""
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError("condition not reached")


def gauges(admission: ResilientAdmission, transport: EmbeddedTransport) -> dict[str, float]:
    metrics = MetricsObserver(process=False)
    runtime = Runtime(RuntimeConfig(actor="judge", actors={"judge"}), transport=transport,
                      terminal=_noop)
    runtime.cfg.admission = admission
    metrics.watch(runtime)
    return {s.name: s.value for fam in metrics.registry.collect() for s in fam.samples
            if s.name.startswith("asya_rate_limit_store")}


async def _noop(envelope: Any) -> None:
    return None


async def test_an_unreachable_store_holds_then_reports_then_shares_then_recovers(
        tmp_path: Path, clock: FakeClock) -> None:
    require_service("Redis", port=6379)
    port = free_port()
    # Given an actor limited to 10/s across at most 2 replicas, on a Redis nobody answers
    spec = RateLimitSpec(perSecond=10, burst=4, store="redis", unavailableAfter=30.0,
                         redisUrl=f"redis://127.0.0.1:{port}/0")
    bucket = shared_bucket(spec, actor="judge", mesh="res", transport="rabbitmq",
                           state_dir=tmp_path, max_replicas=2, clock=clock)
    assert isinstance(bucket, SharedBucket)
    adm = ResilientAdmission(actor="judge", bucket=bucket, clock=clock)
    transport = EmbeddedTransport(tmp_path / "queues.db")
    stop = asyncio.Event()
    started = clock.now
    waiting = asyncio.ensure_future(adm.acquire(5, stop))
    # When it fails, the replica holds: it takes nothing and says nothing yet
    await until(lambda: bucket.failures >= 1)
    clock.advance(29.0)
    await until(lambda: bucket.failures >= 2)
    assert not waiting.done() and adm.rate_limit_store_up()
    assert status.rate_limit_state(tmp_path, "judge", now=clock.now) is None
    # Then, once it has failed for unavailableAfter, it reports the store unreachable
    # and takes its share: 10/s over 2 replicas, burst 4 over 2
    clock.advance(1.5)
    assert await asyncio.wait_for(waiting, 5.0) == 2
    assert not adm.rate_limit_store_up()
    shown = status.rate_limit_state(tmp_path, "judge", now=clock.now)
    assert shown is not None and shown.startswith("store unreachable since ")
    assert f"127.0.0.1:{port}" in shown
    outage = OutageMarks(tmp_path).read("judge", now=clock.now)
    assert outage is not None and outage.since == started
    seen = gauges(adm, transport)
    assert seen["asya_rate_limit_store_up"] == 0
    assert seen["asya_rate_limit_store_failures_total"] == bucket.failures >= 3
    clock.advance(0.2)  # its share refills at 5/s: one token
    assert await asyncio.wait_for(adm.acquire(5, stop), 5.0) == 1
    # When the store answers again, the next try (every few seconds) ends the outage
    async with forwarder(port):
        clock.advance(5.0)
        assert await asyncio.wait_for(adm.acquire(3, stop), 5.0) == 3  # Redis's burst
        assert adm.rate_limit_store_up() and gauges(adm, transport)[
            "asya_rate_limit_store_up"] == 1
        assert status.rate_limit_state(tmp_path, "judge", now=clock.now) is None
        await bucket.bucket._client.delete(bucket.bucket.key)  # type: ignore[attr-defined]
        await adm.close()
    await transport.close()
    stop.set()


def test_a_dead_replicas_outage_mark_goes_stale(tmp_path: Path) -> None:
    # A replica SIGKILLed during an outage never clears its mark: it stops counting
    OutageMarks(tmp_path, replica="gone").mark("judge", since=100.0, error="boom", now=100.0)
    assert OutageMarks(tmp_path).read("judge", now=100.0 + FRESH_FOR - 1) is not None
    assert OutageMarks(tmp_path).read("judge", now=100.0 + FRESH_FOR) is None

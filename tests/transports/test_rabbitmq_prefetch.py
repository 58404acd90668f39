"""RabbitMQ only: the consumer's prefetch follows what the replica may hold.

The broker pushes up to the prefetch ahead of ``receive``, so a prefetch frozen at the
first receive caps a replica for its whole life: an actor with adaptive concurrency
starts at 2 in flight and would never hold more, however far its limit grew. The
runtime passes ``capacity`` (the admission's live limit, times the batch size for a
batch actor) with each receive, and the consumer re-issues ``basic.qos`` when it
changes. Both frame paths (the transport's FrameReader and plain aiormq) are run; what
a replica holds is read from the transport's own unacked count (``stats``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asya_agents.envelope import ERROR_END, Envelope
from asya_agents.handlers import Handler
from asya_agents.resiliency.adaptive import AdaptiveLimit
from asya_agents.resiliency.admission import ResilientAdmission
from asya_agents.resiliency.spec import AdaptiveConcurrencySpec
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.transports.base import Outgoing
from tests.transports.conftest import rabbit_work_queue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[True, False], ids=["frame-reader", "aiormq"])
async def rabbit(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """A RabbitMQ transport with the queues ``work`` and ``other``."""
    async with rabbit_work_queue("pf", frame_reader=request.param) as t:
        await t.ensure_queues(["other"])
        try:
            yield t
        finally:
            await t.delete_queues(["other"])


async def held_becomes(t: Any, expected: int, *, patience: float = 10.0) -> int:
    """What the transport holds of ``work`` unacked (taken or prefetched), once it is
    ``expected`` or ``patience`` ran out."""
    deadline = time.monotonic() + patience
    while True:
        held = (await t.stats("work")).in_flight
        if held == expected or time.monotonic() > deadline:
            return int(held)
        await asyncio.sleep(0.05)


async def serve(runtime: Runtime, t: Any, gate: asyncio.Event, *, expected: int,
                total: int) -> tuple[int, int]:
    """Run ``runtime`` until it holds ``expected`` (or gives up waiting), then open the
    gate and let everything through; what it held then, and how many went on."""
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        held = await held_becomes(t, expected)
        gate.set()
        moved_on = 0
        deadline = time.monotonic() + 20
        while moved_on < total and time.monotonic() < deadline:
            for d in await t.receive("other", max_messages=50, wait=0.5, visibility=30):
                moved_on += 1
                await t.ack(d)
    finally:
        gate.set()
        stop.set()
        await task
    return held, moved_on


async def test_an_actor_whose_limit_grows_from_2_to_16_holds_16(rabbit: Any) -> None:
    # Given an actor of concurrency 16 with adaptive concurrency (slow start at 2, +1
    # per success), 14 messages it handles at once and 40 behind them it waits on
    gate = asyncio.Event()

    async def handle(payload: dict[str, Any]) -> dict[str, Any]:
        if payload["n"] >= 14:
            await gate.wait()
        return payload

    await rabbit.send([Outgoing("work", Envelope.create({"n": n}, ["work", "other"]).encode())
                       for n in range(54)])
    adaptive = AdaptiveLimit(AdaptiveConcurrencySpec(), ceiling=16)
    cfg = RuntimeConfig(actor="work", actors={"work", "other", ERROR_END}, concurrency=16,
                        receive_wait=0.2,
                        admission=ResilientAdmission(actor="work", adaptive=adaptive))
    runtime = Runtime(cfg, transport=rabbit, handler=Handler("handle", handle))
    # When it has handled the first 14 (its limit grew to 16)
    held, moved_on = await serve(runtime, rabbit, gate, expected=16, total=54)
    # Then it held 16 unacked while 40 waited: its prefetch followed the limit
    assert adaptive.current == 16
    assert held == 16
    assert moved_on == 54


async def test_a_batch_actor_holds_a_batch_for_each_it_may_run(rabbit: Any) -> None:
    # Given a batch actor (maxSize 8) that may run two batches at once, whose handler
    # waits, and 40 messages
    gate = asyncio.Event()

    async def handle(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        await gate.wait()
        return payloads

    await rabbit.send([Outgoing("work", Envelope.create({"n": n}, ["work", "other"]).encode())
                       for n in range(40)])
    cfg = RuntimeConfig(actor="work", actors={"work", "other", ERROR_END}, concurrency=2,
                        batch_size=8, batch_wait=0.2, receive_wait=0.2)
    runtime = Runtime(cfg, transport=rabbit, handler=Handler("handle", handle))
    # When it has taken what it may
    held, moved_on = await serve(runtime, rabbit, gate, expected=16, total=40)
    # Then it held two full batches (not one: a prefetch of one batch starves the second)
    assert held == 16
    assert moved_on == 40


@pytest.mark.parametrize(("capacity", "state", "expected"), [
    (16, {"target": 2, "prefetch": 2, "orphans": 0}, 16),  # grew: at once
    (9, {"target": 16, "prefetch": 16, "orphans": 0}, None),  # a small cut: left be
    (8, {"target": 16, "prefetch": 16, "orphans": 0}, 8),  # halved: followed
    (16, {"target": 16, "prefetch": 10, "orphans": 6}, None),  # orphans fill the rest
    (16, {"target": 16, "prefetch": 10, "orphans": 3}, None),  # 3 short: under a quarter
    (16, {"target": 16, "prefetch": 10, "orphans": 2}, 16),  # 4 short: started again
    (16, {"target": 16, "prefetch": 15, "orphans": 0}, 16),  # the last one settled
    (16, {"target": 16, "prefetch": 16, "orphans": 0}, None),  # steady: nothing sent
])
def test_when_a_consumer_is_started_again(capacity: int, state: dict[str, int],
                                          expected: int | None) -> None:
    from asya_agents.transports.rabbitmq.prefetch import resize_to

    assert resize_to(capacity, running=True, **state) == expected
    assert resize_to(capacity, running=False, **state) == (expected or state["target"])

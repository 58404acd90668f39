"""The conformance suite, continued: delivery counts and what the mesh does with them.

Every test runs on embedded, rabbitmq (both frame paths) and sqs, like the rest of the
suite (the ``harness`` fixture). A replica that dies mid-hop is simulated by a consumer
that leases a message and goes away without settling it: its connection closes
(RabbitMQ requeues at once) and its lease runs out (SQS in real time, embedded when the
test moves its clock). Each such delivery raises the count, and past the actor's
``maxDeliveries`` the runtime ends the message at error-end instead of handing it to
the handler again. What a broker's own limit still moves to a dead-letter queue is swept
into error-end by error-end's replica (:class:`~asya_agents.crew.DeadLetterSweep`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asya_agents.crew import DeadLetterSweep
from asya_agents.envelope import ERROR_END, Envelope
from asya_agents.handlers import Handler
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.transports.base import Outgoing
from tests.transports.conftest import Harness
from tests.transports.test_transport_conformance import take

pytestmark = pytest.mark.timeout(90)


async def die_holding(harness: Harness, queue: str) -> int:
    """A consumer leases one message of ``queue`` and dies without settling it (its
    connection goes away, its 1 s lease runs out); the delivery count it saw."""
    doomed = await harness.transport()
    [d] = await take(doomed, queue, 1, patience=harness.patience, visibility=1.0)
    await doomed.close()
    harness.opened.remove(doomed)
    await harness.pass_time(1.5)
    return d.delivery_count


async def test_a_message_whose_consumers_keep_dying_comes_back_counted(
    harness: Harness,
) -> None:
    # Given a message on a queue
    sender = await harness.transport()
    await sender.send([Outgoing("work", b"kills-its-replica")])
    # When three consumers in turn lease it and die holding it
    counts = [await die_holding(harness, "work") for _ in range(3)]
    # Then each got it once more than the one before, and the next one sees all of them
    survivor = await harness.transport()
    [again] = await take(survivor, "work", 1, patience=harness.patience)
    assert counts == [1, 2, 3]
    assert again.body == b"kills-its-replica" and again.delivery_count == 4


async def test_past_max_deliveries_a_message_ends_at_error_end_and_the_queue_moves_on(
    harness: Harness,
) -> None:
    # Given an envelope that killed the replicas of two deliveries, and one behind it
    t = await harness.transport()
    killer = Envelope.create({"n": "killer"}, ["work", "other"])
    behind = Envelope.create({"n": "behind"}, ["work", "other"])
    await t.send([Outgoing("work", killer.encode())])
    assert [await die_holding(harness, "work") for _ in range(2)] == [1, 2]
    await t.send([Outgoing("work", behind.encode())])
    # When a runtime of an actor with maxDeliveries 2 serves the queue
    called: list[Any] = []
    cfg = RuntimeConfig(actor="work", actors={"work", "other", ERROR_END}, receive_wait=0.2,
                        max_deliveries=2)
    runtime = Runtime(cfg, transport=t, handler=Handler("note", lambda p: called.append(p)))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        [dead] = await take(t, ERROR_END, 1, patience=10)
        [moved_on] = await take(t, "other", 1, patience=10)
    finally:
        stop.set()
        await task
    # Then the killer went to error-end, unhandled, with the reason and the count, and
    # kept where it was (a replay sends it back); the envelope behind it was handled
    assert called == [{"n": "behind"}]
    assert Envelope.decode(moved_on.body).id == behind.id
    ended = Envelope.decode(dead.body)
    assert ended.id == killer.id and ended.route.curr == "work"
    assert ended.meta.error is not None
    assert ended.meta.error.reason == "delivery-limit"
    assert ended.meta.error.type == "asya_agents.errors.DeliveryLimitExceeded"
    assert "delivered 3 times (maxDeliveries 2)" in ended.meta.error.message
    assert "no error was recorded before" in ended.meta.error.message
    assert await t.receive("work", max_messages=1, wait=0.3, visibility=30) == []


async def test_what_the_broker_dead_lettered_is_swept_into_error_end(harness: Harness) -> None:
    if harness.kind == "embedded":
        pytest.skip("embedded has no dead-letter queue: the runtime's limit is the only one")
    # Given a queue whose broker allows two deliveries, an envelope that exhausted them
    # (as replicas killed before reading it would), and a non-envelope put in its DLQ
    option = {"rabbitmq": "delivery_limit", "sqs": "max_receive_count"}[harness.kind]
    t = await harness.transport(**{option: 2})
    await t.ensure_queues(["fragile"])
    try:
        envelope = Envelope.create({"n": 1}, ["fragile"])
        await t.send([Outgoing("fragile", envelope.encode())])
        for _ in range(2 + (harness.kind == "rabbitmq")):
            [d] = await take(t, "fragile", 1, patience=harness.patience)
            await t.nack(d)
        # (SQS moves it on the receive after its last one)
        assert await t.receive("fragile", max_messages=1, wait=1.0, visibility=30) == []
        await t.send([Outgoing("fragile-dlq", b"{not an envelope")])
        # When error-end's sweep looks into the actor's dead-letter queue
        sweep = DeadLetterSweep(t, ["fragile"], mesh_actors=frozenset({"fragile", ERROR_END}),
                                max_bytes=t.max_message_bytes)
        moved = 0
        for _ in range(50):
            moved += await sweep.once()
            if moved >= 2:
                break
            await asyncio.sleep(0.1)
        ended = {e.id: e for e in (Envelope.decode(d.body)
                                   for d in await take(t, ERROR_END, 2, patience=10))}
        # Then both are at error-end: the envelope failed with reason delivery-limit,
        # naming the queue and the broker's limit, its route kept; the other as poison
        assert moved == 2
        failed = ended.pop(envelope.id)
        assert failed.meta.error is not None and failed.meta.error.reason == "delivery-limit"
        assert "fragile-dlq" in failed.meta.error.message
        assert "limit (2)" in failed.meta.error.message
        assert failed.meta.error.actor == "fragile" and failed.route.curr == "fragile"
        [poison] = ended.values()
        assert poison.meta.error is not None
        assert poison.meta.error.reason == "invalid-envelope"
        assert poison.payload["raw"] == "{not an envelope"
        assert await t.receive("fragile-dlq", max_messages=1, wait=0.3, visibility=30) == []
    finally:
        await t.delete_queues(["fragile"])

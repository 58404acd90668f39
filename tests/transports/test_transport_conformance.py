"""One conformance suite for every transport: embedded, rabbitmq and sqs alike.

Each test reads Given / When / Then and holds for all three backends; where a backend
differs by design (RabbitMQ ends a lease when the consumer's connection dies, not after
a visibility timeout), the test states the shared guarantee, not the mechanism.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from asya_agents.envelope import ERROR_END, Envelope
from asya_agents.errors import MessageTooLarge
from asya_agents.handlers import Handler
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.transports.base import Delivery, Outgoing
from tests.transports.conftest import Harness

pytestmark = pytest.mark.timeout(60)


async def total_becomes(t: Any, queue: str, expected: int, *, patience: float) -> int:
    """Poll ``stats`` until ready + in flight equals ``expected`` or ``patience`` ran out;
    the last total seen."""
    deadline = time.monotonic() + patience
    while True:
        total = (await t.stats(queue)).total
        if total == expected or time.monotonic() > deadline:
            return int(total)
        await asyncio.sleep(0.05)


async def take(t: Any, queue: str, n: int, *, patience: float = 5.0,
               visibility: float = 30.0) -> list[Delivery]:
    """Receive until ``n`` messages came or ``patience`` ran out (brokers hand out
    partial batches)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + patience
    while len(got) < n and time.monotonic() < deadline:
        got += await t.receive(queue, max_messages=min(n - len(got), 10),
                               wait=min(1.0, max(deadline - time.monotonic(), 0)),
                               visibility=visibility)
    return got


async def test_send_receive_ack_round_trip(harness: Harness) -> None:
    # Given three messages sent to one queue
    t = await harness.transport()
    await t.send([Outgoing("work", f"m{i}".encode()) for i in range(3)])
    # When a consumer receives and acks them
    got = await take(t, "work", 3)
    for d in got:
        await t.ack(d)
    # Then each came once, as sent, first delivery, and the queue is empty afterwards
    assert sorted(d.body for d in got) == [b"m0", b"m1", b"m2"]
    assert {d.delivery_count for d in got} == {1}
    assert await t.receive("work", max_messages=10, wait=0.3, visibility=30) == []
    stats = await t.stats("work")
    assert (stats.depth, stats.in_flight) == (0, 0)


async def test_publish_and_ack_moves_a_message_to_the_next_queue(harness: Harness) -> None:
    # Given a leased message
    t = await harness.transport()
    await t.send([Outgoing("work", b"hop")])
    [d] = await take(t, "work", 1)
    # When it is published onwards and acked in one call
    await t.publish_and_ack([Outgoing("other", b"hop-2")], d)
    # Then the next queue has it and the first one is empty
    [nxt] = await take(t, "other", 1)
    assert nxt.body == b"hop-2"
    assert await t.receive("work", max_messages=1, wait=0.3, visibility=30) == []


async def test_nack_with_delay_redelivers_only_after_the_delay(harness: Harness) -> None:
    # Given a leased message
    t = await harness.transport()
    await t.send([Outgoing("work", b"retry-me")])
    [d] = await take(t, "work", 1)
    # When it is nacked with a 2 s delay
    nacked = time.monotonic()
    await t.nack(d, delay=2.0)
    # Then no consumer gets it before the delay...
    assert await t.receive("work", max_messages=1, wait=0.5, visibility=30) == []
    # ...and it comes back afterwards, counted as a second delivery
    await harness.pass_time(2.1)
    [again] = await take(t, "work", 1, patience=harness.patience)
    assert again.body == b"retry-me"
    assert again.delivery_count == 2
    if harness.clock is None:
        assert time.monotonic() - nacked >= 1.5


async def test_delayed_send_is_invisible_until_due(harness: Harness) -> None:
    # Given a message sent with a 2 s delay (how the runtime publishes a retry)
    t = await harness.transport()
    await t.send([Outgoing("work", b"later", delay=2.0), Outgoing("work", b"now")])
    # When a consumer polls at once
    first = await take(t, "work", 2, patience=0.8)
    # Then only the undelayed one is there, and the delayed one arrives after its delay
    assert [d.body for d in first] == [b"now"]
    await harness.pass_time(2.1)
    [later] = await take(t, "work", 1, patience=harness.patience)
    assert later.body == b"later"


async def test_a_crashed_consumers_message_comes_back(harness: Harness) -> None:
    # Given a consumer that leased a message with a 1 s visibility timeout
    crashed = await harness.transport()
    await crashed.send([Outgoing("work", b"survivor")])
    [d] = await take(crashed, "work", 1, visibility=1.0)
    # When it dies without acking (its connection goes away)
    await crashed.close()
    harness.opened.remove(crashed)
    # Then after the lease ends another consumer gets the message, as a redelivery
    await harness.pass_time(1.5)
    other = await harness.transport()
    [again] = await take(other, "work", 1, patience=harness.patience)
    assert again.body == d.body == b"survivor"
    assert again.delivery_count == 2


async def test_at_least_once_nothing_is_lost_when_consumers_crash(harness: Harness) -> None:
    # Given 60 messages, and a consumer that acks only every other message it takes
    # (10 at a time: RabbitMQ's prefetch caps what one consumer holds unacked)
    t = await harness.transport()
    sent = {f"msg-{i}".encode() for i in range(60)}
    await t.send([Outgoing("work", b) for b in sorted(sent)])
    flaky = await harness.transport()
    half = await take(flaky, "work", 10, visibility=1.0)
    assert len(half) == 10
    acked = set()
    for i, d in enumerate(half):
        if i % 2 == 0:
            await flaky.ack(d)
            acked.add(d.body)
    # When it crashes holding the rest
    await flaky.close()
    harness.opened.remove(flaky)
    await harness.pass_time(1.5)
    # Then a second consumer (acking as it goes) gets every message that was not acked
    rest: list[bytes] = []
    deadline = time.monotonic() + 15
    while len(rest) < len(sent) - len(acked) and time.monotonic() < deadline:
        for d in await t.receive("work", max_messages=10, wait=0.5, visibility=30):
            rest.append(d.body)
            await t.ack(d)
    assert acked | set(rest) == sent
    assert len(rest) == len(set(rest)) == len(sent - acked)


async def test_depth_and_in_flight_counts(harness: Harness) -> None:
    # Given five messages
    t = await harness.transport()
    await t.send([Outgoing("work", b"x") for _ in range(5)])
    assert (await t.stats("work")).depth == 5
    # When two are leased
    got = await take(t, "work", 2)
    assert len(got) == 2
    # Then three are ready and two in flight (what the autoscaler adds up)
    stats = await t.stats("work")
    assert (stats.depth, stats.in_flight, stats.total) == (3, 2, 5)
    for d in got:
        await t.ack(d)
    # After the acks a broker may push more to the consumer's prefetch window: while
    # those are on the wire neither the broker's ready count nor the consumer counts
    # them, so the total settles within a moment rather than at once.
    assert await total_becomes(t, "work", 3, patience=harness.patience) == 3


async def test_concurrent_consumers_share_the_work(harness: Harness) -> None:
    # Given 90 messages and three consumers
    t = await harness.transport()
    sent = [f"job-{i}".encode() for i in range(90)]
    await t.send([Outgoing("work", b) for b in sent])
    consumers = [await harness.transport() for _ in range(3)]

    async def work(c: Any) -> list[bytes]:
        seen: list[bytes] = []
        idle = 0
        while idle < 2:
            got = await c.receive("work", max_messages=5, wait=0.5, visibility=30)
            idle = 0 if got else idle + 1
            for d in got:
                seen.append(d.body)
                await c.ack(d)
        return seen

    # When they all consume at once
    results = await asyncio.gather(*(work(c) for c in consumers))
    # Then every message was handled, and once across them where leases are exclusive
    handled = [b for seen in results for b in seen]
    if harness.exclusive_leases:
        assert sorted(handled) == sorted(sent)
    else:  # SQS: at-least-once, a rare second copy and nothing lost
        assert set(handled) == set(sent)
        assert len(handled) - len(sent) <= len(sent) // 30


@pytest.mark.parametrize("body", [
    "héllo wörld, 日本語, emoji 🌍🚀, RTL שלום".encode(),
    b"\x00\xff\xfe not utf-8 \x80",
])
async def test_unicode_and_binary_bodies_arrive_byte_for_byte(harness: Harness,
                                                              body: bytes) -> None:
    t = await harness.transport()
    await t.send([Outgoing("work", body)])
    [d] = await take(t, "work", 1)
    assert d.body == body


async def test_a_message_at_the_limit_passes_and_one_byte_more_is_refused(
    harness: Harness,
) -> None:
    # Given a transport's size limit
    t = await harness.transport()
    limit = t.max_message_bytes
    at_limit = ("ü" * (limit // 2)).encode()[:limit]
    # When a message of exactly the limit is sent, it arrives intact
    await t.send([Outgoing("work", at_limit)])
    [d] = await take(t, "work", 1)
    assert d.body == at_limit
    await t.ack(d)
    # Then one byte more raises MessageTooLarge naming the queue and the limit,
    # and nothing of that batch was enqueued
    with pytest.raises(MessageTooLarge, match=rf"'work'.*{limit}"):
        await t.send([Outgoing("work", b"ok"), Outgoing("work", b"x" * (limit + 1))])
    assert await t.receive("work", max_messages=2, wait=0.3, visibility=30) == []


async def test_a_poison_message_goes_to_error_end_and_is_not_retried(
    harness: Harness,
) -> None:
    # Given a message that is not an envelope, and a runtime serving its queue
    t = await harness.transport()
    await t.send([Outgoing("work", b"{not json")])
    cfg = RuntimeConfig(actor="work", actors={"work", "other", ERROR_END}, receive_wait=0.2)
    runtime = Runtime(cfg, transport=t, handler=Handler("echo", lambda p: p))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    # When the runtime has seen it
    try:
        [dead] = await take(t, ERROR_END, 1, patience=10)
    finally:
        stop.set()
        await task
    # Then error-end holds it with the reason, and the work queue is empty
    envelope = Envelope.decode(dead.body)
    assert envelope.payload["raw"] == "{not json"
    assert envelope.meta.error is not None
    assert envelope.meta.error.reason == "invalid-envelope"
    assert await t.receive("work", max_messages=1, wait=0.3, visibility=30) == []


async def test_a_message_whose_onward_publish_fails_is_given_back_not_held(
    harness: Harness,
) -> None:
    if harness.kind == "embedded":
        pytest.skip("embedded takes a message for any queue name: no publish to refuse")
    # Given a runtime whose next hop has no queue yet, so the broker refuses its publish
    t = await harness.transport()
    admin = await harness.transport()
    envelope = Envelope.create({"n": 1}, ["work", "later"])
    await t.send([Outgoing("work", envelope.encode())])
    cfg = RuntimeConfig(actor="work", actors={"work", "later", ERROR_END}, receive_wait=0.2)
    assert cfg.lease >= 30
    runtime = Runtime(cfg, transport=t, handler=Handler("echo", lambda p: p))
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    try:
        # When the queue appears after the first refusals
        await asyncio.sleep(1.5)
        await admin.ensure_queues(["later"])
        # Then the input was given back (not held until its 30 s lease ran out, nor on
        # RabbitMQ for as long as its channel lives) and came through once it could
        got = await take(admin, "later", 1, patience=10)
    finally:
        stop.set()
        await task
        await admin.delete_queues(["later"])
    assert [Envelope.decode(d.body).id for d in got] == [envelope.id]
    assert await t.receive("work", max_messages=1, wait=0.3, visibility=30) == []


async def test_a_message_that_keeps_coming_back_is_dead_lettered(harness: Harness) -> None:
    if harness.kind == "embedded":
        pytest.skip("embedded has no dead-letter queue: the runtime sends poison to error-end")
    # Given a queue that allows two deliveries
    option = {"rabbitmq": "delivery_limit", "sqs": "max_receive_count"}[harness.kind]
    t = await harness.transport(**{option: 2})
    await t.ensure_queues(["fragile"])
    try:
        await t.send([Outgoing("fragile", b"crashes-everyone")])
        # When every consumer gives it back (as a replica killed mid-message would)
        deliveries = 0
        for _ in range(5):
            got = await t.receive("fragile", max_messages=1, wait=1.0, visibility=30)
            if not got:
                break
            deliveries += 1
            await t.nack(got[0])
        # Then after the limit it is no longer delivered, and it waits in the -dlq queue
        assert deliveries == 2 + (harness.kind == "rabbitmq")
        [dead] = await take(t, "fragile-dlq", 1, patience=harness.patience)
        assert dead.body == b"crashes-everyone"
    finally:
        await t.delete_queues(["fragile"])


async def test_a_delay_longer_than_one_broker_step_is_served_in_steps(harness: Harness) -> None:
    # Given a delay the broker cannot give in one go: RabbitMQ's ladder has no 2.6 s
    # class (2 s + 500 ms + 100 ms), and this SQS transport allows 1 s per step
    t = await harness.transport(**({"max_delay": 1} if harness.kind == "sqs" else {}))
    sent = time.monotonic()
    await t.send([Outgoing("work", b"stepped", delay=2.6)])
    # When a consumer polls through the first steps, it sees nothing early
    await harness.pass_time(1.5)
    assert await take(t, "work", 1, patience=1.0) == []
    # Then the message arrives once, after the whole delay, counted as a first delivery
    await harness.pass_time(1.2)
    [d] = await take(t, "work", 1, patience=harness.patience)
    assert d.body == b"stepped"
    assert d.delivery_count == 1
    if harness.clock is None:
        assert time.monotonic() - sent >= 2.4
    assert await t.receive("work", max_messages=1, wait=0.3, visibility=30) == []


async def test_extending_a_lease_keeps_a_slow_handlers_message(harness: Harness) -> None:
    # Given a message leased for 1 s by a consumer whose handler runs long
    t = await harness.transport()
    await t.send([Outgoing("work", b"slow")])
    [d] = await take(t, "work", 1, visibility=1.0)
    # When its heartbeat extends the lease to 6 s before the first one ends
    await t.extend(d, visibility=6.0)
    await harness.pass_time(2.0)
    # Then another consumer does not get it meanwhile, and the holder can still ack it
    other = await harness.transport()
    assert await other.receive("work", max_messages=1, wait=2.0, visibility=30) == []
    await t.ack(d)
    await harness.pass_time(6.0)
    assert await other.receive("work", max_messages=1, wait=0.5, visibility=30) == []

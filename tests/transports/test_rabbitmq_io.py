"""RabbitMQ only: the transport's socket writer and ack coalescing.

The writer is tested against a real TCP server on 127.0.0.1 (no broker needed): frames
written in one turn of the event loop leave in one ``send``, in order, and nothing
gathered is lost at ``drain`` or ``close``. The acks are tested on the broker: many
messages acked together (within the ack linger) go out as one ``basic.ack`` with
``multiple``, but a tag above one still held is never covered by it.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from asya_agents.transports.base import Outgoing
from tests.transports.conftest import RABBIT_URL, RUN_PREFIX, rabbit_work_queue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server() -> AsyncIterator[tuple[int, asyncio.Queue[bytes]]]:
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(65536):
            received.put_nowait(chunk)
        writer.close()

    srv = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield port, received
    finally:
        srv.close()
        await srv.wait_closed()


async def _writer(port: int) -> tuple[Any, list[bytes]]:
    from yarl import URL

    from asya_agents.transports.rabbitmq.internals import _CoalescingTCP

    _, writer = await _CoalescingTCP().create(URL(f"amqp://127.0.0.1:{port}/"))
    sent: list[bytes] = []
    real_write = writer.transport.write

    def spy(data: bytes) -> None:
        sent.append(bytes(data))
        real_write(data)

    writer.transport.write = spy  # type: ignore[method-assign]
    return writer, sent


async def _read(received: asyncio.Queue[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += await asyncio.wait_for(received.get(), 5)
    return data


async def test_writes_in_one_loop_turn_leave_in_one_send_in_order(
        server: tuple[int, asyncio.Queue[bytes]]) -> None:
    port, received = server
    writer, sent = await _writer(port)
    # When three frames are written in one turn of the loop
    for frame in (b"one|", b"two|", b"three|"):
        writer.write(frame)
    assert sent == []  # gathered, not sent yet
    await asyncio.sleep(0)  # the next turn
    await asyncio.sleep(0)
    # Then they left in one send, in order, and the peer got exactly that
    assert sent == [b"one|two|three|"]
    assert await _read(received, 14) == b"one|two|three|"
    writer.close()
    await writer.wait_closed()


async def test_drain_and_close_send_what_was_gathered(
        server: tuple[int, asyncio.Queue[bytes]]) -> None:
    port, received = server
    writer, sent = await _writer(port)
    writer.write(b"before-drain|")
    await writer.drain()  # aiormq drains after an RPC frame: it must be on the wire
    assert sent == [b"before-drain|"]
    writer.write(b"last")
    writer.close()  # e.g. Connection.Close right before the socket closes
    await writer.wait_closed()
    assert sent == [b"before-drain|", b"last"]
    assert await _read(received, 17) == b"before-drain|last"


@pytest.fixture(params=["frames", "aiormq"])
async def rabbit(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The transport with its hot path in its FrameReader (``amqp://``), and with every
    frame left to aiormq (as on ``amqps://``)."""
    async with rabbit_work_queue("io", frame_reader=request.param == "frames") as t:
        yield t


def _acks_in(data: bytes) -> list[tuple[int, bool]]:
    """The ``basic.ack`` frames in ``data`` (whole frames), as (tag, multiple)."""
    acks, pos = [], 0
    while pos < len(data):
        kind, _, size = struct.unpack_from(">BHI", data, pos)
        if kind == 1 and struct.unpack_from(">HH", data, pos + 7) == (60, 80):
            tag, bits = struct.unpack_from(">QB", data, pos + 11)
            acks.append((tag, bool(bits & 1)))
        pos += 8 + size
    return acks


@contextlib.contextmanager
def ack_spy(transport: Any, queue: str) -> Iterator[list[tuple[int, bool]]]:
    """The acks ``transport`` sends for ``queue``, as they leave for the broker."""
    acks: list[tuple[int, bool]] = []
    frames = transport._consumers[queue].frames
    if frames is not None:
        real_write = frames.writer.write

        def spy_write(data: bytes) -> None:
            acks.extend(_acks_in(bytes(data)))
            real_write(data)

        frames.writer.write = spy_write
        try:
            yield acks
        finally:
            frames.writer.write = real_write
        return
    from aiormq.channel import Channel

    real_ack = Channel.basic_ack

    async def spy(self: Channel, delivery_tag: int, multiple: bool = False,
                  wait: bool = True) -> None:
        acks.append((delivery_tag, multiple))
        await real_ack(self, delivery_tag, multiple=multiple, wait=wait)

    Channel.basic_ack = spy  # type: ignore[method-assign]
    try:
        yield acks
    finally:
        Channel.basic_ack = real_ack  # type: ignore[method-assign]


async def test_acks_together_are_one_multiple_ack_that_spares_held_tags(
        rabbit: Any) -> None:
    await rabbit.send([Outgoing("work", f"m{i}".encode()) for i in range(10)])
    got: list[Any] = []
    while len(got) < 10:
        got += await rabbit.receive("work", max_messages=10, wait=5, visibility=30)
    with ack_spy(rabbit, "work") as acks:
        tags = [d.token.delivery_tag for d in got]
        # When all but the 4th are acked together, while the 4th is still held
        held = got[3]
        await asyncio.gather(*(rabbit.ack(d) for d in got if d is not held))
        for _ in range(200):  # the linger timer sends them
            if len(acks) >= 7:
                break
            await asyncio.sleep(0.01)
    # Then the three below it went as one multiple ack, the rest one by one
    assert acks[0] == (tags[2], True)
    assert sorted(acks[1:]) == [(t, False) for t in tags[4:]]
    # and the held one is still unacked: given back, it comes again
    await rabbit.nack(held)
    [again] = await rabbit.receive("work", max_messages=1, wait=5, visibility=30)
    assert again.body == b"m3"
    await rabbit.ack(again)
    assert (await rabbit.stats("work")).total == 0


async def test_close_sends_the_acks_still_waiting(rabbit: Any) -> None:
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    await rabbit.send([Outgoing("work", b"once")])
    consumer = RabbitMQTransport(RABBIT_URL, mesh=rabbit.mesh, prefix=RUN_PREFIX,
                                 management_url=None)
    consumer.ACK_LINGER = 60.0  # the ack would wait a minute
    [got] = await consumer.receive("work", max_messages=1, wait=5, visibility=30)
    await consumer.ack(got)
    # When the consumer closes (a replica drained by SIGTERM) right after acking
    await consumer.close()
    # Then the ack went out before the connection closed: nothing comes back
    assert await rabbit.receive("work", max_messages=1, wait=1.0, visibility=30) == []


async def test_a_consumer_with_prefetch_one_acks_at_once(rabbit: Any) -> None:
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    await rabbit.send([Outgoing("work", b"first"), Outgoing("work", b"second")])
    consumer = RabbitMQTransport(RABBIT_URL, mesh=rabbit.mesh, prefix=RUN_PREFIX,
                                 management_url=None)
    consumer.ACK_LINGER = 60.0  # a lingering ack would hold the only prefetch slot
    try:
        # Given a consumer of concurrency 1 (a GPU actor, say)
        [one] = await consumer.receive("work", max_messages=1, wait=5, visibility=30)
        await consumer.ack(one)
        # Then its ack went at once: the broker delivers the next message now
        [two] = await consumer.receive("work", max_messages=1, wait=5, visibility=30)
        assert (one.body, two.body) == (b"first", b"second")
        await consumer.ack(two)
    finally:
        await consumer.close()
    assert (await rabbit.stats("work")).total == 0


async def test_a_message_no_queue_takes_is_refused_and_the_rest_still_arrive(
        rabbit: Any) -> None:
    from asya_agents.errors import TransportError

    # When a batch holds a message for a queue that does not exist beside good ones
    with pytest.raises(TransportError, match="refused"):
        await rabbit.send([Outgoing("work", b"a"), Outgoing("missing", b"lost?"),
                           Outgoing("work", b"b")])
    # Then that one is an error (never dropped in silence), the others arrived, and
    # the publishing channel's confirms still line up for what comes next
    await rabbit.send([Outgoing("work", b"c")])
    got: list[Any] = []
    while len(got) < 3:
        got += await rabbit.receive("work", max_messages=3, wait=5, visibility=30)
    assert sorted(d.body for d in got) == [b"a", b"b", b"c"]
    for d in got:
        await rabbit.ack(d)


async def test_the_hot_path_is_the_frame_reader_on_amqp(rabbit: Any) -> None:
    # The fixture's two transports really take the two paths this file compares
    await rabbit.send([Outgoing("work", b"x")])
    [d] = await rabbit.receive("work", max_messages=1, wait=5, visibility=30)
    await rabbit.ack(d)
    uses_frames = rabbit._frame_reader
    assert (rabbit._consumers["work"].frames is not None) is uses_frames
    assert (rabbit._confirms is not None) is uses_frames


async def test_a_publishing_channel_the_broker_closes_fails_its_publish_and_the_next_waits_for_it(
        rabbit: Any) -> None:
    import aio_pika

    from asya_agents.errors import TransportError
    from asya_agents.transports.rabbitmq import DELAY_CLASSES_MS

    # Given delay classes the transport has declared, then deleted behind its back
    await rabbit.send([Outgoing("work", b"early", delay=1.0)])
    conn = await aio_pika.connect(RABBIT_URL)
    async with conn:
        channel = await conn.channel()
        for class_ms in DELAY_CLASSES_MS:
            await channel.exchange_delete(rabbit._delay_name(class_ms))
    # When a publish goes to it (the broker closes the channel: 404 NOT_FOUND)
    with pytest.raises(TransportError):
        await asyncio.wait_for(rabbit.send([Outgoing("work", b"lost", delay=1.0)]), 10)
    # Then the publish failed rather than hang, and the next one, sent at once while
    # aio-pika is still reopening the channel, waits for it and goes out on the new one
    await asyncio.wait_for(rabbit.send([Outgoing("work", b"after")]), 10)
    # and the reopened channel declared the delay classes again: delays work too
    await rabbit.send([Outgoing("work", b"later", delay=0.2)])
    got: list[Any] = []
    while {b"after", b"later"} - {d.body for d in got}:
        got += await rabbit.receive("work", max_messages=5, wait=5, visibility=30)
    for d in got:
        await rabbit.ack(d)

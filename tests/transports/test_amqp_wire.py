"""The RabbitMQ transport's frame codec and reader, on bytes (no broker needed).

Frames are built and read back with ``pamqp`` (the codec aiormq uses), an independent
implementation: what :mod:`asya_agents.transports.rabbitmq.frames` writes must decode there,
and what the broker would send (encoded there) must decode here. The reader is fed
bytes the way a socket delivers them, split at arbitrary points, and what it passes on
to aiormq must be exactly the frames it did not take, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pamqp import commands, frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from asya_agents.transports.rabbitmq import reader as amqp_wire
from asya_agents.transports.rabbitmq.confirms import Confirms
from asya_agents.transports.rabbitmq.frames import (
    Incoming,
    ack_frames,
    nack_frame,
    publish_frames,
)
from asya_agents.transports.rabbitmq.reader import FrameReader


def frames_of(data: bytes) -> list[tuple[int, Any]]:
    """Every frame in ``data``, decoded by pamqp: (channel, frame)."""
    out = []
    while data:
        used, channel, decoded = frame.unmarshal(data)
        out.append((channel, decoded))
        data = data[used:]
    return out


def deliver(channel: int, tag: int, body: bytes, *, consumer: str = "ctag-1",
            headers: dict[str, Any] | None = None, redelivered: bool = False,
            frame_max: int = 131072) -> bytes:
    """What the broker sends for one delivery, encoded by pamqp."""
    props = commands.Basic.Properties(content_type="application/json", headers=headers,
                                      delivery_mode=2, message_id="m-1")
    out = frame.marshal(commands.Basic.Deliver(consumer, tag, redelivered, "",
                                               "asya-trio-first"), channel)
    out += frame.marshal(ContentHeader(0, len(body), props), channel)
    step = frame_max - 8
    for start in range(0, len(body), step):
        out += frame.marshal(ContentBody(body[start:start + step]), channel)
    return out


class Sink:
    def __init__(self) -> None:
        self.got: list[Incoming] = []

    def delivered(self, message: Incoming) -> None:
        self.got.append(message)


@pytest.fixture
async def reader() -> tuple[FrameReader, asyncio.StreamReader]:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader(loop=loop)
    return FrameReader(stream, loop), stream


def fed(stream: asyncio.StreamReader) -> bytes:
    """What the reader passed on to aiormq so far (its StreamReader's buffer)."""
    return bytes(stream._buffer)  # type: ignore[attr-defined]


def feed_in_pieces(reader: FrameReader, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in [*cuts, len(data)]:
        reader.data_received(data[last:cut])
        last = cut


def test_a_publish_decodes_as_pamqp_reads_it() -> None:
    body = b'{"payload": "\xc3\xbc"}' * 10
    data = publish_frames(3, "", "asya-trio-second", body, message_id="abc.7",
                          headers={"x-asya-due": 1234}, mandatory=True, max_body_frame=64)
    [(ch, method), (_, header), *bodies] = frames_of(data)
    assert ch == 3
    assert isinstance(method, commands.Basic.Publish)
    assert (method.exchange, method.routing_key, method.mandatory) == \
        ("", "asya-trio-second", True)
    assert header.body_size == len(body)
    assert header.properties.delivery_mode == 2
    assert header.properties.message_id == "abc.7"
    assert header.properties.headers == {"x-asya-due": 1234}
    assert all(len(b.value) <= 64 for _, b in bodies)
    assert b"".join(b.value for _, b in bodies) == body


def test_an_empty_body_has_no_body_frame() -> None:
    data = publish_frames(1, "ex", "key", b"", message_id="m", headers=None,
                          mandatory=False, max_body_frame=1000)
    [(_, method), (_, header)] = frames_of(data)
    assert method.mandatory is False and header.body_size == 0
    assert header.properties.headers is None


def test_acks_and_nacks_decode_as_pamqp_reads_them() -> None:
    decoded = [f for _, f in frames_of(ack_frames(2, [5, 7], [9, 11]))]
    assert [(type(f).__name__, f.delivery_tag, f.multiple) for f in decoded] == \
        [("Ack", 7, True), ("Ack", 9, False), ("Ack", 11, False)]
    [(_, one)] = frames_of(ack_frames(2, [4], []))  # one tag below: no multiple
    assert (one.delivery_tag, one.multiple) == (4, False)
    [(_, nack)] = frames_of(nack_frame(2, 5, requeue=True))
    assert isinstance(nack, commands.Basic.Nack)
    assert (nack.delivery_tag, nack.multiple, nack.requeue) == (5, False, True)


async def test_a_registered_consumers_delivery_is_taken_in_any_split(reader: Any) -> None:
    frames, stream = reader
    sink, channel = Sink(), object()
    frames.consume(1, "ctag-1", channel, sink)
    body = bytes(range(256)) * 1200  # over frame_max: three body frames
    data = deliver(1, 42, body, headers={"x-delivery-count": 2}, redelivered=True)
    # When the socket hands the bytes over in odd pieces
    feed_in_pieces(frames, data, [3, 7, 8, 100, 131000, 200000])
    # Then the consumer has the delivery, whole, and aiormq was given nothing
    [got] = sink.got
    assert (got.channel, got.delivery_tag, got.redelivered, got.routing_key) == \
        (channel, 42, True, "asya-trio-first")
    assert got.headers == {"x-delivery-count": 2}
    assert got.body == body
    assert fed(stream) == b""


async def test_other_frames_pass_on_unchanged_and_in_order(reader: Any) -> None:
    frames, stream = reader
    sink = Sink()
    frames.consume(1, "ctag-1", object(), sink)
    qos_ok = frame.marshal(commands.Basic.QosOk(), 1)
    other = deliver(1, 5, b"for another consumer", consumer="ctag-other")
    elsewhere = deliver(2, 6, b"on a channel not registered")
    beat = frame.marshal(Heartbeat(), 0)
    ours = deliver(1, 7, b"ours")
    data = qos_ok + ours + other + beat + elsewhere + deliver(1, 8, b"")
    feed_in_pieces(frames, data, [5, len(qos_ok) + 3])
    assert [m.delivery_tag for m in sink.got] == [7, 8]
    assert sink.got[1].body == b""
    assert fed(stream) == qos_ok + other + beat + elsewhere


async def test_a_refused_protocol_header_reaches_aiormq(reader: Any) -> None:
    frames, stream = reader
    frames.data_received(b"AMQP\x00\x00\x09")
    frames.data_received(b"\x01")
    assert fed(stream) == b"AMQP\x00\x00\x09\x01"


async def test_a_closed_channel_takes_no_writes_until_it_opens_again(reader: Any) -> None:
    frames, stream = reader
    written: list[bytes] = []

    class Writer:
        def write(self, data: bytes) -> None:
            written.append(data)

    frames.writer = Writer()  # type: ignore[assignment]
    loop = asyncio.get_running_loop()
    confirms = Confirms(1, "p", loop, refused=ValueError)
    frames.confirm(confirms)
    _, pending = confirms.expect()
    assert frames.write(1, b"ack")
    # When the broker closes channel 1 (a channel error)
    close = frame.marshal(commands.Channel.Close(406, "PRECONDITION_FAILED", 60, 80), 1)
    frames.data_received(close)
    # Then nothing more is written on it, its confirms fail, and aiormq sees the close
    assert not frames.write(1, b"late ack")
    assert written == [b"ack"]
    with pytest.raises(ConnectionError, match="closed the channel"):
        await pending
    assert fed(stream) == close
    # and once the channel is opened again, writes go through
    frames.data_received(frame.marshal(commands.Channel.OpenOk(), 1))
    assert frames.write(1, b"new")


async def test_confirms_settle_one_by_one_and_with_multiple(reader: Any) -> None:
    frames, stream = reader
    loop = asyncio.get_running_loop()
    confirms = Confirms(4, "pub", loop, refused=ValueError)
    frames.confirm(confirms)
    futures = [confirms.expect() for _ in range(5)]
    assert [mid for mid, _ in futures] == [f"pub.{n}" for n in range(1, 6)]
    # A return (no queue took message 4) comes before that message's ack
    returned = frame.marshal(commands.Basic.Return(312, "NO_ROUTE", "", "asya-x-missing"), 4)
    returned += frame.marshal(ContentHeader(0, 2, commands.Basic.Properties(
        delivery_mode=2, message_id="pub.4")), 4)
    returned += frame.marshal(ContentBody(b"hi"), 4)
    data = (frame.marshal(commands.Basic.Ack(2, multiple=False), 4)
            + frame.marshal(commands.Basic.Ack(3, multiple=True), 4)
            + returned
            + frame.marshal(commands.Basic.Ack(4, multiple=False), 4)
            + frame.marshal(commands.Basic.Nack(5, multiple=False), 4))
    feed_in_pieces(frames, data, [10, 30])
    results = await asyncio.gather(*(f for _, f in futures), return_exceptions=True)
    assert results[:3] == [None, None, None]
    assert isinstance(results[3], ValueError) and "NO_ROUTE" in str(results[3])
    assert isinstance(results[4], ValueError) and "nacked" in str(results[4])
    assert fed(stream) == b""


async def test_a_lost_connection_fails_what_waits_for_a_confirm(reader: Any) -> None:
    frames, _ = reader
    confirms = Confirms(1, "p", asyncio.get_running_loop())
    frames.confirm(confirms)
    _, pending = confirms.expect()
    frames.connection_lost(None)
    with pytest.raises(ConnectionError):
        await pending
    with pytest.raises(ConnectionError):
        confirms.expect()
    assert not frames.write(1, b"x")


async def test_aiormq_hears_a_heartbeat_while_every_frame_is_taken(reader: Any,
                                                                   monkeypatch: Any) -> None:
    frames, stream = reader
    sink = Sink()
    frames.consume(1, "ctag-1", object(), sink)
    frames.data_received(deliver(1, 1, b"a"))
    assert fed(stream) == b""  # taken, and aiormq was fed a moment ago
    # When a delivery is taken FEED_EVERY after aiormq last saw a frame
    monkeypatch.setattr(amqp_wire, "FEED_EVERY", 0.0)
    frames.data_received(deliver(1, 2, b"b"))
    # Then aiormq gets a heartbeat, so it does not count the connection as stuck
    [(channel, beat)] = frames_of(fed(stream))
    assert channel == 0 and isinstance(beat, Heartbeat)
    assert len(sink.got) == 2

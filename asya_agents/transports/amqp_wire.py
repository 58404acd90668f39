"""AMQP 0-9-1 frames on a RabbitMQ replica's hot path, read and written in one place.

aio-pika and aiormq own the connection: the handshake, channels, declarations, prefetch,
heartbeats and reconnects. What a replica does hundreds of times a second, though (take
a delivery, publish a message, read its confirm, ack), costs far more through aiormq's
per-frame machinery (a ``pamqp`` object per frame, two queues and a task per delivery,
a lock and a bounded write queue per publish) than the frames themselves. So the socket
of each connection is read by :class:`FrameReader` first:

- a ``basic.deliver`` (and its content) for a consumer registered here
  (:meth:`FrameReader.consume`), or a ``basic.ack`` / ``basic.nack`` /
  ``basic.return`` on a publishing channel registered here
  (:meth:`FrameReader.confirm`), is decoded with :mod:`struct` and handed to its sink
  at once;
- every other frame (RPC replies, channel and connection control, heartbeats, and any
  delivery for a consumer not registered here) is fed to aiormq's reader unchanged and
  in order.

Frames to send are built here too (:func:`publish_frames`, :func:`ack_frames`,
:func:`nack_frame`) and written straight to the connection's writer, which gathers what
one turn of the event loop wrote into one ``send``. A channel the broker closed (or
whose close it confirmed) takes no more writes from here (:meth:`FrameReader.writable`),
so a late ack can never reach a channel number that is no longer open, which the
broker would answer by closing the whole connection.

Standard library and ``pamqp`` (which aiormq brings) only; field tables, rare on this
path, are left to ``pamqp``.
"""

from __future__ import annotations

import asyncio
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pamqp import decode as amqp_decode
from pamqp import encode as amqp_encode

__all__ = ["Confirms", "FrameReader", "ack_frames", "nack_frame", "publish_frames"]

_END = b"\xce"
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_FRAME = struct.Struct(">BHI")
_METHOD = struct.Struct(">HH")
_QWORD = struct.Struct(">Q")
_ACK = struct.Struct(">BHIHHQB")
_HEADER = struct.Struct(">HHQH")
_PUBLISH_HEAD = struct.Struct(">BHIHHH")  # frame header, class, method, reserved ticket
_BODY_HEAD = struct.Struct(">BHI")

# class and method ids (AMQP 0-9-1)
_CONNECTION, _CHANNEL, _BASIC = 10, 20, 60
_CONNECTION_CLOSE, _CHANNEL_OPEN_OK, _CHANNEL_CLOSE, _CHANNEL_CLOSE_OK = 50, 11, 40, 41
_DELIVER, _RETURN, _ACK_M, _NACK_M, _PUBLISH = 60, 50, 80, 120, 40

# basic property flags (the order of the properties on the wire)
_P_CONTENT_TYPE, _P_CONTENT_ENCODING, _P_HEADERS = 0x8000, 0x4000, 0x2000
_P_DELIVERY_MODE, _P_PRIORITY, _P_CORRELATION_ID = 0x1000, 0x0800, 0x0400
_P_REPLY_TO, _P_EXPIRATION, _P_MESSAGE_ID = 0x0200, 0x0100, 0x0080

#: How often aiormq is shown a heartbeat while every frame read is taken here: it
#: counts a connection whose reader saw nothing for a few heartbeats as stuck.
FEED_EVERY = 1.0


def _shortstr(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError(f"an AMQP short string is at most 255 bytes, got {len(value)}")
    return bytes((len(value),)) + value


def publish_frames(channel: int, exchange: str, routing_key: str, body: bytes, *,
                   message_id: str, headers: dict[str, Any] | None, mandatory: bool,
                   max_body_frame: int) -> bytes:
    """The frames of one persistent ``basic.publish``: the method, the content header
    (delivery mode 2, ``message_id``, ``headers`` when given) and the body, in frames
    of at most ``max_body_frame`` bytes (the connection's ``frame_max`` less 8)."""
    method_args = (_shortstr(exchange.encode()) + _shortstr(routing_key.encode())
                   + (b"\x01" if mandatory else b"\x00"))
    parts = [_PUBLISH_HEAD.pack(1, channel, 6 + len(method_args), _BASIC, _PUBLISH, 0),
             method_args, _END]
    flags = _P_DELIVERY_MODE | _P_MESSAGE_ID
    props = b"\x02" + _shortstr(message_id.encode())
    if headers:
        flags |= _P_HEADERS
        props = amqp_encode.field_table(headers) + props
    header = _HEADER.pack(_BASIC, 0, len(body), flags) + props
    parts += [_FRAME.pack(2, channel, len(header)), header, _END]
    for start in range(0, len(body), max_body_frame):
        chunk = body[start:start + max_body_frame]
        parts += [_BODY_HEAD.pack(3, channel, len(chunk)), chunk, _END]
    return b"".join(parts)


def ack_frames(channel: int, below: list[int], above: list[int]) -> bytes:
    """``basic.ack`` frames: one for all of ``below`` (with ``multiple`` up to its
    highest tag when it holds more than one), then one for each tag of ``above``."""
    frames = [_ACK.pack(1, channel, 13, _BASIC, _ACK_M, max(below), len(below) > 1) + _END
              ] if below else []
    frames += [_ACK.pack(1, channel, 13, _BASIC, _ACK_M, tag, 0) + _END for tag in above]
    return b"".join(frames)


def nack_frame(channel: int, tag: int, *, requeue: bool) -> bytes:
    return _ACK.pack(1, channel, 13, _BASIC, _NACK_M, tag, 2 if requeue else 0) + _END


@dataclass(slots=True)
class Incoming:
    """A delivery decoded here: what a consumer's token needs to settle it."""

    channel: Any  # the aiormq channel it came on
    delivery_tag: int
    redelivered: bool
    routing_key: str
    headers: dict[str, Any]
    body: bytes


class ConsumerSink(Protocol):
    """Where :class:`FrameReader` puts the deliveries of a registered consumer."""

    def delivered(self, message: Incoming) -> None: ...


@dataclass
class Confirms:
    """Publisher confirms of one channel in confirm mode, counted here.

    The broker numbers a channel's publishes 1, 2, 3 … in the order it reads them, so a
    publish takes the next number when its frames are written (:meth:`expect`) and its
    future is settled by the ``basic.ack`` (or ``nack``) with that number, or by one
    with ``multiple`` above it. A ``basic.return`` (a ``mandatory`` message no queue
    took) comes before its ack and turns that ack into an error. Every future still
    open fails when the channel or the connection is lost."""

    number: int
    prefix: str
    loop: asyncio.AbstractEventLoop
    published: int = 0
    pending: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    order: deque[int] = field(default_factory=deque)
    returned: dict[int, str] = field(default_factory=dict)
    #: Why the channel is gone, once it is: every later :meth:`expect` fails.
    lost_reason: str | None = None
    #: The error of a message the broker returned or nacked, and of a lost channel.
    refused: Callable[[str], BaseException] = RuntimeError
    lost: Callable[[str], BaseException] = ConnectionError

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """The message id of the next publish and the future its confirm settles."""
        if self.lost_reason is not None:
            raise self.lost(self.lost_reason)
        self.published += 1
        future: asyncio.Future[None] = self.loop.create_future()
        self.pending[self.published] = future
        self.order.append(self.published)
        return f"{self.prefix}.{self.published}", future

    def settle(self, tag: int, *, multiple: bool, ok: bool) -> None:
        if multiple:
            order = self.order
            while order and order[0] <= tag:
                self._settle_one(order.popleft(), ok)
        else:
            self._settle_one(tag, ok)

    def _settle_one(self, tag: int, ok: bool) -> None:
        future = self.pending.pop(tag, None)
        if future is None or future.done():
            return
        reason = self.returned.pop(tag, None)
        if reason is not None:
            future.set_exception(self.refused(reason))
        elif ok:
            future.set_result(None)
        else:
            future.set_exception(self.refused("the broker nacked the message"))

    def returned_message(self, message_id: str | None, reason: str) -> None:
        prefix, _, number = (message_id or "").rpartition(".")
        if prefix == self.prefix and number.isdigit():
            self.returned[int(number)] = reason

    def lose(self, why: str) -> None:
        self.lost_reason = why
        pending, self.pending = self.pending, {}
        self.order.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(self.lost(why))


@dataclass(slots=True)
class _Content:
    """A content-bearing method read on a channel, waiting for its header and body."""

    kind: int  # _DELIVER or _RETURN
    tag: int = 0
    redelivered: bool = False
    routing_key: str = ""
    reason: str = ""
    size: int = -1
    got: int = 0
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    parts: list[bytes] = field(default_factory=list)


def _read_shortstr(buf: bytearray, pos: int) -> tuple[str, int]:
    size = buf[pos]
    return buf[pos + 1:pos + 1 + size].decode("utf-8", "replace"), pos + 1 + size


class FrameReader(asyncio.StreamReaderProtocol):
    """The protocol of one AMQP connection's socket: takes the hot frames of the
    channels registered with it and feeds every other frame to aiormq's reader."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self.writer: asyncio.StreamWriter | None = None
        self._event_loop = loop
        self._frame_buf = bytearray()
        self._passthrough = False  # not frames (a refused protocol header): all goes to aiormq
        self._consumer_sinks: dict[int, tuple[bytes, Any, ConsumerSink]] = {}
        self._confirm_sinks: dict[int, Confirms] = {}
        self._pending_content: dict[int, _Content] = {}
        self._shut_channels: set[int] = set()
        self._conn_gone = False
        self._fed_at = loop.time()

    # -- registration -------------------------------------------------------------

    def consume(self, number: int, consumer_tag: str, channel: Any, sink: ConsumerSink) -> None:
        """Take the deliveries for ``consumer_tag`` on channel ``number`` (the aiormq
        ``channel``, which the deliveries name), before ``basic.consume`` is sent."""
        self._shut_channels.discard(number)
        self._consumer_sinks[number] = (consumer_tag.encode(), channel, sink)

    def confirm(self, confirms: Confirms) -> None:
        """Take the confirms and returns of ``confirms.number`` (in confirm mode)."""
        self._shut_channels.discard(confirms.number)
        old = self._confirm_sinks.get(confirms.number)
        if old is not None and old is not confirms:
            old.lose("the publishing channel was replaced")
        self._confirm_sinks[confirms.number] = confirms

    def forget(self, number: int) -> None:
        self._consumer_sinks.pop(number, None)

    @property
    def gone(self) -> bool:
        return self._conn_gone

    def writable(self, number: int) -> bool:
        """Whether frames for channel ``number`` may be written now."""
        return not self._conn_gone and number not in self._shut_channels and self.writer is not None

    def write(self, number: int, data: bytes) -> bool:
        """Write frames of channel ``number``; False (and nothing written) when the
        channel or the connection is closed."""
        if not self.writable(number):
            return False
        assert self.writer is not None
        self.writer.write(data)
        return True

    # -- reading ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._passthrough:
            super().data_received(data)
            return
        buf = self._frame_buf
        buf += data
        if buf[:4] == b"AMQP":  # the server refused our protocol version: aiormq says so
            self._passthrough = True
            super().data_received(bytes(buf))
            buf.clear()
            return
        size_all, pos, run, taken = len(buf), 0, 0, False
        passed: list[bytes] = []
        while size_all - pos >= 8:
            kind, number, size = _FRAME.unpack_from(buf, pos)
            end = pos + 7 + size
            if end >= size_all:
                break
            if buf[end] != 0xCE:  # not a frame: aiormq reports the framing error
                self._passthrough = True
                pos = size_all
                break
            if self._take(kind, number, buf, pos + 7, end):
                if run < pos:
                    passed.append(bytes(buf[run:pos]))
                run, taken = end + 1, True
            pos = end + 1
        if run < pos:
            passed.append(bytes(buf[run:pos]))
        del buf[:pos]
        if self._passthrough and buf:
            passed.append(bytes(buf))
            buf.clear()
        now = self._event_loop.time()
        if passed:
            super().data_received(b"".join(passed))
            self._fed_at = now
        elif taken and now - self._fed_at >= FEED_EVERY:
            super().data_received(_HEARTBEAT)  # the connection is alive: tell aiormq
            self._fed_at = now

    def _take(self, kind: int, number: int, buf: bytearray, start: int, end: int) -> bool:
        """Handle one frame (payload ``buf[start:end]``) here; False to pass it on."""
        if kind == 1:
            # A method frame ends whatever content the channel was reading.
            self._pending_content.pop(number, None)
            class_id, method_id = _METHOD.unpack_from(buf, start)
            if class_id == _BASIC:
                return self._basic(method_id, number, buf, start + 4)
            if class_id == _CHANNEL:
                if method_id in (_CHANNEL_CLOSE, _CHANNEL_CLOSE_OK):
                    self._channel_closed(number, "the broker closed the channel")
                elif method_id == _CHANNEL_OPEN_OK:
                    self._shut_channels.discard(number)
            elif class_id == _CONNECTION and method_id == _CONNECTION_CLOSE:
                self._connection_gone("the broker closed the connection")
            return False
        content = self._pending_content.get(number)
        if content is None:
            return False
        if kind == 2:
            self._header(number, content, buf, start)
        elif kind == 3:
            content.parts.append(bytes(buf[start:end]))
            content.got += end - start
            if content.got >= content.size:
                self._complete(number, content)
        else:
            return False
        return True

    def _basic(self, method_id: int, number: int, buf: bytearray, pos: int) -> bool:
        if method_id == _DELIVER:
            consumer = self._consumer_sinks.get(number)
            if consumer is None:
                return False
            size = buf[pos]
            if buf[pos + 1:pos + 1 + size] != consumer[0]:
                return False
            pos += 1 + size
            (tag,) = _QWORD.unpack_from(buf, pos)
            redelivered = bool(buf[pos + 8] & 1)
            _, pos = _read_shortstr(buf, pos + 9)  # exchange
            routing_key, _ = _read_shortstr(buf, pos)
            self._pending_content[number] = _Content(_DELIVER, tag, redelivered, routing_key)
            return True
        confirms = self._confirm_sinks.get(number)
        if confirms is None:
            return False
        if method_id in (_ACK_M, _NACK_M):
            (tag,) = _QWORD.unpack_from(buf, pos)
            confirms.settle(tag, multiple=bool(buf[pos + 8] & 1), ok=method_id == _ACK_M)
            return True
        if method_id == _RETURN:
            code = int.from_bytes(buf[pos:pos + 2], "big")
            text, pos = _read_shortstr(buf, pos + 2)
            _, pos = _read_shortstr(buf, pos)  # exchange
            routing_key, _ = _read_shortstr(buf, pos)
            self._pending_content[number] = _Content(
                _RETURN, reason=f"{code} {text} (routing key {routing_key!r})")
            return True
        return False

    def _header(self, number: int, content: _Content, buf: bytearray, pos: int) -> None:
        _, _, content.size, flags = _HEADER.unpack_from(buf, pos)
        pos += _HEADER.size
        if flags & _P_CONTENT_TYPE:
            pos += 1 + buf[pos]
        if flags & _P_CONTENT_ENCODING:
            pos += 1 + buf[pos]
        if flags & _P_HEADERS:
            used, content.headers = amqp_decode.field_table(bytes(buf[pos:]))
            pos += used
        if content.kind == _RETURN and flags & _P_MESSAGE_ID:
            pos += (1 if flags & _P_DELIVERY_MODE else 0) + (1 if flags & _P_PRIORITY else 0)
            for flag in (_P_CORRELATION_ID, _P_REPLY_TO, _P_EXPIRATION):
                if flags & flag:
                    pos += 1 + buf[pos]
            content.message_id, _ = _read_shortstr(buf, pos)
        if content.size == 0:
            self._complete(number, content)

    def _complete(self, number: int, content: _Content) -> None:
        del self._pending_content[number]
        if content.kind == _RETURN:
            confirms = self._confirm_sinks.get(number)
            if confirms is not None:
                confirms.returned_message(content.message_id, content.reason)
            return
        consumer = self._consumer_sinks.get(number)
        if consumer is None:
            return  # the channel closed meanwhile: the broker requeues the message
        body = content.parts[0] if len(content.parts) == 1 else b"".join(content.parts)
        consumer[2].delivered(Incoming(consumer[1], content.tag, content.redelivered,
                                       content.routing_key, content.headers, body))

    # -- closing ------------------------------------------------------------------

    def _channel_closed(self, number: int, why: str) -> None:
        self._shut_channels.add(number)
        self._consumer_sinks.pop(number, None)
        confirms = self._confirm_sinks.pop(number, None)
        if confirms is not None:
            confirms.lose(why)

    def _connection_gone(self, why: str) -> None:
        self._conn_gone = True
        for number in list({*self._consumer_sinks, *self._confirm_sinks}):
            self._channel_closed(number, why)

    def eof_received(self) -> bool:
        self._connection_gone("the broker ended the connection")
        if self._frame_buf:  # whatever aiormq has not seen yet, so that it reports it
            super().data_received(bytes(self._frame_buf))
            self._frame_buf.clear()
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection_gone(f"the connection was lost: {exc}" if exc else
                              "the connection was closed")
        super().connection_lost(exc)

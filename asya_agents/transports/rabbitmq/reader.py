"""The socket of each ``amqp://`` connection, read here before aiormq reads it.

aiormq's reader turns every frame into a ``pamqp`` object and every delivery into two
queue hops and a task; on a replica's hot path that costs more than the frames. So the
protocol of the connection's socket is a :class:`FrameReader`:

- a ``basic.deliver`` (and its content) for a consumer registered here
  (:meth:`FrameReader.consume`), or a ``basic.ack`` / ``basic.nack`` /
  ``basic.return`` on a publishing channel registered here
  (:meth:`FrameReader.confirm`), is decoded with :mod:`struct` and handed to its sink
  at once;
- every other frame (RPC replies, channel and connection control, heartbeats, and any
  delivery for a consumer not registered here) is fed to aiormq's reader unchanged and
  in order.

Frames to send (built in :mod:`.frames`) are written straight to the connection's
writer (:meth:`FrameReader.write`), which gathers what one turn of the event loop wrote
into one ``send``. A channel the broker closed (or whose close it confirmed) takes no
more writes from here (:meth:`FrameReader.writable`), so a late ack can never reach a
channel number that is no longer open, which the broker would answer by closing the
whole connection.

Standard library and ``pamqp`` (which aiormq brings) only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from pamqp import decode as amqp_decode

from asya_agents.transports.rabbitmq.confirms import Confirms
from asya_agents.transports.rabbitmq.frames import (
    ACK,
    BASIC,
    BODY,
    CHANNEL,
    CHANNEL_CLOSE,
    CHANNEL_CLOSE_OK,
    CHANNEL_OPEN_OK,
    CONNECTION,
    CONNECTION_CLOSE,
    CONTENT_HEADER,
    DELIVER,
    FRAME,
    FRAME_END,
    HEADER,
    HEARTBEAT,
    METHOD,
    METHOD_IDS,
    NACK,
    P_CONTENT_ENCODING,
    P_CONTENT_TYPE,
    P_CORRELATION_ID,
    P_DELIVERY_MODE,
    P_EXPIRATION,
    P_HEADERS,
    P_MESSAGE_ID,
    P_PRIORITY,
    P_REPLY_TO,
    QWORD,
    RETURN,
    Incoming,
    read_shortstr,
)

__all__ = ["FEED_EVERY", "ConsumerSink", "FrameReader"]

#: How often aiormq is shown a heartbeat while every frame read is taken here: it
#: counts a connection whose reader saw nothing for a few heartbeats as stuck.
FEED_EVERY = 1.0


class ConsumerSink(Protocol):
    """Where :class:`FrameReader` puts the deliveries of a registered consumer."""

    def delivered(self, message: Incoming) -> None: ...


@dataclass(slots=True)
class _Content:
    """A content-bearing method read on a channel, waiting for its header and body."""

    kind: int  # DELIVER or RETURN
    tag: int = 0
    redelivered: bool = False
    routing_key: str = ""
    reason: str = ""
    size: int = -1
    got: int = 0
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None
    parts: list[bytes] = field(default_factory=list)


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
        passed, taken = self._scan(buf)
        now = self._event_loop.time()
        if passed:
            super().data_received(b"".join(passed))
            self._fed_at = now
        elif taken and now - self._fed_at >= FEED_EVERY:
            super().data_received(HEARTBEAT)  # the connection is alive: tell aiormq
            self._fed_at = now

    def _scan(self, buf: bytearray) -> tuple[list[bytes], bool]:
        """Take the hot frames among the whole frames at the start of ``buf`` and drop
        what was read; the runs of other frames, to pass on, and whether any was taken."""
        size_all, pos, run, taken = len(buf), 0, 0, False
        passed: list[bytes] = []
        while size_all - pos >= 8:
            kind, number, size = FRAME.unpack_from(buf, pos)
            end = pos + 7 + size
            if end >= size_all:
                break
            if buf[end] != FRAME_END:  # not a frame: aiormq reports the framing error
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
        return passed, taken

    def _take(self, kind: int, number: int, buf: bytearray, start: int, end: int) -> bool:
        """Handle one frame (payload ``buf[start:end]``) here; False to pass it on."""
        if kind == METHOD:
            # A method frame ends whatever content the channel was reading.
            self._pending_content.pop(number, None)
            return self._method(number, buf, start)
        content = self._pending_content.get(number)
        if content is None:
            return False
        if kind == HEADER:
            self._header(number, content, buf, start)
        elif kind == BODY:
            content.parts.append(bytes(buf[start:end]))
            content.got += end - start
            if content.got >= content.size:
                self._complete(number, content)
        else:
            return False
        return True

    def _method(self, number: int, buf: bytearray, start: int) -> bool:
        class_id, method_id = METHOD_IDS.unpack_from(buf, start)
        if class_id == BASIC:
            if method_id == DELIVER:
                return self._deliver(number, buf, start + 4)
            return self._confirmed(method_id, number, buf, start + 4)
        if class_id == CHANNEL:
            if method_id in (CHANNEL_CLOSE, CHANNEL_CLOSE_OK):
                self._channel_closed(number, "the broker closed the channel")
            elif method_id == CHANNEL_OPEN_OK:
                self._shut_channels.discard(number)
        elif class_id == CONNECTION and method_id == CONNECTION_CLOSE:
            self._connection_gone("the broker closed the connection")
        return False

    def _deliver(self, number: int, buf: bytearray, pos: int) -> bool:
        consumer = self._consumer_sinks.get(number)
        if consumer is None:
            return False
        size = buf[pos]
        if buf[pos + 1:pos + 1 + size] != consumer[0]:
            return False
        pos += 1 + size
        (tag,) = QWORD.unpack_from(buf, pos)
        redelivered = bool(buf[pos + 8] & 1)
        _, pos = read_shortstr(buf, pos + 9)  # exchange
        routing_key, _ = read_shortstr(buf, pos)
        self._pending_content[number] = _Content(DELIVER, tag, redelivered, routing_key)
        return True

    def _confirmed(self, method_id: int, number: int, buf: bytearray, pos: int) -> bool:
        """A confirm or a return on a publishing channel registered here."""
        confirms = self._confirm_sinks.get(number)
        if confirms is None:
            return False
        if method_id in (ACK, NACK):
            (tag,) = QWORD.unpack_from(buf, pos)
            confirms.settle(tag, multiple=bool(buf[pos + 8] & 1), ok=method_id == ACK)
            return True
        if method_id == RETURN:
            code = int.from_bytes(buf[pos:pos + 2], "big")
            text, pos = read_shortstr(buf, pos + 2)
            _, pos = read_shortstr(buf, pos)  # exchange
            routing_key, _ = read_shortstr(buf, pos)
            self._pending_content[number] = _Content(
                RETURN, reason=f"{code} {text} (routing key {routing_key!r})")
            return True
        return False

    def _header(self, number: int, content: _Content, buf: bytearray, pos: int) -> None:
        _, _, content.size, flags = CONTENT_HEADER.unpack_from(buf, pos)
        pos += CONTENT_HEADER.size
        if flags & P_CONTENT_TYPE:
            pos += 1 + buf[pos]
        if flags & P_CONTENT_ENCODING:
            pos += 1 + buf[pos]
        if flags & P_HEADERS:
            used, content.headers = amqp_decode.field_table(bytes(buf[pos:]))
            pos += used
        if content.kind == RETURN and flags & P_MESSAGE_ID:
            content.message_id = _message_id(flags, buf, pos)
        if content.size == 0:
            self._complete(number, content)

    def _complete(self, number: int, content: _Content) -> None:
        del self._pending_content[number]
        if content.kind == RETURN:
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


def _message_id(flags: int, buf: bytearray, pos: int) -> str:
    """The message id of a content header whose properties after the headers start at
    ``pos`` (the properties before it skipped, in their order on the wire)."""
    pos += (1 if flags & P_DELIVERY_MODE else 0) + (1 if flags & P_PRIORITY else 0)
    for flag in (P_CORRELATION_ID, P_REPLY_TO, P_EXPIRATION):
        if flags & flag:
            pos += 1 + buf[pos]
    return read_shortstr(buf, pos)[0]

"""AMQP 0-9-1 frames on a RabbitMQ replica's hot path: their layouts, and the frames
built for it.

aio-pika and aiormq own the connection: the handshake, channels, declarations, prefetch,
heartbeats and reconnects. What a replica does hundreds of times a second, though (take
a delivery, publish a message, read its confirm, ack), costs far more through aiormq's
per-frame machinery (a ``pamqp`` object per frame, two queues and a task per delivery,
a lock and a bounded write queue per publish) than the frames themselves. So those
frames are packed and unpacked here with precompiled :mod:`struct` layouts, and read by
:class:`~asya_agents.transports.rabbitmq.reader.FrameReader`.

The numbers are not copied from the specification: frame types and the frame end come
from :mod:`pamqp.constants`, class and method ids from the ``frame_id`` of
:mod:`pamqp.commands`' classes, property flags from ``Basic.Properties.flags``. Only the
packing is done here, because it is the hot path. Field tables, rare on this path, are
left to ``pamqp``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from pamqp import constants
from pamqp import encode as amqp_encode
from pamqp.commands import Basic, Channel, Connection

__all__ = ["Incoming", "ack_frames", "nack_frame", "publish_frames", "read_shortstr"]

# frame types, and the octet that ends every frame
METHOD = constants.FRAME_METHOD
HEADER = constants.FRAME_HEADER
BODY = constants.FRAME_BODY
FRAME_END = constants.FRAME_END
_END = constants.FRAME_END_CHAR

# class and method ids
BASIC, CHANNEL, CONNECTION = Basic.frame_id, Channel.frame_id, Connection.frame_id
DELIVER, RETURN = Basic.Deliver.frame_id, Basic.Return.frame_id
ACK, NACK, PUBLISH = Basic.Ack.frame_id, Basic.Nack.frame_id, Basic.Publish.frame_id
CHANNEL_OPEN_OK = Channel.OpenOk.frame_id
CHANNEL_CLOSE, CHANNEL_CLOSE_OK = Channel.Close.frame_id, Channel.CloseOk.frame_id
CONNECTION_CLOSE = Connection.Close.frame_id

# basic property flags (their order is the order of the properties on the wire)
_FLAGS = Basic.Properties.flags
P_CONTENT_TYPE, P_CONTENT_ENCODING = _FLAGS["content_type"], _FLAGS["content_encoding"]
P_HEADERS, P_DELIVERY_MODE = _FLAGS["headers"], _FLAGS["delivery_mode"]
P_PRIORITY, P_CORRELATION_ID = _FLAGS["priority"], _FLAGS["correlation_id"]
P_REPLY_TO, P_EXPIRATION = _FLAGS["reply_to"], _FLAGS["expiration"]
P_MESSAGE_ID = _FLAGS["message_id"]

# layouts
FRAME = struct.Struct(">BHI")  # type, channel, payload size
_FRAME_HEAD = constants.FRAME_HEADER_SIZE
METHOD_IDS = struct.Struct(">HH")
QWORD = struct.Struct(">Q")
CONTENT_HEADER = struct.Struct(">HHQH")  # class, weight, body size, property flags
_SETTLE = struct.Struct(">BHIHHQB")  # frame header, class, method, tag, bits
_PUBLISH_HEAD = struct.Struct(">BHIHHH")  # frame header, class, method, reserved ticket
_SETTLE_SIZE = _SETTLE.size - _FRAME_HEAD
_MULTIPLE, _REQUEUE = 1, 2  # the bits of basic.ack / basic.nack
HEARTBEAT = FRAME.pack(constants.FRAME_HEARTBEAT, 0, 0) + _END


def _shortstr(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError(f"an AMQP short string is at most 255 bytes, got {len(value)}")
    return bytes((len(value),)) + value


def read_shortstr(buf: bytearray, pos: int) -> tuple[str, int]:
    """The short string at ``buf[pos]`` and the position after it."""
    size = buf[pos]
    return buf[pos + 1:pos + 1 + size].decode("utf-8", "replace"), pos + 1 + size


def publish_frames(channel: int, exchange: str, routing_key: str, body: bytes, *,
                   message_id: str, headers: dict[str, Any] | None, mandatory: bool,
                   max_body_frame: int) -> bytes:
    """The frames of one persistent ``basic.publish``: the method, the content header
    (delivery mode 2, ``message_id``, ``headers`` when given) and the body, in frames
    of at most ``max_body_frame`` bytes (the connection's ``frame_max`` less 8)."""
    method_args = (_shortstr(exchange.encode()) + _shortstr(routing_key.encode())
                   + (b"\x01" if mandatory else b"\x00"))
    head = _PUBLISH_HEAD.pack(METHOD, channel, _PUBLISH_HEAD.size - _FRAME_HEAD
                              + len(method_args), BASIC, PUBLISH, 0)
    parts = [head, method_args, _END, *_content_header(channel, body, message_id, headers)]
    for start in range(0, len(body), max_body_frame):
        chunk = body[start:start + max_body_frame]
        parts += [FRAME.pack(BODY, channel, len(chunk)), chunk, _END]
    return b"".join(parts)


def _content_header(channel: int, body: bytes, message_id: str,
                    headers: dict[str, Any] | None) -> list[bytes]:
    flags = P_DELIVERY_MODE | P_MESSAGE_ID
    props = b"\x02" + _shortstr(message_id.encode())
    if headers:
        flags |= P_HEADERS
        props = amqp_encode.field_table(headers) + props
    header = CONTENT_HEADER.pack(BASIC, 0, len(body), flags) + props
    return [FRAME.pack(HEADER, channel, len(header)), header, _END]


def ack_frames(channel: int, below: list[int], above: list[int]) -> bytes:
    """``basic.ack`` frames: one for all of ``below`` (with ``multiple`` up to its
    highest tag when it holds more than one), then one for each tag of ``above``."""
    frames = [_settle(channel, ACK, max(below), _MULTIPLE if len(below) > 1 else 0)
              ] if below else []
    frames += [_settle(channel, ACK, tag, 0) for tag in above]
    return b"".join(frames)


def nack_frame(channel: int, tag: int, *, requeue: bool) -> bytes:
    return _settle(channel, NACK, tag, _REQUEUE if requeue else 0)


def _settle(channel: int, method: int, tag: int, bits: int) -> bytes:
    return _SETTLE.pack(METHOD, channel, _SETTLE_SIZE, BASIC, method, tag, bits) + _END


@dataclass(slots=True)
class Incoming:
    """A delivery, decoded by a FrameReader or by aiormq: what a consumer's token needs
    to settle it."""

    channel: Any  # the aiormq channel it came on
    delivery_tag: int
    redelivered: bool
    routing_key: str
    headers: dict[str, Any]
    body: bytes

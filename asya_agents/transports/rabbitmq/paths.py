"""How the hot frames of one channel travel: one path object per (re)connected channel.

A replica publishes, takes deliveries, acks and requeues far more often than it does
anything else, so those four go through a :class:`WirePath`, picked once for each raw
(aiormq) channel when it is opened or restored (:func:`open_path`):

- :class:`FramePath`, where the connection's socket is read by a
  :class:`~asya_agents.transports.rabbitmq.reader.FrameReader` (``amqp://`` with
  ``frame_reader=True``): deliveries and confirms are decoded by the reader, and
  publishes, acks and nacks are written to it as ready-made frames;
- :class:`AiormqPath` otherwise (``amqps://``, or ``frame_reader=False``): every frame
  goes through aiormq's raw channel, with the same semantics.

The rest of the transport never asks which one it has; the conformance suite runs on
both.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from asya_agents.transports.rabbitmq.confirms import Confirms
from asya_agents.transports.rabbitmq.frames import (
    Incoming,
    ack_frames,
    nack_frame,
    publish_frames,
)
from asya_agents.transports.rabbitmq.internals import body_frame_size, frames_of
from asya_agents.transports.rabbitmq.reader import ConsumerSink, FrameReader
from asya_agents.transports.rabbitmq.session import FOREIGN

__all__ = ["AiormqPath", "ChannelGone", "FramePath", "WirePath", "open_path"]

log = logging.getLogger("asya.transports.rabbitmq")


class ChannelGone(Exception):
    """A frame was not sent: its channel closed (the broker redelivers what it held)."""


class WirePath(Protocol):
    """The hot frames of one raw channel: consume, publish, ack and requeue on it."""

    @property
    def raw(self) -> RawChannel: ...

    @property
    def reader(self) -> FrameReader | None:
        """The FrameReader that takes this channel's hot frames, if any."""

    @property
    def confirms(self) -> Confirms | None:
        """The publisher confirms counted here (:meth:`confirming`), if any."""

    @property
    def usable(self) -> bool:
        """Whether frames may still go out on this channel."""

    def confirming(self, prefix: str, *, refused: Callable[[str], BaseException]) -> None:
        """Publish on this channel (in confirm mode), with message ids under ``prefix``;
        a message the broker returns or nacks fails with ``refused(reason)``."""

    async def consume(self, queue: str, consumer_tag: str, sink: ConsumerSink) -> None:
        """Consume ``queue`` (manual acks) into ``sink`` from its first delivery on."""

    async def cancel(self, consumer_tag: str) -> None:
        """Stop consumer ``consumer_tag``: the broker delivers nothing under it after
        its cancel-ok, and what it delivered stays unacked on the channel, to settle as
        before."""

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, Any]) -> None:
        """Publish one persistent, mandatory message; return once it is confirmed."""

    def ack(self, below: list[int], above: list[int]) -> None:
        """Ack all of ``below`` in one ``multiple`` ack, then each of ``above``; a
        channel that closed meanwhile is logged (the broker delivers them again)."""

    async def requeue(self, tag: int) -> None:
        """Give message ``tag`` back to its queue; :class:`ChannelGone` when it is not."""

    async def drained(self) -> None:
        """Wait until what :meth:`ack` sent is handed to the connection."""


def open_path(raw: RawChannel, *, label: str) -> WirePath:
    """The path of ``raw``: through its connection's FrameReader where it has a live
    one, else through aiormq. ``label`` names the channel in logs."""
    reader = frames_of(raw)
    if reader is None:
        return AiormqPath(raw, label=label)
    return FramePath(raw, reader, label=label)


def _deliveries_to(sink: ConsumerSink) -> Callable[[DeliveredMessage], Coroutine[Any, Any, None]]:
    """aiormq's consumer callback, handing ``sink`` what aiormq decoded."""

    async def on_message(message: DeliveredMessage) -> None:
        tag = message.delivery_tag
        assert tag is not None, "a consumed message has a delivery tag"
        sink.delivered(Incoming(
            message.channel, tag, bool(message.redelivered), message.routing_key or "",
            message.header.properties.headers or {}, message.body))

    return on_message


def _not_acked(label: str, cause: object = "") -> None:
    log.info("acks for %s were not sent (its channel closed; the broker will deliver "
             "those messages again)%s", label, f": {cause}" if cause else "")


class FramePath:
    """Frames written to (and read by) the connection's FrameReader: the hot path."""

    def __init__(self, raw: RawChannel, reader: FrameReader, *, label: str) -> None:
        self.raw, self.reader, self.label = raw, reader, label
        self.number = raw.number
        self.confirms: Confirms | None = None
        self._max_body = body_frame_size(raw)

    @property
    def usable(self) -> bool:
        # Closed as the FrameReader saw counts too: aiormq may not know it yet.
        return not self.raw.is_closed and (
            self.confirms is None or self.confirms.lost_reason is None)

    def confirming(self, prefix: str, *, refused: Callable[[str], BaseException]) -> None:
        self.confirms = Confirms(self.number, prefix, asyncio.get_running_loop(),
                                 refused=refused)
        self.reader.confirm(self.confirms)

    async def consume(self, queue: str, consumer_tag: str, sink: ConsumerSink) -> None:
        # The reader learns the tag before basic.consume goes out: it takes every one.
        self.reader.consume(self.number, consumer_tag, self.raw, sink)
        try:
            await self.raw.basic_consume(queue, _deliveries_to(sink), no_ack=False,
                                         consumer_tag=consumer_tag)
        except BaseException:
            self.reader.forget(self.number)
            raise

    async def cancel(self, consumer_tag: str) -> None:
        # The reader takes this tag's last deliveries until the next consume replaces it.
        await self.raw.basic_cancel(consumer_tag)

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, Any]) -> None:
        confirms = self.confirms
        assert confirms is not None, "confirming() comes before publish()"
        message_id, confirmed = confirms.expect()
        if not self.reader.write(self.number, publish_frames(
                self.number, exchange, routing_key, body, message_id=message_id,
                headers=headers or None, mandatory=True, max_body_frame=self._max_body)):
            confirms.lose("the publishing channel closed")
        await confirmed

    def ack(self, below: list[int], above: list[int]) -> None:
        if not self.reader.write(self.number, ack_frames(self.number, below, above)):
            _not_acked(self.label)

    async def requeue(self, tag: int) -> None:
        # Written now, ahead of acks still lingering: none of those covers this tag,
        # which left the consumer's outstanding tags before any later multiple ack.
        if not self.reader.write(self.number, nack_frame(self.number, tag, requeue=True)):
            raise ChannelGone

    async def drained(self) -> None:
        """Nothing to wait for: frames are written to the connection at once."""


class AiormqPath:
    """Every frame through aiormq's raw channel (as on ``amqps://``)."""

    reader = None
    confirms = None

    def __init__(self, raw: RawChannel, *, label: str) -> None:
        self.raw, self.label = raw, label
        self._prefix = ""
        self._published = 0
        self._acks: set[asyncio.Task[None]] = set()
        #: Settling frames go out in the order they were decided: a ``multiple`` ack
        #: must never overtake a single one it covers.
        self._settling = asyncio.Lock()

    @property
    def usable(self) -> bool:
        return not self.raw.is_closed

    def confirming(self, prefix: str, *, refused: Callable[[str], BaseException]) -> None:
        # aiormq counts the confirms, and raises DeliveryError for a returned message.
        self._prefix = prefix

    async def consume(self, queue: str, consumer_tag: str, sink: ConsumerSink) -> None:
        await self.raw.basic_consume(queue, _deliveries_to(sink), no_ack=False,
                                     consumer_tag=consumer_tag)

    async def cancel(self, consumer_tag: str) -> None:
        await self.raw.basic_cancel(consumer_tag)
        await asyncio.sleep(0)  # aiormq's tasks for its last deliveries run first

    async def publish(self, exchange: str, routing_key: str, body: bytes,
                      headers: dict[str, Any]) -> None:
        self._published += 1
        properties = Basic.Properties(delivery_mode=2, headers=headers or None,
                                      message_id=f"{self._prefix}.{self._published}")
        # wait=False: do not wait for the frame to reach the socket; the broker's
        # confirm (awaited here) is what says the message is safe.
        await self.raw.basic_publish(  # type: ignore[call-arg]  # the abc lacks ``wait``
            body, exchange=exchange, routing_key=routing_key, properties=properties,
            mandatory=True, wait=False)

    def ack(self, below: list[int], above: list[int]) -> None:
        task = asyncio.ensure_future(self._send_acks(below, above))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _send_acks(self, below: list[int], above: list[int]) -> None:
        try:
            async with self._settling:
                if below:
                    await self.raw.basic_ack(max(below), multiple=len(below) > 1, wait=False)
                for tag in above:
                    await self.raw.basic_ack(tag, wait=False)
        except FOREIGN as exc:
            _not_acked(self.label, exc)

    async def requeue(self, tag: int) -> None:
        try:
            async with self._settling:
                await self.raw.basic_nack(tag, requeue=True, wait=False)
        except FOREIGN as exc:
            raise ChannelGone(str(exc)) from exc

    async def drained(self) -> None:
        if self._acks:
            await asyncio.gather(*self._acks, return_exceptions=True)

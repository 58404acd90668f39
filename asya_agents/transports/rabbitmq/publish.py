"""Publishing: every message persistent, ``mandatory``, and confirmed by the broker
before the publish returns.

All publishes of a transport go on one channel in confirm mode (the session's
publishing channel). ``mandatory`` makes a message for a queue that does not exist an
error (:func:`refused`), never silently dropped. A delayed message goes through its
delay class's exchange (see :mod:`.topology`) with its due time in a header.

Channels come back one by one after ``connect_robust`` reconnects (or after the broker
closed the publishing channel), so a publish made before the publishing channel is
restored waits for it (:meth:`Publisher._restored`) instead of failing: with no lease,
an input whose onward publish failed would otherwise sit unacked on its live channel
unless it is given back (the runtime nacks it). Each restored channel gets a new
:class:`~asya_agents.transports.rabbitmq.paths.WirePath`, and with it its own count of
confirms.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from aio_pika.abc import AbstractChannel, AbstractRobustChannel
from aio_pika.exceptions import ChannelInvalidStateError, DeliveryError
from aiormq.abc import AbstractChannel as RawChannel

from asya_agents.errors import MessageTooLarge, TransportError, TransportUnavailable
from asya_agents.transports.base import Outgoing
from asya_agents.transports.rabbitmq.confirms import Confirms
from asya_agents.transports.rabbitmq.paths import WirePath, open_path
from asya_agents.transports.rabbitmq.session import FOREIGN, Session, redact
from asya_agents.transports.rabbitmq.topology import DUE, Topology, delay_class

__all__ = ["Item", "Publisher", "refused"]

#: What :meth:`Publisher.publish_all` takes: ``(routing_key, body, headers)``.
Item = tuple[str, bytes, dict[str, Any]]


def refused(reason: str) -> TransportError:
    return TransportError(f"RabbitMQ refused a message (no such queue?): {reason}")


class Publisher:
    """Publishes the transport's messages on the session's publishing channel."""

    def __init__(self, session: Session, topology: Topology, *, own_id: str) -> None:
        self._session = session
        self._topology = topology
        self._id = own_id
        self._path: WirePath | None = None
        self._epoch = 0

    @property
    def confirms(self) -> Confirms | None:
        """The confirms counted by the FrameReader path, if that is the one in use."""
        return None if self._path is None else self._path.confirms

    async def send(self, messages: list[Outgoing], *, max_bytes: int) -> None:
        for msg in messages:
            _check_size(msg.queue, msg.body, max_bytes)
        now_ms = time.time() * 1000
        await self.publish_all([
            (self._topology.names.queue(m.queue), m.body,
             {DUE: int(now_ms + m.delay * 1000)} if m.delay > 0 else {})
            for m in messages
        ])

    async def publish_all(self, items: list[Item]) -> None:
        """Publish ``items``; return once all are confirmed."""
        if not items:
            return
        try:
            if len(items) == 1:
                await self._publish(*items[0])
            else:
                await asyncio.gather(*(self._publish(*item) for item in items))
        except DeliveryError as exc:
            raise refused(str(exc)) from exc
        except FOREIGN as exc:
            raise TransportUnavailable(f"publishing to RabbitMQ failed: {exc}") from exc

    async def _publish(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        due = headers.get(DUE)
        step = None if due is None else delay_class(due - time.time() * 1000)
        exchange = "" if step is None else await self._topology.delay_exchange(step)
        path = await self._publishing()
        await path.publish(exchange, key, body, headers)

    async def _publishing(self) -> WirePath:
        """The path of the publishing channel now, opened again once it closed."""
        path = self._path
        if path is not None and path.usable:
            return path
        stale = None if path is None else path.raw
        raw = await self._restored(await self._session.channel(), stale=stale)
        if self._path is not None and raw is self._path.raw:
            return self._path  # another publish got here first
        self._epoch += 1
        path = self._path = open_path(raw, label="the publishing channel")
        path.confirming(f"{self._id}-{self._epoch}", refused=refused)
        return path

    async def _restored(self, robust: AbstractChannel, stale: RawChannel | None = None
                        ) -> RawChannel:
        """The open raw channel under ``robust`` (other than ``stale``, one known to be
        closed), waiting up to the connect timeout while aio-pika restores it after a
        reconnect or after the broker closed it.

        A robust connection restores its channels one after another, in no fixed order,
        so a consumer's channel may deliver again before the publishing channel is back.
        A publish made in that window waits here instead of failing: RabbitMQ has no
        lease, and an input whose onward publish failed stays with its live channel."""
        timeout = self._session.timeout
        try:
            async with asyncio.timeout(timeout):
                return await _reopened(robust, stale)
        except TimeoutError as exc:
            raise TransportUnavailable(
                f"the RabbitMQ publishing channel was not back within {timeout:g}s "
                f"(connection to {redact(self._session.url)})") from exc

    def forget(self) -> None:
        """The connection is closed: open the path again when next used."""
        self._path = None


async def _reopened(robust: AbstractChannel, stale: RawChannel | None) -> RawChannel:
    while True:
        if isinstance(robust, AbstractRobustChannel):
            await robust.ready()
        with contextlib.suppress(ChannelInvalidStateError):
            raw = await robust.get_underlay_channel()
            if not raw.is_closed and raw is not stale:
                return raw
        # Closed, and aio-pika has not started to restore it yet.
        await asyncio.sleep(0.02)


def _check_size(queue: str, body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise MessageTooLarge(
            f"message for {queue!r} is {len(body)} bytes, over the RabbitMQ transport's "
            f"limit of {max_bytes} (max_message_bytes)")

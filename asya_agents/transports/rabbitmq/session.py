"""One robust connection per transport, opened on first use, and the channels the other
parts of the transport open on it.

aio-pika owns the connection (``connect_robust``): after a broker restart or a closed
connection it reconnects by itself and restores every channel with its prefetch and
declarations. The publishing channel (publisher confirms on, returns raised) is opened
with the connection and is also the one declarations go through; consumers each get a
channel of their own (:meth:`Session.open_channel`), and best-effort traffic (stats,
in-flight reports) goes on channels without confirms (:meth:`Session.plain_channel`).

:data:`FOREIGN` is what aio-pika and aiormq raise; each part translates it into this
project's errors where it enters.
"""

from __future__ import annotations

import asyncio
import urllib.parse

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError

from asya_agents.errors import TransportUnavailable
from asya_agents.transports.rabbitmq.internals import connection_class

__all__ = ["FOREIGN", "Session", "redact"]

#: What aio-pika/aiormq raise; ChannelInvalidStateError (a closed or reconnecting
#: channel) is a RuntimeError there, not an AMQPError.
FOREIGN = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError,
           asyncio.TimeoutError)


class Session:
    """The transport's connection to the broker at ``url``, shown to the broker as
    ``name``; with ``frame_reader`` its ``amqp://`` socket is read by a FrameReader."""

    def __init__(self, url: str, *, name: str, timeout: float, frame_reader: bool) -> None:
        self.url = url
        self.name = name
        self.timeout = timeout
        self.frame_reader = frame_reader
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    async def channel(self) -> AbstractChannel:
        """The publishing channel (publisher confirms on), connecting on first use."""
        if self._pub is not None:
            return self._pub
        async with self._lock:
            if self._conn is None:
                self._conn = await self._connect()
            if self._pub is None:
                self._pub = await self.open_channel()
            return self._pub

    async def _connect(self) -> AbstractRobustConnection:
        try:
            return await aio_pika.connect_robust(
                self.url, timeout=self.timeout,
                connection_class=connection_class(self.frame_reader),
                client_properties={"connection_name": self.name})
        except FOREIGN as exc:
            raise TransportUnavailable(
                f"cannot connect to RabbitMQ at {redact(self.url)}: {exc}") from exc

    async def open_channel(self) -> AbstractChannel:
        """A new channel with publisher confirms, on the open connection."""
        assert self._conn is not None, "channel() connects first"
        try:
            return await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        except FOREIGN as exc:
            raise TransportUnavailable(f"cannot open a RabbitMQ channel: {exc}") from exc

    async def plain_channel(self) -> AbstractChannel:
        """A new channel without publisher confirms, connecting first; what aio-pika
        raises passes through (the caller knows what failed)."""
        await self.channel()
        assert self._conn is not None
        return await self._conn.channel(publisher_confirms=False)

    async def close(self) -> None:
        conn, self._conn, self._pub = self._conn, None, None
        if conn is not None:
            try:
                await conn.close()
            except FOREIGN:
                pass


def redact(url: str) -> str:
    """``url`` without its password, for messages and reprs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url

"""The one place that reaches into aio-pika's and aiormq's internals: it puts a
:class:`~asya_agents.transports.rabbitmq.reader.FrameReader` and a coalescing writer
under the socket of each ``amqp://`` connection.

Neither library has a public hook for that, so this module relies on four pieces of
them that are not their public API, and nothing else in the package touches any:

- aiormq's ``transport_factory`` keyword of ``Connection`` and its
  :class:`aiormq.TransportFactory` (``create(url, **kwargs)`` returning a stream
  reader and writer), handed over through aio-pika's connection ``kwargs``;
- aio-pika's ``RobustConnection._on_connected``, which runs on every (re)connect
  before the robust channels are restored: it ties the new aiormq connection (the
  robust connection's ``transport.connection``) to the FrameReader its socket got;
- the ``connection`` of aiormq's raw channels, which names that aiormq connection;
- ``max_content_size`` of aiormq's raw channel (not in its abc), the largest body
  frame the connection takes.

The extra ``rabbitmq`` pins aio-pika, aiormq and pamqp to the minor versions tested,
and ``tests/transports/test_rabbitmq_internals.py`` fails, naming the library, its
version and the piece, when one of these changes.

The writer (:class:`_CoalescingWriter`) exists because aiormq writes every frame on its
own (a publish, an ack): a replica that moves hundreds of messages a second would make
a system call for each, and on a loopback or LAN socket each call costs more than the
frame. ``amqps://`` keeps aiormq's TLS transport, and with it aiormq's frame handling.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from typing import Any

import aio_pika
import aiormq.exceptions
from aiormq import TransportFactory
from aiormq.abc import AbstractChannel as RawChannel
from yarl import URL

from asya_agents.transports.rabbitmq.reader import FrameReader

__all__ = ["body_frame_size", "connection_class", "frames_of"]


class _CoalescingWriter(asyncio.StreamWriter):
    """A stream writer whose writes made in one turn of the event loop leave together,
    in one ``send``, at the start of the next turn.

    Gathering them keeps the order of frames and delays none by more than a turn of
    the loop. ``drain``, ``close`` and ``write_eof`` send what is gathered first."""

    def __init__(self, transport: asyncio.WriteTransport, protocol: asyncio.BaseProtocol,
                 reader: asyncio.StreamReader | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport, protocol, reader, loop)
        self._gathered: list[bytes] = []
        self._event_loop = loop

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._gathered:
            self._event_loop.call_soon(self.flush)
        self._gathered.append(bytes(data))

    def writelines(self, data: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in data:
            self.write(chunk)

    def flush(self) -> None:
        """Send what was gathered (once the socket is closing, it is dropped, as the
        transport itself would drop it)."""
        if not self._gathered:
            return
        data = b"".join(self._gathered)
        self._gathered.clear()
        if not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        self.flush()
        await super().drain()

    def write_eof(self) -> None:
        self.flush()
        super().write_eof()

    def close(self) -> None:
        self.flush()
        super().close()


class _CoalescingTCP(TransportFactory):
    """aiormq's transport factory for ``amqp://``: a TCP stream read by a
    :class:`FrameReader` and written by a :class:`_CoalescingWriter`. ``latest`` is the
    reader of the connection made last, until :class:`_Connection` claims it."""

    def __init__(self) -> None:
        self.latest: FrameReader | None = None

    async def create(self, url: URL, **kwargs: Any
                     ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kwargs.pop("ssl_context_provider", None)
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = FrameReader(reader, loop)
        try:
            transport, _ = await loop.create_connection(
                lambda: protocol, host=url.host or "localhost", port=url.port or 5672, **kwargs)
        except OSError as exc:
            raise aiormq.exceptions.AMQPConnectionError(*exc.args) from exc
        writer = _CoalescingWriter(transport, protocol, reader, loop)
        protocol.writer = writer
        self.latest = protocol
        return reader, writer


#: The FrameReader of each aiormq connection made through :class:`_CoalescingTCP`.
_FRAMES: weakref.WeakKeyDictionary[Any, FrameReader] = weakref.WeakKeyDictionary()


def frames_of(raw: RawChannel) -> FrameReader | None:
    """The FrameReader under ``raw``'s connection, while it is the live one."""
    frames = _FRAMES.get(raw.connection)
    return None if frames is None or frames.gone else frames


def body_frame_size(raw: RawChannel) -> int:
    """The largest body frame ``raw``'s connection takes (its ``frame_max`` less 8)."""
    size: int = raw.max_content_size  # type: ignore[attr-defined]
    return size


class _Connection(aio_pika.RobustConnection):
    """aio-pika's robust connection on :class:`_CoalescingTCP` (``amqps://`` keeps
    aiormq's TLS transport, and with it aiormq's frame handling)."""

    def __init__(self, url: Any, loop: asyncio.AbstractEventLoop | None = None,
                 **kwargs: Any) -> None:
        super().__init__(url, loop=loop, **kwargs)
        if self.url.scheme == "amqp":
            self.kwargs["transport_factory"] = _CoalescingTCP()

    async def _on_connected(self) -> None:
        # Each (re)connect: tie the new aiormq connection to the FrameReader its socket
        # was given, before the robust channels are restored on it.
        factory = self.kwargs.get("transport_factory")
        if isinstance(factory, _CoalescingTCP) and factory.latest is not None \
                and self.transport is not None:
            _FRAMES[self.transport.connection] = factory.latest
            factory.latest = None
        await super()._on_connected()


def connection_class(frame_reader: bool) -> type[aio_pika.RobustConnection]:
    """What ``connect_robust`` builds: with ``frame_reader``, a connection whose
    ``amqp://`` socket a FrameReader reads; else aio-pika's own."""
    return _Connection if frame_reader else aio_pika.RobustConnection

"""The RabbitMQ transport (aio-pika): a mesh that outgrows one machine, on a broker.

Each actor has one durable **quorum queue**, ``PREFIX-MESH-ACTOR``. Messages are
persistent and every publish waits for the broker's confirm (``mandatory``, so a
message for a queue that does not exist is an error, never silently dropped). A
replica consumes with manual acks and a prefetch equal to what the runtime first asks
for (the actor's ``concurrency``, or its batch size), so the broker never pushes more
than the replica may hold.

**The per-message path.** aio-pika owns the connection (``connect_robust``), the
declarations and each channel's prefetch. Under each ``amqp://`` connection a
:class:`~asya_agents.transports.amqp_wire.FrameReader` reads the socket before aiormq
does: it decodes the deliveries of this transport's consumers and the publisher confirms
and returns of its publishing channel itself, and feeds every other frame to aiormq
unchanged. Publishes, acks and nacks are written as ready-made frames; the connection's
writer sends what one turn of the event loop wrote in one system call
(:class:`_CoalescingWriter`), and acks wait up to ``ACK_LINGER`` to leave together as
one ``multiple`` ack (:meth:`RabbitMQTransport.ack`). On ``amqps://`` (or with
``frame_reader=False``) every frame goes through aiormq's raw channels instead, with the
same semantics; the conformance suite runs on both.

**Leases.** RabbitMQ has no visibility timeout: a delivered message belongs to its
channel until it is acked, or until the channel or connection dies, and then the broker
requeues it at once. So ``visibility`` is not used and ``extend`` has nothing to do (the
broker's ``consumer_timeout`` is the backstop for a replica that hangs without dying).
After ``connect_robust`` reconnects, messages delivered on the old channel can no longer
be acked; they are dropped from the local buffer and their ack fails with
:class:`TransportError`, so a stale tag is never acked on the new channel (no
double-ack) and the broker redelivers them (no loss; ``happy-end`` records an id once).
Channels come back one by one, so a publish made before the publishing channel is
restored waits for it (:meth:`RabbitMQTransport._restored`) instead of failing; with no
lease, an input whose onward publish failed would otherwise sit unacked on its live
channel unless it is given back (the runtime nacks it).

**Delays** (retries, ``nack(delay=...)``) without the delayed-message plugin: a ladder
of delay classes, each a durable classic queue ``PREFIX-MESH--delay-MS`` with a fixed
``x-message-ttl`` that dead-letters to the default exchange. A delayed message is
published through that class's fanout exchange with the target work queue as its
routing key, so on expiry it lands back on its own work queue. Since all messages in a
class share one TTL, expiry order is queue order (no head-of-line blocking). A delay
that is not a class is served in steps: the message carries its due time
(``x-asya-due``, epoch ms), and a consumer that receives it early re-parks it in the
largest class that fits the rest, before the runtime ever sees it.

**Dead letters.** A work queue's ``x-delivery-limit`` (quorum queues count
redeliveries in ``x-delivery-count``) moves a message that keeps killing its consumers
to ``PREFIX-MESH-ACTOR-dlq``. The delivery count is surfaced on :class:`Delivery`.

**Counts for scaling.** ``depth`` is the ready count from a passive ``queue.declare``.
The unacked count is not in AMQP: it is read from the management API when
``management_url`` answers; else every consuming transport reports what it holds once
a second on the mesh's ``PREFIX-MESH--inflight`` fanout exchange, and ``stats`` sums the
fresh reports (see :class:`_InFlightReports`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import urllib.parse
import urllib.request
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asya_agents.errors import MessageTooLarge, TransportError, TransportUnavailable
from asya_agents.transports.base import Delivery, Outgoing, QueueStats

if TYPE_CHECKING:
    from asya_agents.settings import RabbitMQSettings

try:
    import aio_pika
    import aiormq.exceptions
    from aio_pika.abc import (
        AbstractChannel,
        AbstractExchange,
        AbstractIncomingMessage,
        AbstractRobustChannel,
        AbstractRobustConnection,
    )
    from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, DeliveryError
    from aiormq import TransportFactory
    from aiormq.abc import AbstractChannel as RawChannel
    from aiormq.abc import DeliveredMessage
    from pamqp.commands import Basic
    from yarl import URL

    from asya_agents.transports.amqp_wire import (
        Confirms,
        FrameReader,
        Incoming,
        ack_frames,
        nack_frame,
        publish_frames,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"the rabbitmq transport needs aio-pika: pip install 'asya-agents[rabbitmq]' ({exc})"
    ) from exc

__all__ = ["DELAY_CLASSES_MS", "RabbitMQTransport"]

log = logging.getLogger("asya.transports.rabbitmq")

#: The delay ladder, in milliseconds. Longer delays are served in steps.
DELAY_CLASSES_MS = (100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
                    300_000, 900_000, 3_600_000)
_DUE = "x-asya-due"
_PRIOR = "x-asya-receives"
_MGMT_RETRY = 60.0
_REPORT_EVERY = 1.0
_REPORT_STALE = 3.5
#: What aio-pika/aiormq raise; ChannelInvalidStateError (a closed or reconnecting
#: channel) is a RuntimeError there, not an AMQPError.
_FOREIGN = (AMQPError, ChannelInvalidStateError, ConnectionError, OSError,
            asyncio.TimeoutError)


def delay_class(remaining_ms: float) -> int | None:
    """The largest class that fits ``remaining_ms``; None when it is due now."""
    if remaining_ms < DELAY_CLASSES_MS[0] / 2:
        return None
    fitting = [c for c in DELAY_CLASSES_MS if c <= remaining_ms]
    return fitting[-1] if fitting else DELAY_CLASSES_MS[0]


@dataclass
class _Consumer:
    """One consumed queue: its (robust) channel, the raw channel under it now, and the
    messages the broker pushed to it.

    ``outstanding`` holds the delivery tags of the current raw channel that are neither
    acked nor nacked (taken by the runtime or still buffered); ``acks`` those whose ack
    waits for the next flush (see :meth:`RabbitMQTransport.ack`), which ``timer``
    will start. ``frames`` is the connection's :class:`FrameReader` when it reads this
    consumer's deliveries and takes its acks (``amqp://``); without one (``amqps://``)
    both go through aiormq."""

    name: str
    channel: AbstractChannel
    prefetch: int = 1
    buffer: asyncio.Queue[Incoming] = field(default_factory=asyncio.Queue)
    raw: RawChannel | None = None
    frames: FrameReader | None = None
    outstanding: set[int] = field(default_factory=set)
    acks: list[int] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    #: Settling frames sent through aiormq go out in the order they were decided: a
    #: ``multiple`` ack must never overtake a single one it covers. (Frames written
    #: to a FrameReader are written in that order already.)
    settling: asyncio.Lock = field(default_factory=asyncio.Lock)

    def delivered(self, message: Incoming) -> None:
        """A delivery, decoded by the connection's FrameReader or by aiormq."""
        if message.channel is self.raw:
            self.outstanding.add(message.delivery_tag)
        self.buffer.put_nowait(message)

    async def on_message(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback: deliveries the FrameReader did not take."""
        self.delivered(Incoming(
            message.channel, _tag(message), bool(message.redelivered),
            message.routing_key or "", message.header.properties.headers or {},
            message.body))

    def current(self, message: Incoming) -> bool:
        """Whether ``message`` came on the live raw channel (so its tag may be settled)."""
        raw = self.raw
        return message.channel is raw and raw is not None and not raw.is_closed


class _InFlightReports:
    """What other consumers of the mesh say they hold unacked, as last reported.

    AMQP has no unacked count, so every consuming transport reports its own (leased plus
    prefetched) once a second on the mesh's ``--inflight`` fanout exchange; a transport
    asked for ``stats`` listens there and sums the reports that are fresh. A consumer
    that died stops reporting and drops out after a few seconds, while the broker
    requeues what it held, which then shows in the ready count."""

    def __init__(self, own_id: str) -> None:
        self.own_id = own_id
        self.seen: dict[tuple[str, str], tuple[int, float]] = {}

    async def on_report(self, message: AbstractIncomingMessage) -> None:
        try:
            data = json.loads(message.body)
            key, held = (str(data["c"]), str(data["q"])), int(data["n"])
        except (ValueError, KeyError, TypeError):
            return
        if key[0] != self.own_id:
            self.seen[key] = (held, time.monotonic())

    def total(self, queue: str) -> int:
        now = time.monotonic()
        return sum(held for (_, q), (held, at) in self.seen.items()
                   if q == queue and now - at < _REPORT_STALE)


class _CoalescingWriter(asyncio.StreamWriter):
    """A stream writer whose writes made in one turn of the event loop leave together,
    in one ``send``, at the start of the next turn.

    aiormq writes every frame on its own (a publish, an ack): a replica that moves
    hundreds of messages a second would make a system call for each, and on a loopback
    or LAN socket each call costs more than the frame. Gathering them keeps the order
    of frames and delays none by more than a turn of the loop. ``drain``, ``close`` and
    ``write_eof`` send what is gathered first."""

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


def _frames_of(raw: RawChannel) -> FrameReader | None:
    """The FrameReader under ``raw``'s connection, while it is the live one."""
    frames = _FRAMES.get(raw.connection)
    return None if frames is None or frames.gone else frames


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


class RabbitMQTransport:
    """Queues on a RabbitMQ broker, named ``PREFIX-MESH-ACTOR``."""

    name = "rabbitmq"
    #: How long an ack waits for others to go with it, and how many make it go at once.
    ACK_LINGER = 0.005
    ACK_BATCH = 64

    def __init__(
        self,
        url: str,
        *,
        mesh: str,
        prefix: str = "asya",
        management_url: str | None = None,
        max_message_bytes: int = 4 * 1024 * 1024,
        delivery_limit: int = 20,
        connect_timeout: float = 10.0,
        frame_reader: bool = True,
    ) -> None:
        self.url = url
        self.mesh = mesh
        self.prefix = prefix
        self.management_url = management_url or None
        self.max_message_bytes = max_message_bytes
        self.delivery_limit = delivery_limit
        self._timeout = connect_timeout
        #: Deliveries, confirms and acks through the connection's FrameReader (the hot
        #: path, ``amqp://``); False leaves every frame to aiormq, as on ``amqps://``.
        self._frame_reader = frame_reader
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._pub_raw: RawChannel | None = None
        self._pub_frames: FrameReader | None = None
        self._confirms: Confirms | None = None
        self._published = 0
        self._pub_epoch = 0
        self._consumes = 0
        self._flushes: set[asyncio.Task[None]] = set()
        self._stats_ch: AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._consumers: dict[str, _Consumer] = {}
        self._delay_exchanges: dict[int, str] = {}
        self._mgmt_down_until = 0.0
        self._id = uuid.uuid4().hex[:12]
        self._reports = _InFlightReports(self._id)
        self._reporter: asyncio.Task[None] | None = None
        self._inflight_ex: AbstractExchange | None = None
        self._report_ch: AbstractChannel | None = None
        self._watching = False

    @classmethod
    def from_settings(cls, settings: RabbitMQSettings, *, mesh: str) -> RabbitMQTransport:
        return cls(settings.url, mesh=mesh, prefix=settings.queue_prefix,
                   management_url=settings.management_url,
                   max_message_bytes=settings.max_message_bytes,
                   delivery_limit=settings.delivery_limit,
                   frame_reader=settings.frame_reader)

    def queue_name(self, actor: str) -> str:
        return f"{self.prefix}-{self.mesh}-{actor}"

    @property
    def connection_name(self) -> str:
        """Shown by ``rabbitmqctl list_connections client_properties``: which mesh."""
        return f"asya {self.prefix}-{self.mesh}"

    def _delay_name(self, class_ms: int) -> str:
        return f"{self.prefix}-{self.mesh}--delay-{class_ms}"

    @property
    def _inflight_name(self) -> str:
        return f"{self.prefix}-{self.mesh}--inflight"

    # -- plumbing ---------------------------------------------------------------------

    async def _channel(self) -> AbstractChannel:
        """The publishing channel (publisher confirms on), connecting on first use."""
        if self._pub is not None:
            return self._pub
        async with self._lock:
            if self._conn is None:
                try:
                    self._conn = await aio_pika.connect_robust(
                        self.url, timeout=self._timeout,
                        connection_class=_Connection if self._frame_reader
                        else aio_pika.RobustConnection,
                        client_properties={"connection_name": self.connection_name})
                except _FOREIGN as exc:
                    raise TransportUnavailable(
                        f"cannot connect to RabbitMQ at {_redact(self.url)}: {exc}"
                    ) from exc
            if self._pub is None:
                self._pub = await self._open_channel()
            return self._pub

    async def _open_channel(self) -> AbstractChannel:
        assert self._conn is not None
        try:
            return await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        except _FOREIGN as exc:
            raise TransportUnavailable(f"cannot open a RabbitMQ channel: {exc}") from exc

    def _work_args(self, actor: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.queue_name(actor) + "-dlq",
        }

    # -- protocol -----------------------------------------------------------------------

    async def ensure_queues(self, queues: list[str]) -> None:
        channel = await self._channel()
        try:
            for actor in queues:
                await channel.declare_queue(self.queue_name(actor) + "-dlq", durable=True,
                                            arguments={"x-queue-type": "quorum"})
                await channel.declare_queue(self.queue_name(actor), durable=True,
                                            arguments=self._work_args(actor))
        except _FOREIGN as exc:
            raise TransportError(f"declaring queues {queues} failed: {exc}") from exc

    async def _delay_exchange(self, class_ms: int) -> str:
        """The name of the delay class's exchange, declared (with its queue) on first
        use; the robust channel declares them again after a reconnect."""
        if class_ms not in self._delay_exchanges:
            channel = await self._channel()
            name = self._delay_name(class_ms)
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT,
                                                      durable=True)
            queue = await channel.declare_queue(name, durable=True, arguments={
                "x-message-ttl": class_ms, "x-dead-letter-exchange": ""})
            await queue.bind(exchange)
            self._delay_exchanges[class_ms] = name
        return self._delay_exchanges[class_ms]

    async def send(self, messages: list[Outgoing]) -> None:
        for msg in messages:
            self._check_size(msg.queue, msg.body)
        now_ms = time.time() * 1000
        await self._publish_all([
            (self.queue_name(m.queue), m.body,
             {_DUE: int(now_ms + m.delay * 1000)} if m.delay > 0 else {})
            for m in messages
        ])

    def _check_size(self, queue: str, body: bytes) -> None:
        if len(body) > self.max_message_bytes:
            raise MessageTooLarge(
                f"message for {queue!r} is {len(body)} bytes, over the RabbitMQ transport's "
                f"limit of {self.max_message_bytes} (max_message_bytes)"
            )

    async def _publish_all(self, items: list[tuple[str, bytes, dict[str, Any]]]) -> None:
        """Publish ``(routing_key, body, headers)`` items; return once all are confirmed."""
        if not items:
            return
        try:
            if len(items) == 1:
                await self._publish(*items[0])
            else:
                await asyncio.gather(*(self._publish(key, body, headers)
                                       for key, body, headers in items))
        except DeliveryError as exc:
            raise _refused(str(exc)) from exc
        except _FOREIGN as exc:
            raise TransportUnavailable(f"publishing to RabbitMQ failed: {exc}") from exc

    async def _publishing(self) -> RawChannel:
        """The raw publishing channel now; its confirms are read by the connection's
        FrameReader where there is one."""
        raw = self._pub_raw
        # Usable unless closed, or closed as the FrameReader saw (aiormq may not know yet)
        if raw is not None and not raw.is_closed \
                and (self._confirms is None or self._confirms.lost_reason is None):
            return raw
        raw = await self._restored(await self._channel(), stale=raw)
        if raw is self._pub_raw:
            return raw  # another publish got here first
        self._pub_raw = raw
        frames = self._pub_frames = _frames_of(raw)
        self._confirms = None
        if frames is not None:
            self._pub_epoch += 1
            self._confirms = Confirms(raw.number, f"{self._id}-{self._pub_epoch}",
                                      asyncio.get_running_loop(), refused=_refused)
            frames.confirm(self._confirms)
        return raw

    async def _restored(self, robust: AbstractChannel, stale: RawChannel | None = None
                        ) -> RawChannel:
        """The open raw channel under ``robust`` (other than ``stale``, one known to be
        closed), waiting up to the connect timeout while aio-pika restores it after a
        reconnect or after the broker closed it.

        A robust connection restores its channels one after another, in no fixed order,
        so a consumer's channel may deliver again before the publishing channel is back.
        A publish made in that window waits here instead of failing: RabbitMQ has no
        lease, and an input whose onward publish failed stays with its live channel."""
        try:
            async with asyncio.timeout(self._timeout):
                while True:
                    if isinstance(robust, AbstractRobustChannel):
                        await robust.ready()
                    with contextlib.suppress(ChannelInvalidStateError):
                        raw = await robust.get_underlay_channel()
                        if not raw.is_closed and raw is not stale:
                            return raw
                    # Closed, and aio-pika has not started to restore it yet.
                    await asyncio.sleep(0.02)
        except TimeoutError as exc:
            raise TransportUnavailable(
                f"the RabbitMQ publishing channel was not back within {self._timeout:g}s "
                f"(connection to {_redact(self.url)})") from exc

    async def _publish(self, key: str, body: bytes, headers: dict[str, Any]) -> None:
        due = headers.get(_DUE)
        step = None if due is None else delay_class(due - time.time() * 1000)
        exchange = "" if step is None else await self._delay_exchange(step)
        raw = await self._publishing()
        confirms, frames = self._confirms, self._pub_frames
        if confirms is not None and frames is not None:
            message_id, confirmed = confirms.expect()
            if not frames.write(confirms.number, publish_frames(
                    confirms.number, exchange, key, body, message_id=message_id,
                    headers=headers or None, mandatory=True,
                    max_body_frame=raw.max_content_size)):  # type: ignore[attr-defined]
                confirms.lose("the publishing channel closed")
            await confirmed
            return
        self._published += 1
        properties = Basic.Properties(delivery_mode=2, headers=headers or None,
                                      message_id=f"{self._id}.{self._published}")
        # wait=False: do not wait for the frame to reach the socket; the broker's
        # confirm (awaited here) is what says the message is safe.
        await raw.basic_publish(  # type: ignore[call-arg]  # aiormq's abc lacks ``wait``
            body, exchange=exchange, routing_key=key, properties=properties, mandatory=True,
            wait=False)

    async def _consumer(self, queue: str, prefetch: int) -> _Consumer:
        if queue not in self._consumers:
            await self._channel()
            channel = await self._open_channel()
            consumer = _Consumer(self.queue_name(queue), channel, max(prefetch, 1))
            try:
                await channel.set_qos(prefetch_count=consumer.prefetch)
                await channel.declare_queue(consumer.name, passive=True)
                await self._consume(consumer)
            except _FOREIGN as exc:
                raise TransportError(f"cannot consume {consumer.name!r}: {exc}") from exc
            # After connect_robust reopens the channel (and its prefetch), consume again
            # on the new raw channel.
            if isinstance(channel, AbstractRobustChannel):
                channel.reopen_callbacks.add(lambda _sender: self._reconsume(consumer))
            self._consumers[queue] = consumer
            if self._reporter is None:
                self._reporter = asyncio.create_task(self._report_loop())
        return self._consumers[queue]

    async def _reconsume(self, consumer: _Consumer) -> None:
        """Consume again on a restored channel. aio-pika drops whatever a reopen
        callback raises, so a failure is logged here: a channel that closed again is
        restored (and this runs again), but any other failure leaves the queue without
        this consumer, and that must not be silent."""
        try:
            await self._consume(consumer)
        except _FOREIGN as exc:
            raw = consumer.raw
            if raw is not None and not raw.is_closed:
                log.error("consuming %s again after a reconnect failed: %s", consumer.name,
                          exc)

    async def _consume(self, consumer: _Consumer) -> None:
        """Consume on the channel's raw (aiormq) channel: deliveries skip aio-pika's
        message objects, and acks can be coalesced (see :meth:`ack`). Where the
        connection has a FrameReader, it takes this consumer's deliveries from the
        first one on: it learns the consumer tag before ``basic.consume`` is sent."""
        raw = await consumer.channel.get_underlay_channel()
        if consumer.timer is not None:
            consumer.timer.cancel()  # acks for the lost channel: the broker requeued those
        consumer.raw, consumer.outstanding, consumer.acks, consumer.timer = raw, set(), [], None
        self._consumes += 1
        tag = f"asya-{self._id}-{self._consumes}"
        consumer.frames = _frames_of(raw)
        if consumer.frames is not None:
            consumer.frames.consume(raw.number, tag, raw, consumer)
        try:
            await raw.basic_consume(consumer.name, consumer.on_message, no_ack=False,
                                    consumer_tag=tag)
        except BaseException:
            if consumer.frames is not None:
                consumer.frames.forget(raw.number)
            raise

    async def receive(
        self, queue: str, *, max_messages: int, wait: float, visibility: float
    ) -> list[Delivery]:
        consumer = await self._consumer(queue, max_messages)
        deadline = time.monotonic() + wait
        got: list[Delivery] = []
        while not got:
            if consumer.buffer.empty():
                left = deadline - time.monotonic()
                try:
                    async with asyncio.timeout(max(left, 0.001)):
                        first = await consumer.buffer.get()
                except TimeoutError:
                    return got
            else:
                first = consumer.buffer.get_nowait()
            batch = [first]
            while len(batch) < max_messages and not consumer.buffer.empty():
                batch.append(consumer.buffer.get_nowait())
            for message in batch:
                delivery = await self._admit(queue, consumer, message)
                if delivery is not None:
                    got.append(delivery)
        return got

    async def _admit(self, queue: str, consumer: _Consumer,
                     message: Incoming) -> Delivery | None:
        """A delivery for the runtime, or None for a stale or not-yet-due message."""
        if not consumer.current(message):
            return None  # from a channel lost before a reconnect: the broker requeued it
        headers = message.headers
        if not headers:
            return Delivery(queue, message.body, message, 2 if message.redelivered else 1)
        due = headers.get(_DUE)
        if isinstance(due, int) and delay_class(due - time.time() * 1000) is not None:
            await self._repark(Delivery(queue, message.body, message, 1), headers)
            return None
        count = 1 + _int(headers.get(_PRIOR)) + _int(headers.get("x-delivery-count"))
        if message.redelivered and "x-delivery-count" not in headers:
            count += 1
        return Delivery(queue, message.body, message, count)

    async def _repark(self, delivery: Delivery, headers: dict[str, Any]) -> None:
        message: Incoming = delivery.token
        prior = _int(headers.get(_PRIOR)) + _int(headers.get("x-delivery-count"))
        headers = {**_own_headers(headers), _PRIOR: prior}
        try:
            await self._publish_all([(message.routing_key, message.body, headers)])
        except (TransportError, *_FOREIGN):
            # Given back, not held: it comes back and is re-parked then.
            with contextlib.suppress(TransportError):
                await self._requeue(delivery)
            return
        with contextlib.suppress(TransportError):  # its channel closed: it comes back
            await self.ack(delivery)

    async def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery``: it is settled here at once, and its ``basic.ack`` waits up
        to ``ACK_LINGER`` seconds (or until ``ACK_BATCH``, or half the prefetch, are
        waiting) for others to go with it: one ack with ``multiple`` covers every tag
        below the lowest one still outstanding, and the rest go one by one. Fewer
        frames, and for a quorum queue fewer commands in its log; the broker's CPU per
        message drops with them.

        A message is only acked after what it produced was confirmed, so a crash in
        that window only means the broker delivers it again (at-least-once; happy-end
        records an id once). :meth:`close` sends what is waiting."""
        consumer, message = self._settling(delivery)
        tag = message.delivery_tag
        consumer.outstanding.discard(tag)
        consumer.acks.append(tag)
        # Unsent acks still count against the prefetch: past half of it, send them now
        # (at once for a prefetch of 1), so the broker keeps delivering.
        if len(consumer.acks) >= min(self.ACK_BATCH, max(1, consumer.prefetch // 2)):
            self._flush(consumer)
        elif consumer.timer is None:
            consumer.timer = asyncio.get_running_loop().call_later(
                self.ACK_LINGER, self._flush, consumer)

    def _settling(self, delivery: Delivery) -> tuple[_Consumer, Incoming]:
        message: Incoming = delivery.token
        consumer = self._consumers.get(delivery.queue)
        if consumer is None or not consumer.current(message):
            raise _unsettled(delivery.queue)
        return consumer, message

    def _flush(self, consumer: _Consumer) -> None:
        """Send the acks waiting in ``consumer``: written to its FrameReader at once, or
        through aiormq in a task, in order."""
        if consumer.timer is not None:
            consumer.timer.cancel()
            consumer.timer = None
        tags, consumer.acks = consumer.acks, []
        raw = consumer.raw
        if not tags or raw is None or raw.is_closed:
            return
        low = min(consumer.outstanding, default=None)
        below = [t for t in tags if low is None or t < low]
        above = [t for t in tags if low is not None and t > low]
        if consumer.frames is not None:
            if not consumer.frames.write(raw.number, ack_frames(raw.number, below, above)):
                log.info("acks for %s were not sent (its channel closed; the broker will "
                         "deliver those messages again)", consumer.name)
            return
        task = asyncio.ensure_future(self._send_acks(consumer, raw, below, above))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _send_acks(self, consumer: _Consumer, raw: RawChannel, below: list[int],
                         above: list[int]) -> None:
        try:
            async with consumer.settling:
                if below:
                    await raw.basic_ack(max(below), multiple=len(below) > 1, wait=False)
                for tag in above:
                    await raw.basic_ack(tag, wait=False)
        except _FOREIGN as exc:
            log.info("acks for %s were not sent (its channel closed; the broker will "
                     "deliver those messages again): %s", consumer.name, exc)

    async def _flush_all(self) -> None:
        """Send every waiting ack and wait until they are handed to the connection."""
        for consumer in self._consumers.values():
            self._flush(consumer)
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery) -> None:
        # An input from a channel that is gone is delivered again by the broker:
        # publishing what it produced now would only duplicate that.
        self._settling(delivery)
        await self.send(messages)
        await self.ack(delivery)

    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        if delay <= 0:
            await self._requeue(delivery)
            return
        self._settling(delivery)  # as in publish_and_ack: no delayed copy of such a one
        message: Incoming = delivery.token
        headers = {**_own_headers(message.headers),
                   _DUE: int((time.time() + delay) * 1000), _PRIOR: delivery.delivery_count}
        try:
            await self._publish_all([(self.queue_name(delivery.queue), delivery.body, headers)])
        except TransportError as exc:
            # A held message has no lease to run out: give it back now rather than keep it
            # until the connection dies.
            await self._requeue(delivery)
            raise TransportError(f"delaying a message failed, requeued at once: {exc}") \
                from exc
        await self.ack(delivery)

    async def _requeue(self, delivery: Delivery) -> None:
        consumer, message = self._settling(delivery)
        tag = message.delivery_tag
        consumer.outstanding.discard(tag)
        if consumer.frames is not None:
            # Written now, ahead of acks still lingering: none of those covers this tag,
            # which left ``outstanding`` before any later multiple ack is computed.
            if not consumer.frames.write(message.channel.number,
                                         nack_frame(message.channel.number, tag, requeue=True)):
                raise _unsettled(delivery.queue)
            return
        try:
            async with consumer.settling:
                await message.channel.basic_nack(tag, requeue=True, wait=False)
        except _FOREIGN as exc:
            raise _unsettled(delivery.queue, exc) from exc

    async def extend(self, delivery: Delivery, *, visibility: float) -> None:
        """Nothing to do: a RabbitMQ lease lasts as long as the consumer's channel."""

    async def stats(self, queue: str) -> QueueStats:
        name = self.queue_name(queue)
        try:
            if self._stats_ch is None or self._stats_ch.is_closed:
                await self._channel()
                assert self._conn is not None
                self._stats_ch = await self._conn.channel(publisher_confirms=False)
            # The underlying channel: aio-pika's robust channel remembers declared
            # queues and would not ask the broker again.
            underlay = await self._stats_ch.get_underlay_channel()
            declared = await underlay.queue_declare(name, passive=True)
        except _FOREIGN as exc:
            self._stats_ch = None  # a failed passive declare closes the channel
            raise TransportError(f"cannot read the depth of {name!r}: {exc}") from exc
        unacked = await self._management_unacked(name)
        if unacked is None:
            await self._watch_reports()
            unacked = self._held(queue) + self._reports.total(queue)
        return QueueStats(depth=int(declared.message_count or 0), in_flight=unacked)

    def _held(self, queue: str) -> int:
        """What this transport holds unacked: leased, and prefetched but not yet taken."""
        consumer = self._consumers.get(queue)
        return len(consumer.outstanding) if consumer else 0

    async def _report_loop(self) -> None:
        while True:
            await self._report()
            await asyncio.sleep(_REPORT_EVERY)

    async def _report(self, *, final: bool = False) -> None:
        """Tell the mesh's ``stats`` readers what this transport holds (see
        :class:`_InFlightReports`); best effort, a lost report only ages out."""
        try:
            if self._inflight_ex is None:
                # Not on the publishing channel: its publishes are counted for confirms,
                # and these best-effort reports want none.
                await self._channel()
                assert self._conn is not None
                if self._report_ch is None or self._report_ch.is_closed:
                    self._report_ch = await self._conn.channel(publisher_confirms=False)
                self._inflight_ex = await self._report_ch.declare_exchange(
                    self._inflight_name, aio_pika.ExchangeType.FANOUT, durable=True)
            exchange = self._inflight_ex
            for queue in list(self._consumers):
                held = 0 if final else self._held(queue)
                body = json.dumps({"c": self._id, "q": queue, "n": held}).encode()
                await exchange.publish(aio_pika.Message(body), routing_key="", mandatory=False)
        except (TransportError, *_FOREIGN):
            return

    async def _watch_reports(self) -> None:
        if self._watching:
            return
        await self._channel()
        assert self._conn is not None
        try:
            channel = await self._conn.channel(publisher_confirms=False)
            exchange = await channel.declare_exchange(
                self._inflight_name, aio_pika.ExchangeType.FANOUT, durable=True)
            inbox = await channel.declare_queue(exclusive=True, auto_delete=True)
            await inbox.bind(exchange)
            await inbox.consume(self._reports.on_report, no_ack=True)
        except _FOREIGN as exc:
            raise TransportError(f"cannot listen for in-flight reports: {exc}") from exc
        self._watching = True

    async def _management_unacked(self, name: str) -> int | None:
        """Unacked count from the management API, or None where it does not answer."""
        if self.management_url is None or time.monotonic() < self._mgmt_down_until:
            return None
        parsed = urllib.parse.urlparse(self.url)
        vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
        url = (f"{self.management_url.rstrip('/')}/api/queues/"
               f"{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}")
        auth = base64.b64encode(
            f"{urllib.parse.unquote(parsed.username or 'guest')}:"
            f"{urllib.parse.unquote(parsed.password or 'guest')}".encode()).decode()

        def fetch() -> int:
            request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
            with urllib.request.urlopen(request, timeout=2) as response:
                return int(json.load(response).get("messages_unacknowledged", 0))

        try:
            return await asyncio.to_thread(fetch)
        except (OSError, ValueError):
            self._mgmt_down_until = time.monotonic() + _MGMT_RETRY
            return None

    async def _stop_reporting(self) -> None:
        """Stop the in-flight reports, with a last one saying this transport holds none."""
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
            if self._inflight_ex is not None:
                with contextlib.suppress(*_FOREIGN):
                    await asyncio.wait_for(self._report(final=True), 1.0)
        self._inflight_ex = None

    async def close(self) -> None:
        with contextlib.suppress(*_FOREIGN):
            await asyncio.wait_for(self._flush_all(), 5.0)
        await self._stop_reporting()
        self._watching = False
        conn, self._conn, self._pub, self._stats_ch = self._conn, None, None, None
        self._pub_raw, self._pub_frames, self._confirms = None, None, None
        self._report_ch = None
        self._consumers.clear()
        self._delay_exchanges.clear()
        if conn is not None:
            try:
                await conn.close()
            except _FOREIGN:
                pass

    async def delete_queues(self, actors: list[str]) -> None:
        """Delete the work, dead-letter and delay queues of ``actors`` and the mesh's
        exchanges (tests, teardown)."""
        await self._stop_reporting()
        channel = await self._channel()
        try:
            for actor in actors:
                await channel.queue_delete(self.queue_name(actor))
                await channel.queue_delete(self.queue_name(actor) + "-dlq")
            for class_ms in DELAY_CLASSES_MS:
                await channel.queue_delete(self._delay_name(class_ms))
                await channel.exchange_delete(self._delay_name(class_ms))
            await channel.exchange_delete(self._inflight_name)
        except _FOREIGN as exc:
            raise TransportError(f"deleting queues failed: {exc}") from exc

    def __repr__(self) -> str:
        return f"RabbitMQTransport({_redact(self.url)!r}, mesh={self.mesh!r})"


def _own_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers to carry into a re-published copy: the broker's dead-letter history
    (``x-death`` and friends) would grow with every step, so it is left behind."""
    return {k: v for k, v in headers.items()
            if not k.startswith(("x-death", "x-first-death", "x-last-death",
                                 "x-delivery-count"))}


def _unsettled(queue: str, cause: object = None) -> TransportError:
    return TransportError(f"cannot settle a message of {queue!r}: its channel closed (the "
                          "broker will redeliver it)" + (f": {cause}" if cause else ""))


def _refused(reason: str) -> TransportError:
    return TransportError(f"RabbitMQ refused a message (no such queue?): {reason}")


def _tag(message: DeliveredMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None, "a consumed message has a delivery tag"
    return tag


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _redact(url: str) -> str:
    parsed = urllib.parse.urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url

"""Consuming: deliveries into a buffer per queue, given to the runtime as it asks, and
settled (acked, requeued, re-parked) in batches.

A replica consumes each queue on a channel of its own, with manual acks and a prefetch
that follows what the runtime may hold (``receive``'s ``capacity``, see
:mod:`.prefetch`). Deliveries skip
aio-pika's message objects: they arrive on the raw channel's
:class:`~asya_agents.transports.rabbitmq.paths.WirePath`, decoded by the connection's
FrameReader or by aiormq, and wait in the consumer's buffer.

**Leases.** RabbitMQ has no visibility timeout: a delivered message belongs to its
channel until it is acked, or until the channel or connection dies, and then the broker
requeues it at once. So ``visibility`` is not used (the broker's ``consumer_timeout`` is
the backstop for a replica that hangs without dying). After ``connect_robust``
reconnects, messages delivered on the old channel can no longer be acked; they are
dropped from the local buffer and their ack fails with :class:`TransportError`, so a
stale tag is never acked on the new channel (no double-ack) and the broker redelivers
them (no loss; ``happy-end`` records an id once).

**Acks** wait up to ``ACK_LINGER`` to leave together as one ``multiple`` ack
(:meth:`Consuming.ack`). A message that arrives before it is due (a delay served in
steps, see :mod:`.topology`) is re-parked before the runtime sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aio_pika.abc import AbstractChannel, AbstractRobustChannel

from asya_agents.errors import TransportError
from asya_agents.transports.base import Delivery, Outgoing
from asya_agents.transports.rabbitmq.frames import Incoming
from asya_agents.transports.rabbitmq.paths import ChannelGone, WirePath, open_path
from asya_agents.transports.rabbitmq.prefetch import resize_to
from asya_agents.transports.rabbitmq.publish import Publisher
from asya_agents.transports.rabbitmq.reader import FrameReader
from asya_agents.transports.rabbitmq.session import FOREIGN, Session
from asya_agents.transports.rabbitmq.topology import DUE, Names, delay_class

__all__ = ["AckTiming", "Consumer", "Consuming"]

#: How many receives a re-parked (or delayed) message had before, carried over.
_PRIOR = "x-asya-receives"

log = logging.getLogger("asya.transports.rabbitmq")


class AckTiming(Protocol):
    """How long an ack waits for others to go with it, and how many make it go at once
    (read at each ack: the transport's class attributes, which a test may override)."""

    ACK_LINGER: float
    ACK_BATCH: int


@dataclass
class Consumer:
    """One consumed queue: its (robust) channel, the path of the raw channel under it
    now, and the messages the broker pushed to it.

    ``outstanding`` holds the delivery tags of the current raw channel that are neither
    acked nor nacked (taken by the runtime or still buffered); ``acks`` those whose ack
    waits for the next flush (see :meth:`Consuming.ack`), which ``timer`` will start."""

    name: str
    channel: AbstractChannel
    prefetch: int = 1
    buffer: asyncio.Queue[Incoming] = field(default_factory=asyncio.Queue)
    path: WirePath | None = None
    #: The consumer tag deliveries come under now ("" while none does).
    tag: str = ""
    outstanding: set[int] = field(default_factory=set)
    acks: list[int] = field(default_factory=list)
    timer: asyncio.TimerHandle | None = None
    #: What the channel may hold in all (the capacity it follows): ``prefetch`` plus
    #: the tags still held from consumers cancelled on the way (see :mod:`.prefetch`).
    target: int = 1
    orphans: set[int] = field(default_factory=set)
    #: Held while the consumer is replaced with one of another prefetch.
    resizing: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def frames(self) -> FrameReader | None:
        """The FrameReader that reads this consumer's deliveries, if one does."""
        return None if self.path is None else self.path.reader

    def delivered(self, message: Incoming) -> None:
        """A delivery, decoded by the connection's FrameReader or by aiormq."""
        path = self.path
        if path is not None and message.channel is path.raw:
            self.outstanding.add(message.delivery_tag)
        self.buffer.put_nowait(message)

    def current(self, message: Incoming) -> bool:
        """Whether ``message`` came on the live raw channel (so its tag may be settled)."""
        path = self.path
        return path is not None and message.channel is path.raw and not path.raw.is_closed


class Consuming:
    """The transport's consumers, one per queue, and the settling of what they got."""

    def __init__(self, session: Session, names: Names, publisher: Publisher, *,
                 own_id: str, timing: AckTiming, on_consumer: Callable[[], None]) -> None:
        self._session = session
        self._names = names
        self._publisher = publisher
        self._id = own_id
        self._timing = timing
        self._on_consumer = on_consumer
        self._consumes = 0
        self.consumers: dict[str, Consumer] = {}

    def held(self, queue: str) -> int:
        """What this transport holds unacked: leased, and prefetched but not yet taken."""
        consumer = self.consumers.get(queue)
        return len(consumer.outstanding) if consumer else 0

    def forget(self) -> None:
        """The connection is closed: consume again when next asked."""
        self.consumers.clear()

    # -- consuming ----------------------------------------------------------------

    async def _consumer(self, queue: str, prefetch: int) -> Consumer:
        if queue not in self.consumers:
            await self._session.channel()
            channel = await self._session.open_channel()
            consumer = Consumer(self._names.queue(queue), channel, max(prefetch, 1),
                                target=max(prefetch, 1))
            try:
                await channel.set_qos(prefetch_count=consumer.prefetch)
                await channel.declare_queue(consumer.name, passive=True)
                await self._consume(consumer)
            except FOREIGN as exc:
                raise TransportError(f"cannot consume {consumer.name!r}: {exc}") from exc
            # After connect_robust reopens the channel (and its prefetch), consume again
            # on the new raw channel.
            if isinstance(channel, AbstractRobustChannel):
                channel.reopen_callbacks.add(lambda _sender: self._reconsume(consumer))
            self.consumers[queue] = consumer
            self._on_consumer()
        return self.consumers[queue]

    async def _reconsume(self, consumer: Consumer) -> None:
        """Consume again on a restored channel. aio-pika drops whatever a reopen
        callback raises, so a failure is logged here: a channel that closed again is
        restored (and this runs again), but any other failure leaves the queue without
        this consumer, and that must not be silent."""
        try:
            await self._consume(consumer)
        except FOREIGN as exc:
            path = consumer.path
            if path is not None and not path.raw.is_closed:
                log.error("consuming %s again after a reconnect failed: %s", consumer.name,
                          exc)

    async def _consume(self, consumer: Consumer) -> None:
        """Consume on the channel's raw channel, through the path picked for it."""
        raw = await consumer.channel.get_underlay_channel()
        if consumer.timer is not None:
            consumer.timer.cancel()  # acks for the lost channel: the broker requeued those
        consumer.outstanding, consumer.acks, consumer.timer = set(), [], None
        consumer.orphans = set()
        consumer.path = open_path(raw, label=consumer.name)
        await self._start(consumer, consumer.path)

    async def _start(self, consumer: Consumer, path: WirePath) -> None:
        self._consumes += 1
        tag = f"asya-{self._id}-{self._consumes}"
        await path.consume(consumer.name, tag, consumer)
        consumer.tag = tag

    async def follow(self, consumer: Consumer, capacity: int) -> None:
        """Make what ``consumer`` may hold follow ``capacity`` (see :mod:`.prefetch`):
        cancel it, start it again with the new prefetch, less its orphans."""
        capacity = max(capacity, 1)
        if consumer.path is None or consumer.resizing.locked():
            return
        if consumer.orphans:
            consumer.orphans &= consumer.outstanding
        size = resize_to(capacity, target=consumer.target, prefetch=consumer.prefetch,
                         orphans=len(consumer.orphans), running=bool(consumer.tag))
        if size is None:
            return
        async with consumer.resizing:
            await self._resize(consumer, size)

    async def _resize(self, consumer: Consumer, capacity: int) -> None:
        path = consumer.path
        assert path is not None
        try:
            # A channel being restored after a reconnect waits for that first.
            async with asyncio.timeout(self._session.timeout):
                if consumer.tag:
                    await path.cancel(consumer.tag)
                    consumer.tag = ""  # no consumer until the next one starts
                consumer.orphans = set(consumer.outstanding)
                prefetch = max(1, capacity - len(consumer.orphans))
                await consumer.channel.set_qos(prefetch_count=prefetch)
                await self._start(consumer, path)
        except FOREIGN as exc:
            raise TransportError(f"cannot change what {consumer.name!r} may hold to "
                                 f"{capacity}: {exc}") from exc
        consumer.prefetch, consumer.target = prefetch, capacity

    async def receive(self, queue: str, *, max_messages: int, wait: float,
                      capacity: int | None = None) -> list[Delivery]:
        consumer = await self._consumer(queue, capacity or max_messages)
        if capacity is not None:
            await self.follow(consumer, capacity)
        deadline = time.monotonic() + wait
        got: list[Delivery] = []
        while not got:
            batch = await _take(consumer.buffer, max_messages, deadline)
            if not batch:
                return got
            for message in batch:
                delivery = await self._admit(queue, consumer, message)
                if delivery is not None:
                    got.append(delivery)
        return got

    async def _admit(self, queue: str, consumer: Consumer,
                     message: Incoming) -> Delivery | None:
        """A delivery for the runtime, or None for a stale or not-yet-due message."""
        if not consumer.current(message):
            return None  # from a channel lost before a reconnect: the broker requeued it
        headers = message.headers
        if not headers:
            return Delivery(queue, message.body, message, 2 if message.redelivered else 1)
        due = headers.get(DUE)
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
            await self._publisher.publish_all([(message.routing_key, message.body, headers)])
        except (TransportError, *FOREIGN):
            # Given back, not held: it comes back and is re-parked then.
            with contextlib.suppress(TransportError):
                await self._requeue(delivery)
            return
        with contextlib.suppress(TransportError):  # its channel closed: it comes back
            await self.ack(delivery)

    # -- settling -----------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery``: it is settled here at once, and its ``basic.ack`` waits up
        to ``ACK_LINGER`` seconds (or until ``ACK_BATCH``, or half the prefetch, are
        waiting) for others to go with it: one ack with ``multiple`` covers every tag
        below the lowest one still outstanding, and the rest go one by one. Fewer
        frames, and for a quorum queue fewer commands in its log; the broker's CPU per
        message drops with them.

        A message is only acked after what it produced was confirmed, so a crash in
        that window only means the broker delivers it again (at-least-once; happy-end
        records an id once). Closing the transport sends what is waiting."""
        consumer, message = self.settling(delivery)
        tag = message.delivery_tag
        consumer.outstanding.discard(tag)
        consumer.acks.append(tag)
        # Unsent acks still count against the prefetch: past half of it, send them now
        # (at once for a prefetch of 1), so the broker keeps delivering.
        if len(consumer.acks) >= min(self._timing.ACK_BATCH, max(1, consumer.prefetch // 2)):
            self._flush(consumer)
        elif consumer.timer is None:
            consumer.timer = asyncio.get_running_loop().call_later(
                self._timing.ACK_LINGER, self._flush, consumer)

    def settling(self, delivery: Delivery) -> tuple[Consumer, Incoming]:
        """The consumer of ``delivery`` and its message, or TransportError when it came
        on a channel that is gone (the broker delivers it again)."""
        message: Incoming = delivery.token
        consumer = self.consumers.get(delivery.queue)
        if consumer is None or not consumer.current(message):
            raise _unsettled(delivery.queue)
        return consumer, message

    def _flush(self, consumer: Consumer) -> None:
        """Send the acks waiting in ``consumer``, through its path, in order."""
        if consumer.timer is not None:
            consumer.timer.cancel()
            consumer.timer = None
        tags, consumer.acks = consumer.acks, []
        path = consumer.path
        if not tags or path is None or path.raw.is_closed:
            return
        low = min(consumer.outstanding, default=None)
        below = [t for t in tags if low is None or t < low]
        above = [t for t in tags if low is not None and t > low]
        path.ack(below, above)

    async def flush_all(self) -> None:
        """Send every waiting ack and wait until they are handed to the connection."""
        for consumer in self.consumers.values():
            self._flush(consumer)
        for consumer in self.consumers.values():
            if consumer.path is not None:
                await consumer.path.drained()

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery, *,
                              max_bytes: int) -> None:
        # An input from a channel that is gone is delivered again by the broker:
        # publishing what it produced now would only duplicate that.
        self.settling(delivery)
        await self._publisher.send(messages, max_bytes=max_bytes)
        await self.ack(delivery)

    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        if delay <= 0:
            await self._requeue(delivery)
            return
        self.settling(delivery)  # as in publish_and_ack: no delayed copy of such a one
        message: Incoming = delivery.token
        headers = {**_own_headers(message.headers),
                   DUE: int((time.time() + delay) * 1000), _PRIOR: delivery.delivery_count}
        try:
            await self._publisher.publish_all(
                [(self._names.queue(delivery.queue), delivery.body, headers)])
        except TransportError as exc:
            # A held message has no lease to run out: give it back now rather than keep it
            # until the connection dies.
            await self._requeue(delivery)
            raise TransportError(f"delaying a message failed, requeued at once: {exc}") \
                from exc
        await self.ack(delivery)

    async def _requeue(self, delivery: Delivery) -> None:
        consumer, message = self.settling(delivery)
        tag = message.delivery_tag
        consumer.outstanding.discard(tag)
        assert consumer.path is not None  # settling() found it current
        try:
            await consumer.path.requeue(tag)
        except ChannelGone as exc:
            raise _unsettled(delivery.queue, str(exc)) from exc


async def _take(buffer: asyncio.Queue[Incoming], most: int, deadline: float
                ) -> list[Incoming]:
    """Up to ``most`` buffered messages, waiting until ``deadline`` for the first."""
    if buffer.empty():
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.001)):
                first = await buffer.get()
        except TimeoutError:
            return []
    else:
        first = buffer.get_nowait()
    batch = [first]
    while len(batch) < most and not buffer.empty():
        batch.append(buffer.get_nowait())
    return batch


def _own_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers to carry into a re-published copy: the broker's dead-letter history
    (``x-death`` and friends) would grow with every step, so it is left behind."""
    return {k: v for k, v in headers.items()
            if not k.startswith(("x-death", "x-first-death", "x-last-death",
                                 "x-delivery-count"))}


def _unsettled(queue: str, cause: object = None) -> TransportError:
    return TransportError(f"cannot settle a message of {queue!r}: its channel closed (the "
                          "broker will redeliver it)" + (f": {cause}" if cause else ""))


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


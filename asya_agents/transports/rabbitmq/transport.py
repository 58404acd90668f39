"""The RabbitMQ transport (aio-pika): a mesh that outgrows one machine, on a broker.

:class:`RabbitMQTransport` is the transport protocol (and its admin side) as a thin
façade over the parts of this package, each explained in its own module:

- :mod:`.session`: one robust connection (``connect_robust``), opened on first use;
- :mod:`.topology`: each actor's durable quorum queue ``PREFIX-MESH-ACTOR``, its
  dead-letter queue, and the delay ladder that serves retries without a plugin;
- :mod:`.publish`: persistent, ``mandatory`` publishes, each awaited until confirmed;
- :mod:`.consume`: a channel per consumed queue with manual acks and a prefetch that
  follows what the runtime may hold (``receive``'s ``capacity``); batched acks; no
  leases (a delivery belongs to its channel until it is settled or the channel dies);
- :mod:`.inflight`: ready and unacked counts for scaling;
- :mod:`.paths`: how the hot frames of a channel travel: through the connection's
  :mod:`.reader` (``amqp://``) or through aiormq (``amqps://``, or
  ``frame_reader=False``), with the same semantics; the conformance suite runs on both.
  :mod:`.frames` and :mod:`.confirms` are the codec of the first; :mod:`.internals`
  is the one module that reaches into aio-pika's and aiormq's internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

from asya_agents.transports.base import Delivery, Outgoing, QueueStats
from asya_agents.transports.rabbitmq.confirms import Confirms
from asya_agents.transports.rabbitmq.consume import Consumer, Consuming
from asya_agents.transports.rabbitmq.inflight import InFlight
from asya_agents.transports.rabbitmq.publish import Publisher
from asya_agents.transports.rabbitmq.session import FOREIGN, Session, redact
from asya_agents.transports.rabbitmq.topology import Names, Topology

if TYPE_CHECKING:
    from asya_agents.settings import RabbitMQSettings

__all__ = ["RabbitMQTransport"]


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
        self.url, self.mesh, self.prefix = url, mesh, prefix
        self.management_url = management_url or None
        self.max_message_bytes = max_message_bytes
        #: The quorum queues' ``x-delivery-limit``: returned deliveries after which a
        #: message moves to the actor's ``-dlq`` (the protocol's ``delivery_limit``).
        self.delivery_limit = delivery_limit
        #: Deliveries, confirms and acks through the connection's FrameReader (the hot
        #: path, ``amqp://``); False leaves every frame to aiormq, as on ``amqps://``.
        self._frame_reader = frame_reader
        self._id = uuid.uuid4().hex[:12]
        self._names = names = Names(prefix, mesh)
        self._session = Session(url, name=names.connection, timeout=connect_timeout,
                                frame_reader=frame_reader)
        self._topology = Topology(self._session, names, delivery_limit=delivery_limit)
        self._publisher = Publisher(self._session, self._topology, own_id=self._id)
        self._consuming = Consuming(self._session, names, self._publisher, own_id=self._id,
                                    timing=self,
                                    on_consumer=lambda: self._inflight.start())
        self._inflight = InFlight(self._session, names, own_id=self._id,
                                  management_url=self.management_url,
                                  held=self._consuming.held,
                                  queues=lambda: self._consuming.consumers)

    @classmethod
    def from_settings(cls, settings: RabbitMQSettings, *, mesh: str) -> RabbitMQTransport:
        return cls(settings.url, mesh=mesh, prefix=settings.queue_prefix,
                   management_url=settings.management_url,
                   max_message_bytes=settings.max_message_bytes,
                   delivery_limit=settings.delivery_limit,
                   frame_reader=settings.frame_reader)

    def queue_name(self, actor: str) -> str:
        return self._names.queue(actor)

    @property
    def connection_name(self) -> str:
        """Shown by ``rabbitmqctl list_connections client_properties``: which mesh."""
        return self._names.connection

    # -- the transport protocol ---------------------------------------------------

    async def send(self, messages: list[Outgoing]) -> None:
        await self._publisher.send(messages, max_bytes=self.max_message_bytes)

    async def receive(
        self, queue: str, *, max_messages: int, wait: float, visibility: float,
        capacity: int | None = None,
    ) -> list[Delivery]:
        """Deliveries of ``queue``; ``visibility`` is not used: a RabbitMQ lease lasts
        as long as the consumer's channel. ``capacity`` sets the consumer's prefetch
        (when it changes; else the first ``max_messages``)."""
        return await self._consuming.receive(queue, max_messages=max_messages, wait=wait,
                                             capacity=capacity)

    async def ack(self, delivery: Delivery) -> None:
        """Ack ``delivery`` (its ``basic.ack`` lingers, see :meth:`Consuming.ack`)."""
        await self._consuming.ack(delivery)

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery) -> None:
        await self._consuming.publish_and_ack(messages, delivery,
                                              max_bytes=self.max_message_bytes)

    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        await self._consuming.nack(delivery, delay=delay)

    async def extend(self, delivery: Delivery, *, visibility: float) -> None:
        """Nothing to do: a RabbitMQ lease lasts as long as the consumer's channel."""

    async def close(self) -> None:
        with contextlib.suppress(*FOREIGN):
            await asyncio.wait_for(self._consuming.flush_all(), 5.0)
        await self._inflight.close()
        self._publisher.forget()
        self._consuming.forget()
        self._topology.forget()
        await self._session.close()

    # -- admin --------------------------------------------------------------------

    async def ensure_queues(self, queues: list[str]) -> None:
        await self._topology.ensure_queues(queues)

    async def stats(self, queue: str) -> QueueStats:
        return await self._inflight.stats(queue)

    async def delete_queues(self, actors: list[str]) -> None:
        """Delete the work, dead-letter and delay queues of ``actors`` and the mesh's
        exchanges (tests, teardown)."""
        await self._inflight.stop()
        await self._topology.delete_queues(actors)

    # -- the parts, as tests look at them ------------------------------------------

    @property
    def _consumers(self) -> dict[str, Consumer]:
        return self._consuming.consumers

    @property
    def _confirms(self) -> Confirms | None:
        return self._publisher.confirms

    def _delay_name(self, class_ms: int) -> str:
        return self._names.delay(class_ms)

    def __repr__(self) -> str:
        return f"RabbitMQTransport({redact(self.url)!r}, mesh={self.mesh!r})"

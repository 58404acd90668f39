"""The mesh's queues and exchanges on the broker: names, arguments, declarations, and
the delay ladder.

**Work queues.** Each actor has one durable **quorum queue**, ``PREFIX-MESH-ACTOR``.

**Dead letters.** A work queue's ``x-delivery-limit`` (quorum queues count
redeliveries in ``x-delivery-count``) moves a message that keeps killing its consumers
to ``PREFIX-MESH-ACTOR-dlq``. The delivery count is surfaced on ``Delivery``.

**Delays** (retries, ``nack(delay=...)``) without the delayed-message plugin: a ladder
of delay classes (:data:`DELAY_CLASSES_MS`), each a durable classic queue
``PREFIX-MESH--delay-MS`` with a fixed ``x-message-ttl`` that dead-letters to the
default exchange. A delayed message is published through that class's fanout exchange
with the target work queue as its routing key, so on expiry it lands back on its own
work queue. Since all messages in a class share one TTL, expiry order is queue order
(no head-of-line blocking). A delay that is not a class is served in steps: the message
carries its due time (:data:`DUE`, epoch ms), and a consumer that receives it early
re-parks it in the largest class that fits the rest (:func:`delay_class`), before the
runtime ever sees it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika

from asya_agents.errors import TransportError
from asya_agents.transports.rabbitmq.session import FOREIGN, Session

__all__ = ["DELAY_CLASSES_MS", "DUE", "Names", "Topology", "delay_class"]

#: The delay ladder, in milliseconds. Longer delays are served in steps.
DELAY_CLASSES_MS = (100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
                    300_000, 900_000, 3_600_000)
#: The header of a delayed message: when it is due (epoch ms).
DUE = "x-asya-due"


def delay_class(remaining_ms: float) -> int | None:
    """The largest class that fits ``remaining_ms``; None when it is due now."""
    if remaining_ms < DELAY_CLASSES_MS[0] / 2:
        return None
    fitting = [c for c in DELAY_CLASSES_MS if c <= remaining_ms]
    return fitting[-1] if fitting else DELAY_CLASSES_MS[0]


@dataclass(frozen=True)
class Names:
    """The names of a mesh's objects on the broker, all under ``PREFIX-MESH``."""

    prefix: str
    mesh: str

    def queue(self, actor: str) -> str:
        return f"{self.prefix}-{self.mesh}-{actor}"

    def delay(self, class_ms: int) -> str:
        return f"{self.prefix}-{self.mesh}--delay-{class_ms}"

    @property
    def inflight(self) -> str:
        return f"{self.prefix}-{self.mesh}--inflight"

    @property
    def connection(self) -> str:
        """Shown by ``rabbitmqctl list_connections client_properties``: which mesh."""
        return f"asya {self.prefix}-{self.mesh}"


class Topology:
    """Declares (and deletes) the mesh's queues through the session's channel."""

    def __init__(self, session: Session, names: Names, *, delivery_limit: int) -> None:
        self._session = session
        self.names = names
        self.delivery_limit = delivery_limit
        self._delay_exchanges: dict[int, str] = {}

    def work_args(self, actor: str) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.names.queue(actor) + "-dlq",
        }

    async def ensure_queues(self, queues: list[str]) -> None:
        channel = await self._session.channel()
        try:
            for actor in queues:
                await channel.declare_queue(self.names.queue(actor) + "-dlq", durable=True,
                                            arguments={"x-queue-type": "quorum"})
                await channel.declare_queue(self.names.queue(actor), durable=True,
                                            arguments=self.work_args(actor))
        except FOREIGN as exc:
            raise TransportError(f"declaring queues {queues} failed: {exc}") from exc

    async def delay_exchange(self, class_ms: int) -> str:
        """The name of the delay class's exchange, declared (with its queue) on first
        use; the robust channel declares them again after a reconnect."""
        if class_ms not in self._delay_exchanges:
            channel = await self._session.channel()
            name = self.names.delay(class_ms)
            exchange = await channel.declare_exchange(name, aio_pika.ExchangeType.FANOUT,
                                                      durable=True)
            queue = await channel.declare_queue(name, durable=True, arguments={
                "x-message-ttl": class_ms, "x-dead-letter-exchange": ""})
            await queue.bind(exchange)
            self._delay_exchanges[class_ms] = name
        return self._delay_exchanges[class_ms]

    async def delete_queues(self, actors: list[str]) -> None:
        """Delete the work, dead-letter and delay queues of ``actors`` and the mesh's
        exchanges (tests, teardown)."""
        channel = await self._session.channel()
        try:
            for actor in actors:
                await channel.queue_delete(self.names.queue(actor))
                await channel.queue_delete(self.names.queue(actor) + "-dlq")
            for class_ms in DELAY_CLASSES_MS:
                await channel.queue_delete(self.names.delay(class_ms))
                await channel.exchange_delete(self.names.delay(class_ms))
            await channel.exchange_delete(self.names.inflight)
        except FOREIGN as exc:
            raise TransportError(f"deleting queues failed: {exc}") from exc

    def forget(self) -> None:
        """The connection is closed: declare the delay classes again when next used."""
        self._delay_exchanges.clear()

"""The transport protocol: the handful of async methods every queue backend provides.

It comes in two parts. :class:`Transport` is the data plane, all that a replica's
runtime needs: send, receive (a lease), ack, nack, extend a lease, publish-and-ack.
:class:`TransportAdmin` is the small admin protocol of whoever owns the queues (the
supervisor, the command line, the operator, tests): declare them, read their counts,
delete them. Every backend implements both (:class:`Backend`). The runtime, the
supervisor, the CLI and the conformance suite speak only these protocols. One module per
implementation (``embedded``, ``rabbitmq``, ``sqs``); none imports another, and each
translates its library's errors into :mod:`asya_agents.errors` where they enter.

Semantics every implementation keeps (checked by ``tests/transports/``):

- ``send`` returns only once the broker accepted every message (durable).
- ``receive`` leases messages: a leased message is invisible to other consumers until it
  is acked, nacked, or its visibility timeout passes (then it is delivered again).
- ``nack(delay=d)`` makes the message visible again after ``d`` seconds, with no
  consumer holding it meanwhile: this is how retries wait without a sleeping replica.
- ``stats`` counts ready (``depth``), leased (``in_flight``) and ``delayed`` messages.
- ``Delivery.delivery_count`` says how often this copy was delivered (a lease that
  ended without an ack, a replica that died holding it, a give-back: each counts); the
  runtime ends a message past the actor's ``maxDeliveries`` at ``error-end``.
- ``delivery_limit`` is the broker's own count after which it moves a message to the
  actor's dead-letter queue, :func:`dead_letter_queue` (RabbitMQ's quorum
  ``x-delivery-limit``, SQS's redrive ``maxReceiveCount``): a backstop above every
  actor's ``maxDeliveries``. ``None`` where the broker has none (embedded).
- ``receive(capacity=n)`` tells a consumer how many messages it may hold in all (the
  live concurrency, or what its batches take); a broker that pushes messages ahead of
  ``receive`` (RabbitMQ's prefetch) follows it, the others need not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["DLQ_SUFFIX", "Backend", "Delivery", "Outgoing", "QueueStats", "Transport",
           "TransportAdmin", "dead_letter_queue"]

#: A broker's dead-letter queue of actor ``a`` is the queue named ``a-dlq`` (queue names
#: are actor names: ``PREFIX-MESH-a-dlq`` on the broker).
DLQ_SUFFIX = "-dlq"


def dead_letter_queue(actor: str) -> str:
    """The queue name, as the transports take it, of ``actor``'s dead-letter queue."""
    return actor + DLQ_SUFFIX


@dataclass(frozen=True)
class Outgoing:
    """A message to publish: its queue (an actor name), body and optional delay."""

    queue: str
    body: bytes
    delay: float = 0.0


@dataclass
class Delivery:
    """A leased message. ``token`` is the transport's own handle for ack / nack."""

    queue: str
    body: bytes
    token: Any
    delivery_count: int = 1


@dataclass(frozen=True)
class QueueStats:
    depth: int
    in_flight: int
    delayed: int = 0
    #: Consumers of the queue where the broker tells (RabbitMQ); ``None``: unknown.
    consumers: int | None = field(default=None, compare=False)

    @property
    def total(self) -> int:
        """What KEDA scales on: ready plus unacked messages."""
        return self.depth + self.in_flight


@runtime_checkable
class Transport(Protocol):
    """The data plane: what a replica does with the messages of its queue. Queue names
    are actor names."""

    name: str
    max_message_bytes: int

    @property
    def delivery_limit(self) -> int | None:
        """Deliveries after which the broker dead-letters a message, or ``None``."""
        ...

    async def send(self, messages: list[Outgoing]) -> None: ...

    async def receive(
        self, queue: str, *, max_messages: int, wait: float, visibility: float,
        capacity: int | None = None,
    ) -> list[Delivery]:
        """Lease up to ``max_messages``, waiting up to ``wait`` seconds for the first;
        ``capacity``: how many this consumer may hold in all (see the module)."""
        ...

    async def ack(self, delivery: Delivery) -> None: ...

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery) -> None:
        """Send ``messages``, then ack ``delivery`` only once they were all accepted."""
        ...

    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None: ...

    async def extend(self, delivery: Delivery, *, visibility: float) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class TransportAdmin(Protocol):
    """The admin protocol: declare, count and delete a mesh's queues."""

    async def ensure_queues(self, queues: list[str]) -> None:
        """Declare ``queues`` (idempotent), with whatever each backend keeps beside a
        work queue (dead-letter queues, delay classes)."""
        ...

    async def stats(self, queue: str) -> QueueStats: ...

    async def delete_queues(self, queues: list[str]) -> None:
        """Delete ``queues`` and what the backend keeps beside them, messages included
        (teardown, tests)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Backend(Transport, TransportAdmin, Protocol):
    """A queue backend: both parts, what :func:`~asya_agents.transports.open_transport`
    returns."""

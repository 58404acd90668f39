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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Backend", "Delivery", "Outgoing", "QueueStats", "Transport", "TransportAdmin"]


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

    async def send(self, messages: list[Outgoing]) -> None: ...

    async def receive(
        self, queue: str, *, max_messages: int, wait: float, visibility: float
    ) -> list[Delivery]: ...

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

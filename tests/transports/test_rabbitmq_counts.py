"""RabbitMQ only: in-flight counts without the management plugin.

AMQP reports ready messages only. The supervisor's transport never holds the messages
its replicas hold, so consumers report what they hold on the mesh's ``--inflight``
exchange and ``stats`` sums the fresh reports. Here one transport consumes and another
(as the supervisor would) reads the counts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from asya_agents.transports.base import Outgoing
from tests.conftest import require_service
from tests.transports.conftest import RABBIT_URL, RUN_PREFIX

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Any, Any]]:
    require_service("RabbitMQ", port=5672)
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    mesh = f"ct{uuid.uuid4().hex[:8]}"
    replica, supervisor = (RabbitMQTransport(RABBIT_URL, mesh=mesh, prefix=RUN_PREFIX,
                                             management_url=None) for _ in range(2))
    await supervisor.ensure_queues(["work"])
    try:
        yield replica, supervisor
    finally:
        await replica.close()
        await supervisor.delete_queues(["work"])
        await supervisor.close()


async def in_flight_becomes(t: Any, expected: int, *, patience: float = 6.0) -> int:
    """The supervisor polls, as it does every pollingInterval; the last value seen."""
    deadline = time.monotonic() + patience
    while True:
        seen = (await t.stats("work")).in_flight
        if seen == expected or time.monotonic() > deadline:
            return int(seen)
        await asyncio.sleep(0.2)  # reports arrive once a second


async def test_another_transport_sees_what_a_replica_holds(pair: tuple[Any, Any]) -> None:
    replica, supervisor = pair
    # Given five messages, two of them leased by a replica
    await replica.send([Outgoing("work", b"x") for _ in range(5)])
    assert (await supervisor.stats("work")).in_flight == 0
    held = await replica.receive("work", max_messages=2, wait=5, visibility=30)
    assert len(held) == 2
    # Then the supervisor's transport soon counts them in flight (ready ones are depth)
    assert await in_flight_becomes(supervisor, 2) == 2
    stats = await supervisor.stats("work")
    assert stats.depth + stats.in_flight == 5
    # When the replica acks them and goes away, the count drops to nothing
    for d in held:
        await replica.ack(d)
    await replica.close()
    assert await in_flight_becomes(supervisor, 0) == 0

"""RabbitMQ only: a connection the broker closes under a consumer loses nothing and
acks nothing twice.

The broker force-closes the transport's connection (``rabbitmqctl close_connection``,
as an operator or a broker restart would); aio-pika's robust connection comes back by
itself. A delivery from the lost channel cannot be acked any more (it fails with
TransportError rather than acking a stale tag on the new channel), and the broker
delivers that message again on the new one.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from asya_agents.errors import TransportError
from asya_agents.transports.base import Outgoing
from tests.conftest import SERVICE_SKIP, require_service
from tests.transports.conftest import rabbit_work_queue

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def rabbit() -> AsyncIterator[object]:
    require_service("RabbitMQ", port=5672)
    if shutil.which("rabbitmqctl") is None:
        pytest.skip(f"{SERVICE_SKIP} rabbitmqctl (to close connections as the broker)")
    async with rabbit_work_queue("rc") as t:
        yield t


def close_connections(name: str) -> int:
    listing = subprocess.run(["rabbitmqctl", "list_connections", "pid", "client_properties",
                              "-q"], capture_output=True, text=True, timeout=30).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if name in line]
    for pid in pids:
        subprocess.run(["rabbitmqctl", "close_connection", pid, "reconnect test"],
                       capture_output=True, timeout=30, check=True)
    return len(pids)


async def test_a_closed_connection_redelivers_and_never_double_acks(rabbit: object) -> None:
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    assert isinstance(rabbit, RabbitMQTransport)
    # Given a consumer holding one message
    await rabbit.send([Outgoing("work", b"held")])
    [held] = await rabbit.receive("work", max_messages=1, wait=5, visibility=30)
    # When the broker closes the connection under it
    closed = await asyncio.to_thread(close_connections, rabbit.connection_name)
    assert closed == 1
    # Then acking the old delivery fails instead of acking a stale tag...
    with pytest.raises(TransportError, match="redeliver"):
        await rabbit.ack(held)
    # ...and once reconnected, the same message arrives again, and can be acked
    deadline = time.monotonic() + 20
    again = []
    while not again and time.monotonic() < deadline:
        try:
            again = await rabbit.receive("work", max_messages=1, wait=1, visibility=30)
        except TransportError:
            await asyncio.sleep(0.2)  # still reconnecting
    assert [d.body for d in again] == [b"held"]
    assert again[0].delivery_count == 2
    await rabbit.ack(again[0])
    # and nothing else is left, so nothing was lost or duplicated
    assert await rabbit.receive("work", max_messages=1, wait=0.5, visibility=30) == []
    assert (await rabbit.stats("work")).total == 0

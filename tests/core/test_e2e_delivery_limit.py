"""End to end: a message that kills its replica on every delivery, under ``asya up``.

``tests/core/meshes/crashy`` has one actor, one replica, one message at a time, and a
handler that calls ``os._exit(1)`` on one payload (as a segfault or an OOM kill would end
the process). The real supervisor runs it as a subprocess and restarts the replica each
time. With ``maxDeliveries: 2`` the third delivery of that envelope goes to error-end
with reason ``delivery-limit``, once, and the envelopes sent behind it succeed. On
RabbitMQ a replica's death requeues at once (the quorum queue counts it); on the
embedded transport the lease runs out. On RabbitMQ, a message found in the actor's
dead-letter queue is swept into the result store by error-end, which the supervisor
scales up from zero for it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope
from asya_agents.stores import SQLiteResultStore
from asya_agents.transports.base import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import require_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CRASHY = Path(__file__).parent / "meshes" / "crashy"
QUEUES = ["fragile", "happy-end", "error-end"]


def _transport(kind: str, state: Path, prefix: str) -> Any:
    if kind == "embedded":
        return EmbeddedTransport(state / "queues.db")
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    return RabbitMQTransport("amqp://guest:guest@127.0.0.1:5672/", mesh="crashy",
                             prefix=prefix, management_url=None)


def push(kind: str, state: Path, prefix: str, messages: list[Outgoing]) -> None:
    async def go() -> None:
        t = _transport(kind, state, prefix)
        try:
            await t.ensure_queues(QUEUES)
            await t.send(messages)
        finally:
            await t.close()

    asyncio.run(go())


@pytest.fixture(params=["embedded", "rabbitmq"])
def up(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """``asya up`` of the crashy mesh on the transport; its kind, state folder, prefix."""
    kind, prefix = request.param, f"dl{uuid.uuid4().hex[:8]}"
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1",
           "ASYA_RABBITMQ_QUEUE_PREFIX": prefix, "ASYA_RABBITMQ_MANAGEMENT_URL": "",
           "ASYA_DLQ_SWEEP_INTERVAL": "0.5"}
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "asya_agents", "up", str(CRASHY), "--transport", kind,
             "--state-dir", str(tmp_path)],
            env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield kind, tmp_path, prefix
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if kind == "rabbitmq":
            asyncio.run(_delete(tmp_path, prefix))


async def _delete(state: Path, prefix: str) -> None:
    t = _transport("rabbitmq", state, prefix)
    try:
        await t.delete_queues(QUEUES)
    finally:
        await t.close()


def wait_ended(state: Path, ids: list[str], *, timeout: float = 90) -> SQLiteResultStore:
    store = SQLiteResultStore(state / "results.db")
    deadline = time.monotonic() + timeout
    while not all(w >= 1 - 1e-9 for w in store.ended_weight(ids).values()):
        if time.monotonic() > deadline:
            store.close()
            raise AssertionError((state / "up.log").read_text()[-3000:])
        time.sleep(0.1)
    return store


def test_a_message_that_kills_its_replica_ends_once_and_the_rest_goes_through(
    up: tuple[str, Path, str],
) -> None:
    kind, state, prefix = up
    if kind == "rabbitmq":
        # Given first a message the broker dead-lettered (straight into fragile-dlq),
        # before anything failed: error-end runs no replica yet
        dead = Envelope.create({"n": "dead-lettered"}, ["fragile"])
        push(kind, state, prefix, [Outgoing("fragile-dlq", dead.encode())])
        store = wait_ended(state, [dead.id])
        # Then error-end was scaled up for it and recorded it failed, delivery-limit
        swept = store.get(dead.id)
        store.close()
        assert swept is not None and swept.error is not None
        assert swept.status == "failed" and swept.error["reason"] == "delivery-limit"
        assert "'fragile-dlq'" in swept.error["message"]
    # Given an envelope that makes the one replica of `fragile` exit, and five behind it
    killer = Envelope.create({"crash": True}, ["fragile"])
    behind = [Envelope.create({"n": n}, ["fragile"]) for n in range(5)]
    push(kind, state, prefix, [Outgoing("fragile", e.encode()) for e in [killer, *behind]])
    # When the supervisor has run them (restarting the replica each time it died)
    store = wait_ended(state, [killer.id, *(e.id for e in behind)])
    failed, done = store.get(killer.id), [store.get(e.id) for e in behind]
    totals = store.totals()
    store.close()
    # Then the killer ended once at error-end with the reason and its count; the rest
    # succeeded
    assert failed is not None and failed.error is not None
    assert failed.status == "failed" and failed.error["reason"] == "delivery-limit"
    assert "delivered 3 times (maxDeliveries 2)" in failed.error["message"]
    assert failed.duplicates == 0 and totals.failed == 1 + (kind == "rabbitmq")
    assert [r.status if r else None for r in done] == ["succeeded"] * 5
    assert all(r is not None and r.payload["done"] for r in done)

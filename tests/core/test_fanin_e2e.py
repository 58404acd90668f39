"""End to end under ``asya up``: a gather replica SIGKILLed in the middle of a group, and
a child that kills its worker on every delivery.

``tests/core/meshes/fanin-kill`` splits a parent into 12 children; the gather's handler
kills its own replica with SIGKILL the first time it runs, when every child is recorded
and the group is claimed but nothing is published. The supervisor starts a new replica;
the claim runs out and the group is finished from the store: it ends once, whole, in
order, with the parent's id. On RabbitMQ the killed replica's unacked child comes back
at once, on the embedded transport when its lease runs out.

``tests/core/meshes/fanin-poison`` splits parents into children, one of which makes its
`work` replica call ``os._exit(1)`` at every delivery. With ``maxDeliveries: 2`` its
third delivery ends it by the delivery limit, and it goes on to its gather: the default
group fails at once with reason ``delivery-limit`` named, the ``partial`` one lists it and
gathers the rest; neither waits for its ``fanIn.timeout`` (an hour).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope
from asya_agents.transports.base import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import require_service
from tests.core.test_e2e_delivery_limit import wait_ended

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

MESH = Path(__file__).parent / "meshes" / "fanin-kill"
POISON = Path(__file__).parent / "meshes" / "fanin-poison"
QUEUES = {MESH: ["split", "gather", "happy-end", "error-end"],
          POISON: ["split", "work", "gather", "gather-partial", "happy-end", "error-end"]}


def _transport(kind: str, state: Path, prefix: str, mesh: Path) -> Any:
    if kind == "embedded":
        return EmbeddedTransport(state / "queues.db")
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    return RabbitMQTransport("amqp://guest:guest@127.0.0.1:5672/", mesh=mesh.name,
                             prefix=prefix, management_url=None)


def _push(kind: str, state: Path, prefix: str, *envelopes: Envelope,
          mesh: Path = MESH) -> None:
    async def go() -> None:
        t = _transport(kind, state, prefix, mesh)
        try:
            await t.ensure_queues(QUEUES[mesh])
            await t.send([Outgoing(e.route.curr, e.encode()) for e in envelopes])
        finally:
            await t.close()

    asyncio.run(go())


@contextlib.contextmanager
def _up(kind: str, tmp_path: Path, mesh: Path) -> Iterator[tuple[str, Path, str]]:
    prefix = f"fi{uuid.uuid4().hex[:8]}"
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1",
           "ASYA_RABBITMQ_QUEUE_PREFIX": prefix, "ASYA_RABBITMQ_MANAGEMENT_URL": ""}
    with open(tmp_path / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "asya_agents", "up", str(mesh), "--transport", kind,
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
            asyncio.run(_delete(tmp_path, prefix, mesh))


@pytest.fixture(params=["embedded", "rabbitmq"])
def up(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    with _up(request.param, tmp_path, MESH) as running:
        yield running


@pytest.fixture(params=["embedded", "rabbitmq"])
def up_poison(request: pytest.FixtureRequest,
              tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    with _up(request.param, tmp_path, POISON) as running:
        yield running


async def _delete(state: Path, prefix: str, mesh: Path) -> None:
    t = _transport("rabbitmq", state, prefix, mesh)
    try:
        await t.delete_queues(QUEUES[mesh])
    finally:
        await t.close()


def test_a_gather_killed_mid_group_still_ends_the_group_once(
        up: tuple[str, Path, str]) -> None:
    kind, state, prefix = up
    # Given a parent split into 12 children, whose gather dies the first time it runs
    marker = state / "merges.log"
    parent = Envelope.create({"n": 12, "marker": str(marker)}, ["split", "gather"])
    _push(kind, state, prefix, parent)
    # When the supervisor has restarted the gather and the group ended
    store = wait_ended(state, [parent.id], timeout=120)
    records = store.results()
    store.close()
    # Then the handler ran twice (the first was killed) on the whole group, and the
    # group ended once, under the parent's id, in fan-out order
    assert marker.read_text().split() == ["12", "12"]
    assert [r.id for r in records] == [parent.id]
    [record] = records
    assert record.status == "succeeded" and record.duplicates == 0
    assert record.payload == {"order": list(range(12))}


def test_a_child_that_kills_its_worker_every_time_ends_its_group_by_the_delivery_limit(
        up_poison: tuple[str, Path, str]) -> None:
    kind, state, prefix = up_poison
    # Given two parents split into 3 children each, whose child 1 makes `work` exit at
    # every delivery: one gathered by default, one with partial: true
    failing = Envelope.create({"n": 3, "crash": [1]}, ["split", "work", "gather"])
    partial = Envelope.create({"n": 3, "crash": [1]}, ["split", "work", "gather-partial"])
    _push(kind, state, prefix, failing, partial, mesh=POISON)
    # When the supervisor has run them, restarting `work` each time it died
    store = wait_ended(state, [failing.id, partial.id], timeout=150)
    records = {r.id: r for r in store.results()}
    store.close()
    # Then each group ended once, under its parent's id, and no child on its own
    assert sorted(records) == sorted([failing.id, partial.id])
    assert all(r.duplicates == 0 for r in records.values())
    # the default group failed, naming the child and the delivery limit
    failed = records[failing.id]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["reason"] == "fan-in-child-failed"
    assert f"{failing.id}.1 (#1) failed at work (delivery-limit)" in failed.error["message"]
    assert "delivered 3 times (maxDeliveries 2)" in failed.error["message"]
    # the partial one gathered 0 and 2 and lists 1 with its reason
    done = records[partial.id]
    assert done.status == "succeeded" and done.payload == {"order": [0, 2]}
    listed = done.envelope["meta"]["fanin"]["failed"]
    assert [(f["id"], f["index"], f["error"]["reason"], f["error"]["actor"])
            for f in listed] == [(f"{partial.id}.1", 1, "delivery-limit", "work")]

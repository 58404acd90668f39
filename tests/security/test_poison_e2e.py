"""Every kind of poison at once, on a real ``asya up``: each ends once in error-end with
its own reason, and the mesh keeps serving good work beside it and after it.

``meshes/poisoned`` has one actor per way a message can go wrong, each with a retry
policy or a replica that would make a mistake loop if the runtime let it:

- bytes that are no envelope (not JSON; JSON of the wrong shape), on ``echo``'s
  queue: ``invalid-envelope``;
- a handler that rewrites ``route.prev`` (``forger``, 3 attempts configured):
  ``history-altered``;
- a handler that ``os._exit``s on every delivery (``fragile``: one replica, one message
  at a time, ``maxDeliveries: 2``): ``delivery-limit``;
- an actor that puts itself back into ``next`` forever (``again``, ``hopLimit: 8``):
  ``hop-limit``;
- a URL outside the roots (``/etc/passwd``) and the mesh's own queue database, with a
  root that holds the state folder (``reader``, 3 attempts): ``blob-refused``.

The replicas, the crew and the supervisor are the real processes of ``asya up``; the
test only puts messages on the queues (as ``asya send`` would, and raw bytes where a
broken client would) and reads the result store.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asya_agents.context import MeshContext
from asya_agents.envelope import Envelope
from asya_agents.settings import Settings
from asya_agents.stores import SQLiteResultStore
from asya_agents.stores.base import ResultRecord
from asya_agents.transports.base import Outgoing
from tests.conftest import require_service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

MESH = Path(__file__).parent / "meshes" / "poisoned"


@dataclass
class Up:
    """A running ``asya up`` of the poisoned mesh, and how to reach its queues."""

    kind: str
    state: Path
    ctx: MeshContext
    log: Path

    def push(self, messages: list[Outgoing]) -> None:
        async def go() -> None:
            async with self.ctx.connected() as transport:
                await transport.ensure_queues(sorted(self.ctx.loaded.actor_names))
                await transport.send(messages)

        asyncio.run(go())

    def wait_ended(self, ids: list[str], *, timeout: float = 120) -> dict[str, ResultRecord]:
        store = SQLiteResultStore(self.state / "results.db")
        try:
            deadline = time.monotonic() + timeout
            while not all(w >= 1 - 1e-9 for w in store.ended_weight(ids).values()):
                if time.monotonic() > deadline:
                    raise AssertionError(self.log.read_text()[-4000:])
                time.sleep(0.1)
            found = {i: store.get(i) for i in ids}
            return {i: r for i, r in found.items() if r is not None}
        finally:
            store.close()

    def records(self) -> list[ResultRecord]:
        store = SQLiteResultStore(self.state / "results.db")
        try:
            return store.results()
        finally:
            store.close()


@pytest.fixture(params=["embedded", "rabbitmq"])
def up(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Up]:
    kind, prefix = request.param, f"px{uuid.uuid4().hex[:8]}"
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
    state = tmp_path / "state"
    # A root that holds the state folder (as the demo's folder does): the state's
    # databases must stay out of reach all the same.
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1",
           "ASYA_RABBITMQ_QUEUE_PREFIX": prefix, "ASYA_RABBITMQ_MANAGEMENT_URL": "",
           "ASYA_BLOB_ROOTS": str(tmp_path)}
    env.pop("ASYA_STORE_URL", None)
    settings = Settings()
    settings = settings.model_copy(update={"rabbitmq": settings.rabbitmq.model_copy(
        update={"queue_prefix": prefix, "management_url": None})})
    ctx = MeshContext.open(MESH, transport=kind, state_dir=state, settings=settings)
    log = tmp_path / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "asya_agents", "up", str(MESH), "--transport", kind,
             "--state-dir", str(state)],
            env=env, start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Up(kind, state, ctx, log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        if kind == "rabbitmq":
            asyncio.run(_delete_queues(ctx))
        ctx.close()


async def _delete_queues(ctx: MeshContext) -> None:
    async with ctx.connected() as admin:
        await admin.delete_queues(sorted(ctx.loaded.actor_names))


def _poison_id(queue: str, body: bytes) -> str:
    """The id error-end records a non-envelope under (hop.Router.poison)."""
    return "poison-" + hashlib.sha1(queue.encode() + body).hexdigest()[:12]


def _good(n: int) -> list[Envelope]:
    return [Envelope.create({"n": i}, ["echo"]) for i in range(n)]


def test_every_kind_of_poison_ends_once_with_its_reason_and_good_work_goes_on(
        up: Up, tmp_path: Path) -> None:
    # Given files a payload may name (in the mesh's data/ and in the configured root)
    (tmp_path / "shared.txt").write_text("shared")
    note = MESH / "data" / "note.txt"
    # and every kind of poison, with good work before, between and behind it
    raw = [b"\xff not an envelope", b'{"id": "x", "route": 3}']
    poison = {
        "history-altered": Envelope.create({"x": 1}, ["forger", "echo"]),
        "delivery-limit": Envelope.create({"crash": True}, ["fragile"]),
        "hop-limit": Envelope.create({"x": 2}, ["again"]),
        "blob-refused:outside": Envelope.create({"url": "/etc/passwd"}, ["reader"]),
        "blob-refused:state": Envelope.create({"url": str(up.state / "queues.db")},
                                              ["reader"]),
    }
    before, between = _good(5), _good(5)
    behind_crash = [Envelope.create({"n": i}, ["fragile"]) for i in range(3)]
    readable = [Envelope.create({"url": str(note)}, ["reader"]),
                Envelope.create({"url": str(tmp_path / "shared.txt")}, ["reader"])]
    up.push([Outgoing("echo", e.encode()) for e in before])
    up.push([Outgoing("echo", body) for body in raw])
    up.push([Outgoing(e.route.curr, e.encode()) for e in poison.values()])
    up.push([Outgoing(e.route.curr, e.encode()) for e in [*between, *behind_crash,
                                                           *readable]])
    # When all of it has ended
    raw_ids = [_poison_id("echo", body) for body in raw]
    good = [*before, *between, *behind_crash, *readable]
    ended = up.wait_ended([*raw_ids, *(e.id for e in poison.values()),
                           *(e.id for e in good)])
    # Then each poison is one failed record, with its own reason, recorded once
    for body, rid in zip(raw, raw_ids, strict=True):
        record = ended[rid]
        assert record.status == "failed" and record.error is not None, body
        assert record.error["reason"] == "invalid-envelope"
        assert record.duplicates == 0
    for name, envelope in poison.items():
        record = ended[envelope.id]
        assert record.status == "failed" and record.error is not None, name
        assert record.error["reason"] == name.split(":")[0], (name, record.error)
        assert record.duplicates == 0, name
    assert "delivered 3 times (maxDeliveries 2)" in \
        ended[poison["delivery-limit"].id].error["message"]  # type: ignore[index]
    assert "spec.hopLimit: 8" in ended[poison["hop-limit"].id].error["message"]  # type: ignore[index]
    assert "inside the mesh's state folder" in \
        ended[poison["blob-refused:state"].id].error["message"]  # type: ignore[index]
    # never retried: the forger and the reader had attempts to spare
    for name in ("history-altered", "blob-refused:outside", "blob-refused:state"):
        assert ended[poison[name].id].envelope["meta"]["attempt"] == 1, name
    # and the good work beside it succeeded, behind the crashing one too
    assert {ended[e.id].status for e in good} == {"succeeded"}
    assert [ended[e.id].payload["text"] for e in readable] == ["a harmless note\n", "shared"]
    # When more good work comes after the poison
    after = [*_good(5), Envelope.create({"n": 9}, ["fragile"])]
    up.push([Outgoing(e.route.curr, e.encode()) for e in after])
    later = up.wait_ended([e.id for e in after])
    # Then the mesh still serves it, and no poison was recorded twice or left behind
    assert {r.status for r in later.values()} == {"succeeded"} and len(later) == len(after)
    failed = [r for r in up.records() if r.status == "failed"]
    assert sorted(r.id for r in failed) == sorted([*raw_ids, *(e.id for e in poison.values())])

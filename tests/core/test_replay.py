"""Replaying a failed envelope: the intent is recorded before the envelope is sent, the
failure record is never deleted, a fast new result always wins, a stale copy of the old
failure is counted and ignored, and an interrupted replay is finished by running it
again; on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.crew import finish_replays, replay_failed
from asya_agents.envelope import Envelope, ErrorInfo
from asya_agents.errors import StoreError, TransportError
from asya_agents.stores import open_result_store
from asya_agents.stores.base import ResultStore
from asya_agents.transports.base import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultStore]:
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    opened = open_result_store(url, state_dir=tmp_path)
    yield opened
    opened.close()


def failed_at_b(env_id: str = "e1") -> dict[str, Any]:
    """An envelope that failed at ``b`` (after ``a``), as error-end records it."""
    env = Envelope.create({"n": 1}, ["a", "b"], id=env_id).advanced()
    env.meta.attempt = 3
    env.meta.error = ErrorInfo(type="builtins.ValueError", message="boom", actor="b",
                               attempt=3)
    return env.to_dict()


class FastEnd:
    """An embedded transport after whose send the replayed envelope has already ended
    (happy-end recorded it) before the replaying code runs its next line."""

    def __init__(self, inner: EmbeddedTransport, store: ResultStore) -> None:
        self.inner, self.store = inner, store

    async def send(self, messages: list[Outgoing]) -> None:
        await self.inner.send(messages)
        for message in messages:
            ended = Envelope.decode(message.body).advanced()
            self.store.record("succeeded", ended.to_dict())


class Refusing:
    """A broker that is down: every send fails."""

    async def send(self, messages: list[Outgoing]) -> None:
        raise TransportError("broker unreachable")


def queued(transport: EmbeddedTransport, queue: str) -> list[dict[str, Any]]:
    async def take() -> list[dict[str, Any]]:
        got = await transport.receive(queue, max_messages=10, wait=0.0, visibility=30.0)
        return [json.loads(d.body) for d in got]

    return asyncio.run(take())


def test_a_fast_result_of_the_replayed_envelope_wins(store: ResultStore,
                                                    tmp_path: Path) -> None:
    # Given a failure at b
    assert store.record("failed", failed_at_b())
    inner = EmbeddedTransport(tmp_path / "queues.db")
    # When it is replayed and the replayed envelope ends before the replay returns
    sent = asyncio.run(replay_failed(store, FastEnd(inner, store), "e1"))  # type: ignore[arg-type]
    # Then the new result stands: nothing deleted it afterwards
    record = store.get("e1")
    assert record is not None and record.status == "succeeded"
    assert (sent.meta.attempt, sent.meta.error, sent.meta.replays) == (1, None, 1)
    assert store.totals().failed == 0 and store.totals().succeeded == 1
    # and a stale copy of the old failure (delivered again) is counted, not applied
    assert not store.record("failed", failed_at_b())
    record = store.get("e1")
    assert record is not None and (record.status, record.duplicates) == ("succeeded", 1)
    asyncio.run(inner.close())


def test_a_replay_in_flight_is_not_listed_until_its_new_end(store: ResultStore,
                                                           tmp_path: Path) -> None:
    store.record("failed", failed_at_b())
    transport = EmbeddedTransport(tmp_path / "queues.db")
    asyncio.run(replay_failed(store, transport, "e1"))
    # While it runs again it is neither failed nor any other ended record
    assert store.get("e1") is None and store.results() == []
    assert store.ended_weight(["e1"]) == {"e1": 0.0}
    # and it cannot be replayed twice
    with pytest.raises(StoreError, match="no failed envelope 'e1'"):
        asyncio.run(replay_failed(store, transport, "e1"))
    # When it fails again at b, the new failure is recorded (a later generation)
    [again] = queued(transport, "b")
    again["meta"]["error"] = {"type": "builtins.ValueError", "message": "boom again"}
    assert store.record("failed", again)
    record = store.get("e1")
    assert record is not None and record.status == "failed"
    assert record.error is not None and record.error["message"] == "boom again"
    asyncio.run(transport.close())


def test_an_interrupted_replay_is_finished_by_running_it_again(store: ResultStore,
                                                              tmp_path: Path) -> None:
    store.record("failed", failed_at_b())
    # Given a replay whose send failed after its intent was recorded
    with pytest.raises(TransportError, match="broker unreachable"):
        asyncio.run(replay_failed(store, Refusing(), "e1"))  # type: ignore[arg-type]
    assert store.unfinished_replays(older_than=0.0) == ["e1"]
    # When it is run again (asya replay MESH e1), or the sweep finishes what is left
    transport = EmbeddedTransport(tmp_path / "queues.db")
    sent = asyncio.run(replay_failed(store, transport, "e1"))
    assert asyncio.run(finish_replays(store, transport, older_than=0.0)) == []
    # Then exactly one copy went out, as the same generation
    [message] = queued(transport, "b")
    assert message["meta"]["replays"] == sent.meta.replays == 1
    assert store.unfinished_replays(older_than=0.0) == []
    asyncio.run(transport.close())


def test_the_sweep_sends_what_an_interrupted_replay_left(store: ResultStore,
                                                        tmp_path: Path) -> None:
    store.record("failed", failed_at_b("e1"))
    store.record("failed", failed_at_b("e2"))
    with pytest.raises(TransportError):
        asyncio.run(replay_failed(store, Refusing(), "e2"))  # type: ignore[arg-type]
    transport = EmbeddedTransport(tmp_path / "queues.db")
    # A mark younger than the lease may belong to a replay still sending: left alone
    assert asyncio.run(finish_replays(store, transport, older_than=3600.0)) == []
    assert asyncio.run(finish_replays(store, transport, older_than=0.0)) == ["e2"]
    assert [m["id"] for m in queued(transport, "b")] == ["e2"]
    record = store.get("e1")
    assert record is not None and record.status == "failed"  # never touched
    asyncio.run(transport.close())

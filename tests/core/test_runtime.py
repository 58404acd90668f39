"""The routing runtime, run in-process on the embedded transport (asya_agents.testing).

Poison inputs each end in error-end with a reason, and the mesh keeps processing the rest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from asya_agents.envelope import Envelope
from asya_agents.testing import LocalMesh

POISON = Path(__file__).parent / "meshes" / "poison"


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    with LocalMesh(POISON, state_dir=tmp_path) as running:
        yield running


def test_example_mesh_fans_out_rewrites_routes_and_ends_every_piece(
    example_mesh: Path, tmp_path: Path
) -> None:
    with LocalMesh(example_mesh, state_dir=tmp_path) as mesh:
        # Given a text of two statements and one question
        root = mesh.send({"text": "Hi there. Is it on? Yes."})
        # When the mesh has handled it
        mesh.join(timeout=20)
        pieces = sorted(mesh.children(root), key=lambda r: r.id)
    # Then it fanned out into three, each ended once, the question took the detour
    assert [p.id for p in pieces] == [f"{root}.0", f"{root}.1", f"{root}.2"]
    assert {p.status for p in pieces} == {"succeeded"}
    question = pieces[1]
    assert question.payload["answer"] == "42"
    assert question.route["prev"] == ["split", "triage", "answer", "format"]
    assert pieces[0].route["prev"] == ["split", "triage", "format"]
    assert [h["actor"] for h in question.envelope["meta"]["hops"]] == \
        ["split", "triage", "answer", "format"]


@pytest.mark.parametrize(
    ("payload", "error_type", "reason", "needle"),
    [
        ({"do": "raise"}, "builtins.ValueError", "handler-error", "always raises"),
        ({"do": "hang"}, "asya_agents.errors.ActorTimeout", "timeout", "actorTimeout (1s)"),
        ({"do": "alter-history"}, "asya_agents.errors.HistoryAlteredError", "history-altered",
         "route.prev"),
        ({"do": "unknown-actor"}, "asya_agents.errors.UnknownActorError", "unknown-actor",
         "unknown actor 'nowhere'"),
        ({"do": "huge"}, "asya_agents.errors.MessageTooLarge", "too-large",
         "pass large data by URL"),
    ],
)
def test_poison_hops_end_in_error_end_and_the_rest_keeps_flowing(
    mesh: LocalMesh, payload: dict[str, str], error_type: str, reason: str, needle: str
) -> None:
    # Given a bad envelope between two good ones
    good1 = mesh.send({"do": "ok"})
    bad = mesh.send(payload)
    good2 = mesh.send({"do": "ok"})
    # When the mesh has handled all three
    mesh.join(timeout=20)
    # Then the bad one failed with a reason naming what went wrong; the good ones passed
    failed = mesh.result(bad)
    assert failed.status == "failed"
    assert failed.error is not None
    assert failed.error["type"] == error_type
    assert failed.error["reason"] == reason
    assert needle in failed.error["message"]
    assert failed.error["actor"] == "check" and failed.error["attempt"] == 1
    assert "Traceback" in (failed.error["traceback"] or "")
    assert failed.envelope["payload"]["do"] == payload["do"], "the full envelope is kept"
    for good in (good1, good2):
        assert mesh.result(good).payload == {"do": "ok", "finished": True}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"definitely not json", "not UTF-8 JSON"),
        (b'{"id": "no-route", "payload": {}}', "route"),
        (json.dumps({"id": "x", "route": {"curr": "finish"}}).encode(), "arrived at 'check'"),
    ],
)
def test_invalid_messages_are_dead_lettered_once_and_never_crash_a_replica(
    mesh: LocalMesh, body: bytes, needle: str
) -> None:
    # Given garbage on a queue, then a valid envelope
    mesh.send_raw("check", body)
    good = mesh.send({"do": "ok"})
    mesh.join([good], timeout=20, settle=lambda: mesh.store.totals().failed >= 1)
    # Then the garbage is recorded with the reason, and the valid one still succeeds
    [failed] = mesh.results("failed")
    assert failed.error is not None and needle in failed.error["message"]
    assert mesh.result(good).status == "succeeded"
    assert mesh.queue_stats("check").total == 0


def test_fan_out_and_empty_fan_out_in_envelope_mode(mesh: LocalMesh) -> None:
    fan = mesh.send({"do": "fan-out"})
    empty = mesh.send({"do": "empty"})
    mesh.join(timeout=20)
    kids = sorted(mesh.children(fan), key=lambda r: r.id)
    assert [k.payload for k in kids] == [{"n": i, "finished": True} for i in range(3)]
    assert {k.envelope["meta"]["parent_id"] for k in kids} == {fan}
    ended = mesh.result(empty)
    assert ended.status == "succeeded" and ended.payload == []


def test_batch_handler_receives_gathered_payloads(mesh: LocalMesh) -> None:
    # Given 20 envelopes queued before the batch actor looks
    ids = [mesh.send({"n": i}, route=["batcher"]) for i in range(20)]
    mesh.join(ids, timeout=20)
    results = [mesh.result(i) for i in ids]
    # Then each got its own result, and batches were bigger than one
    assert [r.payload["doubled"] for r in results] == [2 * i for i in range(20)]
    assert max(r.payload["batch"] for r in results) > 1
    assert all(r.payload["batch"] <= 8 for r in results)


def test_sync_handler_past_its_timeout_fails_and_asks_for_a_new_replica(
    tmp_path: Path,
) -> None:
    with LocalMesh(POISON, state_dir=tmp_path) as mesh:
        slow = mesh.send({"sleep": 1.0}, route=["slowsync"])
        mesh.join([slow], timeout=20)
        failed = mesh.result(slow)
        assert failed.error is not None and failed.error["reason"] == "timeout"


def test_a_route_rewrite_cannot_touch_meta(mesh: LocalMesh) -> None:
    # The runtime owns meta: a handler's copy of it is ignored.
    env = Envelope.create({"do": "ok"}, ["check", "finish"])
    mesh.send_envelope(env)
    mesh.join([env.id], timeout=20)
    meta = mesh.result(env.id).envelope["meta"]
    assert meta["root_id"] == env.id and meta["attempt"] == 1


def test_crew_group_commit_records_concurrent_envelopes_together(tmp_path: Path) -> None:
    import asyncio

    from asya_agents.crew import GroupRecorder
    from asya_agents.stores import SQLiteResultStore

    class CountingStore(SQLiteResultStore):
        groups: ClassVar[list[int]] = []

        def record_many(self, status, envelopes):  # type: ignore[no-untyped-def]
            self.groups.append(len(envelopes))
            return super().record_many(status, envelopes)

    store = CountingStore(tmp_path / "results.db")
    recorder = GroupRecorder(store, "succeeded")
    envelopes = [Envelope.create({"n": n}, ["a"]) for n in range(50)]

    async def record_all() -> None:
        await asyncio.gather(*(recorder.record(e) for e in envelopes))
        await recorder.record(envelopes[0])  # a duplicate delivery, later

    asyncio.run(record_all())
    # Then every envelope is stored once, in fewer transactions than envelopes
    assert store.totals().succeeded == 50 and store.totals().duplicates == 1
    assert sum(store.groups) == 51 and len(store.groups) < 51
    store.close()


def test_crew_scales_to_one_writer_on_sqlite_and_more_on_postgres() -> None:
    from asya_agents.crew import CREW_SCALING, crew_scaling

    # One SQLite file takes one writer: a second crew replica would only wait on a lock
    for url in (None, "", "sqlite:///tmp/results.db"):
        assert crew_scaling(url).maxReplicaCount == 1
        assert crew_scaling(url).queueLength == CREW_SCALING.queueLength
    assert crew_scaling("postgresql://localhost/test") == CREW_SCALING
    assert CREW_SCALING.maxReplicaCount > 1


def test_a_mesh_whose_handler_cannot_load_fails_at_start_and_closes_everything(
    tmp_path: Path,
) -> None:
    import shutil
    import threading

    from asya_agents.errors import HandlerError

    broken = tmp_path / "broken"
    shutil.copytree(POISON, broken, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    actors = broken / "actors.yaml"
    actors.write_text(actors.read_text().replace("poison_steps.finish", "poison_steps.nope"))
    before = {t.name for t in threading.enumerate()}
    mesh = LocalMesh(broken, state_dir=tmp_path / "state")
    with pytest.raises(HandlerError, match="has no attribute 'nope'"):
        mesh.start()
    assert "asya-local-mesh" not in {t.name for t in threading.enumerate()} - before

"""ReviewService: a decision resumes the envelope exactly once on the right route, on a
real embedded queue and a real result store; a crashed publisher's work is finished by
the next run; deadlines decide with an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asya_agents.review import DEADLINE_REVIEWER, ReviewService, open_review_store
from asya_agents.stores import SQLiteResultStore
from asya_agents.stores.review_base import ReviewStore
from asya_agents.transports.embedded import EmbeddedTransport
from tests.actors.conftest import Clock
from tests.actors.test_review_store import parked

OPTIONS = {"deadline_action": "reject", "send_back_route": ["enhance", "judge"],
           "reject_route": None}


@dataclass
class Rig:
    service: ReviewService
    store: ReviewStore
    results: SQLiteResultStore
    transport: EmbeddedTransport

    def park(self, env: dict[str, Any], *, deadline: float | None = None,
             options: dict[str, Any] | None = None) -> None:
        self.results.record("paused", env)
        self.store.park(env, actor="review", mesh="food", deadline=deadline,
                        options=options or OPTIONS)

    def drain(self, queue: str) -> list[dict[str, Any]]:
        """Every message waiting on ``queue``, acked."""
        async def take() -> list[dict[str, Any]]:
            got = await self.transport.receive(queue, max_messages=50, wait=0.05,
                                               visibility=30)
            for d in got:
                await self.transport.ack(d)
            return [json.loads(d.body) for d in got]

        return self.service._run(take())


@pytest.fixture
def rig(tmp_path: Path, store_url: str | None, clock: Clock) -> Iterator[Rig]:
    store = open_review_store(store_url, state_dir=tmp_path, clock=clock)
    results = SQLiteResultStore(tmp_path / "results.db")
    transport = EmbeddedTransport(tmp_path / "queues.db")
    service = ReviewService(store, transport, results, mesh="food", clock=clock)
    yield Rig(service, store, results, transport)
    service._run(transport.close())
    service.close()
    store.close()
    results.close()


def test_approve_moves_past_review_once(rig: Rig) -> None:
    # Given an envelope parked between judge and upload
    rig.park(parked("a"))
    assert rig.results.get("a").status == "paused"  # type: ignore[union-attr]
    # When a reviewer approves it, and a second one clicks approve too
    assert rig.service.decide("a", decision="approve", reviewer="ana", notes="fine").won
    second = rig.service.decide("a", decision="approve", reviewer="bo")
    # Then exactly one envelope goes on to upload, with the decision in its payload
    [env] = rig.drain("upload")
    assert env["route"] == {"prev": ["enhance", "judge", "review"], "curr": "upload",
                            "next": []}
    assert env["payload"]["review"]["reviewer"] == "ana"
    assert (second.won, second.item.decided_by) == (False, "ana")
    assert rig.service.publish_pending() == 0
    assert rig.drain("upload") == []
    # and it no longer shows as paused: it runs again until it ends
    assert rig.results.get("a") is None
    assert rig.store.get("a").published  # type: ignore[union-attr]


def test_reject_ends_in_error_end_with_the_reason(rig: Rig) -> None:
    rig.park(parked("a"))
    rig.service.decide("a", decision="reject", reviewer="ana", notes="burnt edges")
    [env] = rig.drain("error-end")
    assert env["meta"]["error"]["reason"] == "rejected-in-review"
    assert env["meta"]["error"]["message"] == "rejected in review by ana: burnt edges"
    assert env["route"]["curr"] == "review"


def test_reject_follows_a_configured_route(rig: Rig) -> None:
    rig.park(parked("a"), options={**OPTIONS, "reject_route": ["discard"]})
    rig.service.decide("a", decision="reject", reviewer="ana")
    [env] = rig.drain("discard")
    assert env["route"]["prev"][-1] == "review"
    assert env["route"]["next"] == []


def test_send_back_returns_to_enhance_and_judge_with_the_notes(rig: Rig) -> None:
    rig.park(parked("a"))
    rig.service.decide("a", decision="send_back", reviewer="ana", notes="too blue")
    [env] = rig.drain("enhance")
    assert env["route"]["next"] == ["judge", "upload"]
    assert env["payload"]["review_notes"] == "too blue"
    assert env["meta"]["attempt"] == 1


def test_edit_replaces_the_payload_then_approves(rig: Rig) -> None:
    rig.park(parked("a"))
    edited = {"image_url": "file:///tmp/a.jpg", "enhanced_url": "file:///tmp/b.jpg"}
    rig.service.decide("a", decision="edit", reviewer="ana", payload=edited)
    [env] = rig.drain("upload")
    assert env["payload"]["enhanced_url"] == "file:///tmp/b.jpg"
    assert "verdict" not in env["payload"]
    assert env["payload"]["review"]["decision"] == "edit"


class _CrashAfterSend(Exception):
    pass


def test_a_publisher_that_crashed_is_finished_by_the_next_run(rig: Rig, clock: Clock) -> None:
    # Given a decision recorded by the console while no publisher ran
    rig.park(parked("a"))
    rig.store.decide("a", decision="approve", reviewer="ana")
    assert rig.store.counts()["unpublished"] == 1
    # and a second item whose publisher crashes after sending, before marking it sent
    rig.park(parked("b"))
    original = rig.store.mark_published

    def crash_on_b(id: str, *, round: int) -> None:
        if id == "b":
            raise _CrashAfterSend(id)
        original(id, round=round)

    rig.store.mark_published = crash_on_b  # type: ignore[method-assign]
    with pytest.raises(_CrashAfterSend):
        rig.service.decide("b", decision="approve", reviewer="bo")
    rig.store.mark_published = original  # type: ignore[method-assign]
    first = rig.drain("upload")
    assert sorted(e["id"] for e in first) == ["a", "b"]  # "a" was left over: sent now
    # When the sweep runs again once the dead publisher's claim has expired
    assert rig.service.publish_pending() == 0  # still claimed
    clock.advance(31)
    assert rig.service.publish_pending() == 1
    # Then "b" is sent again as the very same envelope (happy-end records an id once)
    [again] = rig.drain("upload")
    assert again == next(e for e in first if e["id"] == "b")
    assert rig.service.publish_pending() == 0
    assert rig.store.counts()["unpublished"] == 0


def test_deadlines_apply_the_configured_action(rig: Rig, clock: Clock) -> None:
    rig.park(parked("late"), deadline=clock.now + 3600)
    rig.park(parked("kind"), deadline=clock.now + 7200,
             options={**OPTIONS, "deadline_action": "approve"})
    rig.park(parked("open"))
    assert rig.service.expire_due(clock.now + 3599) == []
    expired = rig.service.expire_due(clock.now + 7200)
    assert sorted((r.item.id, r.item.decision) for r in expired) == \
           [("kind", "approve"), ("late", "reject")]
    assert {r.item.decided_by for r in expired} == {DEADLINE_REVIEWER}
    assert [e["id"] for e in rig.drain("error-end")] == ["late"]
    assert [e["id"] for e in rig.drain("upload")] == ["kind"]
    assert [i.id for i in rig.store.pending()] == ["open"]


def test_a_human_and_the_deadline_at_once_decide_once(rig: Rig, clock: Clock) -> None:
    rig.park(parked("a"), deadline=clock.now + 10)
    async def both() -> list[Any]:
        return await asyncio.gather(
            rig.service.adecide("a", decision="approve", reviewer="ana"),
            rig.service.aexpire_due(clock.now + 10))

    human, by_deadline = rig.service._run(both())
    assert human.won != bool(by_deadline)
    assert len(rig.drain("upload")) + len(rig.drain("error-end")) == 1


def test_a_refused_publish_leaves_the_decision_for_the_next_sweep(rig: Rig,
                                                                   tmp_path: Path) -> None:
    # Given a console whose transport refuses the message (here: a size limit it breaks)
    rig.park(parked("a"))
    tiny = EmbeddedTransport(tmp_path / "queues.db", max_message_bytes=64)
    console = ReviewService(rig.store, tiny, rig.results, mesh="food")
    # When it decides, the decision stands but nothing was sent
    assert console.decide("a", decision="approve", reviewer="ana").won
    assert rig.store.counts()["unpublished"] == 1
    assert rig.drain("upload") == []
    # Then the next sweep (with a working transport) resumes it at once, not after a lease
    assert rig.service.publish_pending() == 1
    assert [e["id"] for e in rig.drain("upload")] == ["a"]
    console._run(tiny.close())
    console.close()

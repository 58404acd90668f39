"""The review store on SQLite and on a real PostgreSQL: idempotent parking, filters,
compare-and-set decisions from two threads and from two processes, the outbox claims."""

from __future__ import annotations

import multiprocessing
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from asya_agents.review import open_review_store
from asya_agents.stores.review_base import ReviewItemNotFound, ReviewStore
from tests.actors.conftest import Clock


def parked(env_id: str, *, score: float | None = 0.6, prev: list[str] | None = None,
           nxt: list[str] | None = None) -> dict[str, Any]:
    """An envelope as it arrives at the review actor."""
    payload: dict[str, Any] = {"image_url": f"file:///tmp/{env_id}.jpg"}
    if score is not None:
        payload["verdict"] = {"score": score, "verdict": "uncertain"}
    return {"id": env_id,
            "route": {"prev": prev if prev is not None else ["enhance", "judge"],
                      "curr": "review", "next": nxt if nxt is not None else ["upload"]},
            "headers": {}, "payload": payload, "meta": {"root_id": env_id}}


Opener = Callable[..., ReviewStore]


def test_parking_twice_is_one_item(open_store: Opener) -> None:
    # Given a store, when the same hop of an envelope is parked twice (a redelivery)
    store = open_store()
    first = store.park(parked("a"), actor="review", mesh="food", deadline=None)
    again = store.park(parked("a"), actor="review", mesh="food", deadline=None)
    # Then there is one pending item
    assert (first, again) == (True, False)
    [item] = store.pending()
    assert (item.id, item.status, item.mesh, item.actor) == ("a", "pending", "food", "review")
    assert item.payload["verdict"]["score"] == 0.6
    assert store.counts()["pending"] == 1


def test_pending_filters_and_order(open_store: Opener, clock: Clock) -> None:
    store = open_store()
    for env_id, score, mesh in (("old", 0.7, "food"), ("mid", 0.55, "food"),
                                ("new", 0.65, "qa")):
        store.park(parked(env_id, score=score), actor="review", mesh=mesh, deadline=None)
        clock.advance(60)
    assert [i.id for i in store.pending()] == ["old", "mid", "new"]
    assert [i.id for i in store.pending(mesh="food")] == ["old", "mid"]
    assert [i.id for i in store.pending(min_score=0.6)] == ["old", "new"]
    assert [i.id for i in store.pending(max_score=0.6)] == ["mid"]
    assert [i.id for i in store.pending(older_than=100)] == ["old", "mid"]
    assert [i.id for i in store.pending(limit=1)] == ["old"]
    assert store.pending(actor="other") == []


def test_a_decision_is_recorded_with_who_and_when(open_store: Opener, clock: Clock) -> None:
    store = open_store()
    store.park(parked("a"), actor="review", mesh="food", deadline=None)
    clock.advance(5)
    result = store.decide("a", decision="send_back", reviewer="ana", notes="warmer")
    assert result.won
    assert (result.item.status, result.item.decided_by, result.item.decided_at) == \
           ("decided", "ana", clock.now)
    assert result.item.published is False
    [record] = store.history()
    assert (record.id, record.decision, record.reviewer, record.notes) == \
           ("a", "send_back", "ana", "warmer")
    assert store.pending() == []
    assert store.counts()["send_back"] == 1


def test_bad_decisions_say_what_is_wrong(open_store: Opener) -> None:
    store = open_store()
    store.park(parked("a"), actor="review", mesh="food", deadline=None)
    with pytest.raises(ValueError, match="unknown review decision 'maybe'"):
        store.decide("a", decision="maybe", reviewer="ana")
    with pytest.raises(ValueError, match="needs the edited payload"):
        store.decide("a", decision="edit", reviewer="ana")
    with pytest.raises(ReviewItemNotFound, match="no review item 'zzz'"):
        store.decide("zzz", decision="approve", reviewer="ana")


def test_two_threads_deciding_at_once_one_wins(open_store: Opener) -> None:
    # Given 20 pending items and two reviewers, each with their own connection
    ids = [f"item{i}" for i in range(20)]
    setup = open_store()
    for env_id in ids:
        setup.park(parked(env_id), actor="review", mesh="food", deadline=None)
    stores = {"ana": open_store(), "bo": open_store()}
    barrier = threading.Barrier(2)
    outcomes: dict[str, list[tuple[str, bool, str | None]]] = {"ana": [], "bo": []}

    def reviewer(name: str) -> None:
        for env_id in ids:
            barrier.wait(timeout=10)
            res = stores[name].decide(env_id, decision="approve" if name == "ana" else "reject",
                                      reviewer=name)
            outcomes[name].append((env_id, res.won, res.item.decided_by))

    # When both decide every item at the same moment
    threads = [threading.Thread(target=reviewer, args=(n,)) for n in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # Then each item has exactly one winner, and the loser saw who it was
    for ana, bo in zip(outcomes["ana"], outcomes["bo"], strict=True):
        assert ana[1] != bo[1], ana
        winner = "ana" if ana[1] else "bo"
        assert ana[2] == bo[2] == winner
    assert len(setup.history()) == 20
    assert setup.counts()["decided"] == 20


def _decide_all(url: str | None, state_dir: str, reviewer: str, ids: list[str],
                start: Any, out: Any) -> None:
    try:
        store = open_review_store(url, state_dir=Path(state_dir))
        start.wait(30)
        wins = [i for i in ids if store.decide(i, decision="approve", reviewer=reviewer).won]
        store.close()
    except BaseException:  # the parent shows it, rather than time out on the queue
        out.put((reviewer, traceback.format_exc()))
        raise
    out.put((reviewer, wins))


def test_two_processes_deciding_at_once_one_wins(open_store: Opener, store_url: str | None,
                                                 tmp_path: Path) -> None:
    ids = [f"p{i}" for i in range(30)]
    setup = open_store()
    for env_id in ids:
        setup.park(parked(env_id), actor="review", mesh="food", deadline=None)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_decide_all, args=(store_url, str(tmp_path), name, ids,
                                                   start, out)) for name in ("ana", "bo")]
    for p in procs:
        p.start()
    start.set()
    wins = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    failed = {name: got for name, got in wins.items() if isinstance(got, str)}
    assert not failed, failed
    assert sorted(wins["ana"] + wins["bo"]) == sorted(ids)
    assert not set(wins["ana"]) & set(wins["bo"])
    by_id = {r.id: r.reviewer for r in setup.history()}
    assert all(by_id[i] == "ana" for i in wins["ana"])
    assert all(by_id[i] == "bo" for i in wins["bo"])


def test_a_sent_back_envelope_parks_again_as_a_new_round(open_store: Opener) -> None:
    store = open_store()
    store.park(parked("a"), actor="review", mesh="food", deadline=None)
    store.decide("a", decision="send_back", reviewer="ana", notes="brighter")
    store.mark_published("a", round=2)
    # It went through enhance and judge again and came back to review
    later = parked("a", prev=["enhance", "judge", "review", "enhance", "judge"])
    assert store.park(later, actor="review", mesh="food", deadline=None)
    item = store.get("a")
    assert item is not None
    assert (item.status, item.round, item.decided_by) == ("pending", 5, None)
    # A stale redelivery of the first round changes nothing
    assert not store.park(parked("a"), actor="review", mesh="food", deadline=None)
    store.decide("a", decision="approve", reviewer="bo")
    assert [(r.round, r.reviewer) for r in store.history()] == [(5, "bo"), (2, "ana")]


def test_outbox_claims_are_exclusive_until_their_lease_expires(open_store: Opener,
                                                               clock: Clock) -> None:
    store = open_store()
    for env_id in ("a", "b"):
        store.park(parked(env_id), actor="review", mesh="food", deadline=None)
        store.decide(env_id, decision="approve", reviewer="ana")
    first = store.claim_unpublished(lease=30)
    assert [i.id for i in first] == ["a", "b"]
    assert store.claim_unpublished(lease=30) == []  # claimed by the first publisher
    store.mark_published("a", round=2)
    clock.advance(31)  # the first publisher died before publishing "b"
    assert [i.id for i in store.claim_unpublished(lease=30)] == ["b"]
    assert store.counts()["unpublished"] == 1


def test_due_lists_overdue_pending_items(open_store: Opener, clock: Clock) -> None:
    store = open_store()
    store.park(parked("soon"), actor="review", mesh="food", deadline=clock.now + 60)
    store.park(parked("never"), actor="review", mesh="food", deadline=None)
    assert store.due(clock.now + 59) == []
    assert [i.id for i in store.due(clock.now + 60)] == ["soon"]

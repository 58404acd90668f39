"""What the gateway keeps in the mesh's stores, on SQLite and PostgreSQL: the hop-event
feed (append-only, followed by seq, replayed per job, a PostgreSQL append waking a
listener) and the jobs table; and the replicas' side, which writes the feed in groups
without a hop waiting for a commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.observe.events import EventWriter, HopEvents
from asya_agents.seams import Decision
from asya_agents.stores.events import EventStore, NewEvent, open_event_store
from asya_agents.stores.jobs import JobRow, open_job_store


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        yield request.getfixturevalue("pg_url")


def _event(root: str, piece: str, kind: str = "hop") -> NewEvent:
    return NewEvent(root_id=root, piece=piece, actor="a", kind=kind, at=1.0,
                    data={"attempt": 1})


def test_the_feed_is_followed_by_seq_and_replayed_per_job(store_url: str | None,
                                                          tmp_path: Path) -> None:
    events = open_event_store(store_url, state_dir=tmp_path)
    try:
        # Given events of two jobs appended in two transactions
        events.append([_event("j1", "j1"), _event("j2", "j2")])
        events.append([_event("j1", "j1.0", "succeeded")])
        # Then a tail reads them in order past any seq, a job's replay only its own
        everything = events.after(0)
        assert [(e.root_id, e.piece) for e in everything] == [
            ("j1", "j1"), ("j2", "j2"), ("j1", "j1.0")]
        assert [e.seq for e in events.after(everything[0].seq)] == \
            [e.seq for e in everything[1:]]
        assert [e.piece for e in events.for_root("j1")] == ["j1", "j1.0"]
        assert [e.piece for e in events.for_root("j1", after=everything[0].seq)] == ["j1.0"]
        assert events.started(["j1", "j3"]) == {"j1"}
        assert events.last_seq() == everything[-1].seq
        assert everything[2].to_json() == {"job": "j1", "piece": "j1.0", "actor": "a",
                                           "kind": "succeeded", "at": 1.0, "attempt": 1}
        # and pruning old events never lets a seq be used again
        assert events.prune(before=2.0) == 3
        events.append([_event("j4", "j4")])
        assert events.after(0)[0].seq > everything[-1].seq
    finally:
        events.close()


def test_a_postgres_append_wakes_a_listener(pg_url: str, tmp_path: Path) -> None:
    events = open_event_store(pg_url, state_dir=tmp_path)
    listener = events.listener()
    assert listener is not None
    try:
        assert listener.wait(0.05) is False
        threading.Timer(0.1, events.append, args=([_event("j", "j")],)).start()
        started = time.monotonic()
        assert listener.wait(5.0) is True
        assert time.monotonic() - started < 4.0
    finally:
        listener.close()
        events.close()


def test_sqlite_feed_needs_no_listener(tmp_path: Path) -> None:
    events = open_event_store(None, state_dir=tmp_path)
    try:
        assert events.listener() is None
        assert (tmp_path / "events.db").exists()
    finally:
        events.close()


def test_the_jobs_table_keeps_the_first_row_and_one_cancel(store_url: str | None,
                                                           tmp_path: Path) -> None:
    table = open_job_store(store_url, state_dir=tmp_path)
    try:
        table.record([JobRow("j1", "shop", "k1", "hash-a", 1.0)])
        table.record([JobRow("j1", "shop", "k1", "hash-b", 2.0)])
        row = table.get("j1")
        assert row is not None and row.body_hash == "hash-a" and row.cancelled_at is None
        assert table.mark_cancelled("j1", by="shop", at=3.0) is True
        assert table.mark_cancelled("j1", by="other", at=4.0) is False
        row = table.get("j1")
        assert row is not None and row.cancelled_by == "shop"
        assert table.get("nope") is None
    finally:
        table.close()


class _Slow(EventStore):
    """A feed whose appends take a while, counting its transactions."""

    def __init__(self, inner: EventStore) -> None:
        super().__init__(inner.db, url=inner.url)
        self.inner, self.groups = inner, 0

    def append(self, events):  # type: ignore[no-untyped-def]
        self.groups += 1
        time.sleep(0.05)
        self.inner.append(events)


def test_replicas_write_hop_events_in_groups_without_waiting(tmp_path: Path) -> None:
    # Given a replica's observer on a feed whose commits are slow
    feed = _Slow(open_event_store(None, state_dir=tmp_path))
    writer = EventWriter(feed)
    observer = HopEvents(writer)
    envelope = Envelope.create({}, ["a", "b"], id="r")
    # When 200 hops and a retry happen at once
    started = time.monotonic()
    for _ in range(200):
        observer.succeeded("a", envelope, 0.001)
    observer.failed("a", envelope, ValueError("x"), Decision("retry", delay=2.0), 0.001)
    emitted = time.monotonic() - started
    writer.close()
    # Then no hop waited for a commit, all went in a few transactions
    assert emitted < 0.05
    rows = feed.inner.for_root("r")
    assert len(rows) == 201 and feed.groups <= 5
    assert rows[-1].kind == "retry" and rows[-1].data["delay"] == 2.0
    assert rows[-1].data["error"] == "ValueError: x"
    feed.inner.close()

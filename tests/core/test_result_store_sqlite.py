"""The SQLite result store: one row per id, duplicates counted, and totals that are kept
by the database itself (so reading them does not scan the table), including for a
store written before the totals existed and for records written by another process."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from asya_agents.envelope import Envelope
from asya_agents.stores import SQLiteResultStore
from asya_agents.stores.base import Totals


def counted(store: SQLiteResultStore) -> Totals:
    """The totals the slow way, from the rows: what the kept totals must equal."""
    rows = store._rows("SELECT status, COUNT(*), COALESCE(SUM(duplicates), 0) FROM results"
                       " GROUP BY status")
    by = {status: (count, dups) for status, count, dups in rows}
    return Totals(by.get("succeeded", (0, 0))[0], by.get("failed", (0, 0))[0],
                  by.get("paused", (0, 0))[0], sum(d for _, d in by.values()))


def test_totals_follow_records_duplicates_moves_and_forgets(tmp_path: Path) -> None:
    store = SQLiteResultStore(tmp_path / "results.db", clock=lambda: 100.0)
    try:
        envs = [Envelope.create({"n": i}, ["a"]).to_dict() for i in range(4)]
        # Given four records, one of them delivered twice
        assert store.record_many("succeeded", envs[:2]) == [True, True]
        assert not store.record("succeeded", envs[0])
        assert store.record("paused", envs[2])
        assert store.record("failed", envs[3])
        assert store.totals() == Totals(2, 1, 1, 1) == counted(store)
        # When the paused one is approved (it moves to succeeded) and a failure is
        # forgotten before a replay
        assert store.record("succeeded", envs[2])
        store.forget(envs[3]["id"])
        # Then the totals moved with them, the record was updated in place, and the
        # duplicate count of the moved record was kept
        assert store.totals() == Totals(3, 0, 0, 1) == counted(store)
        rec = store.get(envs[2]["id"])
        assert rec is not None and rec.status == "succeeded"
        assert store.get(envs[0]["id"]).duplicates == 1  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_store_from_before_the_totals_gets_them_counted_once(tmp_path: Path) -> None:
    # Given a results table as an earlier version wrote it, with no totals table
    path = tmp_path / "results.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE results (id TEXT PRIMARY KEY, root_id TEXT NOT NULL,"
                 " status TEXT NOT NULL, weight TEXT NOT NULL, envelope TEXT NOT NULL,"
                 " error TEXT, recorded_at REAL NOT NULL,"
                 " duplicates INTEGER NOT NULL DEFAULT 0)")
    conn.executemany("INSERT INTO results VALUES (?, ?, ?, '1', '{}', NULL, 1.0, ?)",
                     [("a", "a", "succeeded", 2), ("b", "b", "succeeded", 0),
                      ("c", "c", "failed", 0)])
    conn.commit()
    conn.close()
    # When the store opens it (twice: a second process must not count again)
    SQLiteResultStore(path).close()
    store = SQLiteResultStore(path)
    try:
        # Then the totals are the rows' own, and keep up from there
        assert store.totals() == Totals(2, 1, 0, 2)
        assert store.record("succeeded", Envelope.create({}, ["a"]).to_dict())
        assert store.totals() == Totals(3, 1, 0, 2) == counted(store)
    finally:
        store.close()


def test_records_written_by_another_connection_are_counted(tmp_path: Path) -> None:
    # happy-end and error-end are separate processes writing one file
    one, two = (SQLiteResultStore(tmp_path / "results.db") for _ in range(2))
    try:
        one.record("succeeded", Envelope.create({}, ["a"]).to_dict())
        two.record("failed", Envelope.create({}, ["a"]).to_dict())
        assert one.totals() == two.totals() == Totals(1, 1, 0, 0)
    finally:
        one.close()
        two.close()


#: The tables and triggers as the version before meshes and rounds wrote them.
_PREVIOUS = [
    "CREATE TABLE results (id TEXT PRIMARY KEY, root_id TEXT NOT NULL, status TEXT NOT NULL,"
    " weight TEXT NOT NULL, envelope TEXT NOT NULL, error TEXT, recorded_at REAL NOT NULL,"
    " duplicates INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE result_totals (status TEXT PRIMARY KEY, count INTEGER NOT NULL,"
    " duplicates INTEGER NOT NULL)",
    "CREATE TRIGGER results_totals_insert AFTER INSERT ON results BEGIN"
    " INSERT INTO result_totals (status, count, duplicates) VALUES (NEW.status, 1,"
    " NEW.duplicates) ON CONFLICT (status) DO UPDATE SET count = count + 1; END",
]


def test_a_store_of_the_previous_version_gets_meshes_rounds_and_totals(tmp_path: Path) -> None:
    # Given a store written by the previous version: a succeeded record two hops long
    path = tmp_path / "results.db"
    done = Envelope.create({}, ["a", "b"], id="done").advanced().advanced().to_dict()
    conn = sqlite3.connect(path)
    for ddl in _PREVIOUS:
        conn.execute(ddl)
    conn.execute("INSERT INTO results VALUES ('done', 'done', 'succeeded', '1', ?, NULL,"
                 " 1.0, 1)", (json.dumps(done),))
    conn.commit()
    conn.close()
    # When a mesh opens it
    store = SQLiteResultStore(path, mesh="food")
    try:
        # Then its rows stay visible (they belong to no mesh), their round is known, so
        # a copy of an earlier hop is a duplicate, and the totals are the rows' own
        assert [r.id for r in store.results()] == ["done"]
        paused = Envelope.create({}, ["a", "b"], id="done").advanced().to_dict()
        assert not store.record("paused", paused)
        assert store.get("done").status == "succeeded"  # type: ignore[union-attr]
        assert store.record("failed", Envelope.create({}, ["a"]).to_dict())
        assert store.totals() == Totals(1, 1, 0, 2) == counted(store)
    finally:
        store.close()


def test_copies_in_any_order_end_in_the_latest_end(tmp_path: Path) -> None:
    store = SQLiteResultStore(tmp_path / "results.db", mesh="m")
    try:
        env = Envelope.create({}, ["a", "review", "b"], id="x")
        at_review = env.advanced().to_dict()
        ended = env.advanced().advanced().advanced().to_dict()
        # The end arrives first, then a late copy of the pause: the end stands
        assert store.record("succeeded", ended)
        assert not store.record("paused", at_review)
        assert not store.record("succeeded", ended)
        rec = store.get("x")
        assert rec is not None and (rec.status, rec.duplicates) == ("succeeded", 2)
        assert store.totals() == Totals(1, 0, 0, 2) == counted(store)
    finally:
        store.close()

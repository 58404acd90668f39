"""The PostgreSQL result store keeps the SQLite store's contract (the console reads it
on a cluster): one row per id, duplicates counted, weights summed, records forgotten."""

from __future__ import annotations

from asya_agents.envelope import Envelope
from asya_agents.stores.postgres import PostgresResultStore


def test_records_once_counts_duplicates_and_sums_weights(pg_url: str) -> None:
    store = PostgresResultStore(pg_url, clock=lambda: 100.0)
    try:
        root = Envelope.create({"n": 1}, ["a"])
        halves = root.fan_out([{"n": 1}, {"n": 2}])
        assert store.record("succeeded", halves[0].to_dict())
        assert not store.record("succeeded", halves[0].to_dict())  # a redelivery
        assert store.ended_weight([root.id]) == {root.id: 0.5}
        failed = halves[1].to_dict()
        failed["meta"]["error"] = {"type": "x.Boom", "message": "boom"}
        assert store.record("failed", failed)
        assert store.ended_weight([root.id]) == {root.id: 1.0}
        totals = store.totals()
        assert (totals.succeeded, totals.failed, totals.duplicates) == (1, 1, 1)
        [rec] = store.results(status="failed")
        assert rec.id == halves[1].id and rec.error == {"type": "x.Boom", "message": "boom"}
        store.forget(rec.id)
        assert store.get(rec.id) is None and store.totals().failed == 0
    finally:
        store.close()


def test_a_table_of_the_previous_version_gets_meshes_and_rounds(pg_url: str) -> None:
    import json

    import psycopg

    # Given a results table as the previous version created it, with a record two hops
    # long that belongs to no mesh
    done = Envelope.create({}, ["a", "b"], id="done").advanced().advanced().to_dict()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE results (id TEXT PRIMARY KEY, root_id TEXT NOT NULL,"
                     " status TEXT NOT NULL, weight TEXT NOT NULL, envelope TEXT NOT NULL,"
                     " error TEXT, recorded_at DOUBLE PRECISION NOT NULL,"
                     " duplicates INTEGER NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO results VALUES ('done', 'done', 'succeeded', '1', %s,"
                     " NULL, 1.0, 0)", (json.dumps(done),))
    # When two meshes open it
    food = PostgresResultStore(pg_url, mesh="food")
    other = PostgresResultStore(pg_url, mesh="other")
    try:
        # Then the old record is every mesh's, with its round: an earlier hop's copy is
        # a duplicate; new records are each mesh's own
        assert [r.id for r in other.results()] == ["done"]
        assert not food.record("paused", Envelope.create({}, ["a", "b"], id="done")
                               .advanced().to_dict())
        assert food.record("succeeded", Envelope.create({}, ["a"], id="mine").to_dict())
        assert [r.id for r in other.results()] == ["done"]
        assert [r.id for r in food.results()] == ["done", "mine"]
        assert food.totals().duplicates == 1 and other.totals().succeeded == 1
    finally:
        food.close()
        other.close()

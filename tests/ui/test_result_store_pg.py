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

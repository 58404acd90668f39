"""The result store's logic, in portable SQL over a :class:`~asya_agents.stores.sql.Database`.

One row per envelope id: ``happy-end``, ``error-end`` and the review actor record ended
envelopes (``succeeded``, ``failed``, ``paused``). A record only moves forward (the
key of :mod:`.base`): a copy that is no later than the record (a duplicate delivery, a
redelivered earlier hop) is counted in ``duplicates``, never applied. Reads serve
``asya results``, ``asya send --wait``, the console and the gateway, and show ended
records only. The SQLite and PostgreSQL stores (:mod:`.sqlite`, :mod:`.postgres`) only
open their database and say how totals are counted.

Several meshes may share one database (one ``ASYA_STORE_URL``): each row carries its
mesh, and a store opened for a mesh reads its own rows (and those of no mesh, written
before rows had one). A store opened with no mesh reads them all.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from asya_agents.errors import StoreError
from asya_agents.stores.base import (
    ENDED,
    ResultRecord,
    Row,
    Status,
    Totals,
    key_of,
    replayed,
    result_row,
)
from asya_agents.stores.sql import Database, Query, columns

__all__ = ["SQLResultStore", "create_results"]

_COLS = "id, root_id, status, weight, envelope, error, recorded_at, duplicates"
_WRITTEN = "id, mesh, root_id, status, weight, envelope, error, recorded_at, generation, round"
_ENDED_SQL = "status IN ('succeeded', 'failed', 'paused')"

_TABLE = (
    "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, root_id TEXT NOT NULL,"
    " status TEXT NOT NULL, weight TEXT NOT NULL, envelope TEXT NOT NULL, error TEXT,"
    " recorded_at DOUBLE PRECISION NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0,"
    " mesh TEXT NOT NULL DEFAULT '', generation INTEGER NOT NULL DEFAULT 0,"
    " round INTEGER NOT NULL DEFAULT 0)")
_INDEXES = [
    "CREATE INDEX IF NOT EXISTS results_root ON results (root_id)",
    "CREATE INDEX IF NOT EXISTS results_status ON results (status, recorded_at)",
    "CREATE INDEX IF NOT EXISTS results_mesh ON results (mesh, status, recorded_at)",
]
#: Columns added after the first version: a table from then gets them on opening.
_ADDED = {"mesh": "TEXT NOT NULL DEFAULT ''", "generation": "INTEGER NOT NULL DEFAULT 0",
          "round": "INTEGER NOT NULL DEFAULT 0"}
#: A row's round (the length of route.prev), computed from its envelope in SQL.
_ROUND_OF = {
    "sqlite": "CASE WHEN json_valid(envelope)"
              " THEN COALESCE(json_array_length(envelope, '$.route.prev'), 0) ELSE 0 END",
    "postgres": "COALESCE(json_array_length((envelope::json)->'route'->'prev'), 0)",
}


def create_results(query: Query, dialect: str) -> bool:
    """Create the results table, or bring one of an earlier version up to date (its
    rows get no mesh, generation 0 and the round of their envelope); True when columns
    were added."""
    query(_TABLE, ())
    missing = [c for c in _ADDED if c not in columns(query, dialect, "results")]
    exists = " IF NOT EXISTS" if dialect == "postgres" else ""
    for col in missing:
        query(f"ALTER TABLE results ADD COLUMN{exists} {col} {_ADDED[col]}", ())
    if "round" in missing:
        query(f"UPDATE results SET round = {_ROUND_OF[dialect]}", ())
    for ddl in _INDEXES:
        query(ddl, ())
    return bool(missing)


class SQLResultStore:
    """The :class:`~asya_agents.stores.base.ResultStore` of ``mesh`` on ``db`` (every
    mesh's rows when ``mesh`` is ``None``)."""

    #: Whether a write is a short local call that may run on the event loop.
    inline_writes = False
    #: How :meth:`totals` reads the counts: one row (status, count, duplicates) each.
    _TOTALS = ("SELECT status, COUNT(*), COALESCE(SUM(duplicates), 0) FROM results"
               "{where} GROUP BY status")

    def __init__(self, db: Database, *, mesh: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.mesh = mesh
        self._clock = clock
        self._for_update = " FOR UPDATE" if db.dialect == "postgres" else ""

    def _mine(self) -> tuple[str, tuple[Any, ...]]:
        """The condition (``AND …``) that keeps a read to this store's mesh."""
        if self.mesh is None:
            return "", ()
        return " AND mesh IN (?, '')", (self.mesh,)

    # -- writing ------------------------------------------------------------------------

    def record(self, status: Status, envelope: dict[str, Any]) -> bool:
        return self.record_many(status, [envelope])[0]

    def record_many(self, status: Status, envelopes: list[dict[str, Any]]) -> list[bool]:
        now = self._clock()
        with self.db.tx() as q:
            return [self._upsert(q, result_row(status, env, now, mesh=self.mesh or ""))
                    for env in envelopes]

    def _upsert(self, q: Query, row: Row) -> bool:
        """Insert, or move the record forward; count a copy that is no later. (Updates
        in place: SQLite's ``INSERT OR REPLACE`` would delete the row without its
        delete trigger.)"""
        values = (row.id, row.mesh, row.root_id, row.status, row.weight, row.envelope,
                  row.error, row.recorded_at, row.generation, row.round)
        insert = (f"INSERT INTO results ({_WRITTEN}, duplicates) VALUES"
                  " (?,?,?,?,?,?,?,?,?,?,0) ON CONFLICT (id) DO NOTHING RETURNING id")
        if q(insert, values):
            return True
        old = q("SELECT status, generation, round, mesh FROM results WHERE id=?"
                f"{self._for_update}", (row.id,))
        if not old:  # forgotten since the insert found it: record it afresh
            return bool(q(insert, values))
        status, generation, rnd, mesh = old[0]
        owner = _owner(mesh, row)
        if row.key <= key_of(status, generation, rnd):
            q("UPDATE results SET duplicates=duplicates+1 WHERE id=?", (row.id,))
            return False
        q("UPDATE results SET mesh=?, root_id=?, status=?, weight=?, envelope=?, error=?,"
          " recorded_at=?, generation=?, round=? WHERE id=?", (owner, *values[2:], row.id))
        return True

    def reopen(self, envelope: dict[str, Any]) -> bool:
        """The paused record of ``envelope`` runs again (a review decision resumed it)."""
        row = result_row("paused", envelope, self._clock())
        mine, params = self._mine()
        with self.db.tx() as q:
            return bool(q(
                "UPDATE results SET status='running', recorded_at=? WHERE id=?"
                f" AND status='paused' AND generation=? AND round=?{mine} RETURNING id",
                (row.recorded_at, row.id, row.generation, row.round, *params)))

    def mark_replay(self, envelope_id: str) -> dict[str, Any]:
        """Record a replay of failed ``envelope_id``; the envelope it sends."""
        mine, params = self._mine()
        with self.db.tx() as q:
            rows = q(f"SELECT status, generation, envelope FROM results WHERE id=?{mine}"
                     f"{self._for_update}", (envelope_id, *params))
            if not rows or rows[0][0] not in ("failed", "replaying"):
                raise StoreError(f"no failed envelope {envelope_id!r} in the result store")
            status, generation, envelope = rows[0]
            if status == "failed":
                # round -1: any end of the new generation is later than the mark
                generation += 1
                q("UPDATE results SET status='replaying', generation=?, round=-1,"
                  " recorded_at=? WHERE id=?", (generation, self._clock(), envelope_id))
            else:  # recorded before but not sent: the same replay, a fresh lease
                q("UPDATE results SET recorded_at=? WHERE id=?", (self._clock(), envelope_id))
        return replayed(json.loads(envelope), generation)

    def replay_sent(self, envelope_id: str, *, generation: int) -> None:
        with self.db.tx() as q:
            q("UPDATE results SET status='running' WHERE id=? AND status='replaying'"
              " AND generation=?", (envelope_id, generation))

    def unfinished_replays(self, *, older_than: float) -> list[str]:
        mine, params = self._mine()
        return [r[0] for r in self._rows(
            f"SELECT id FROM results WHERE status='replaying' AND recorded_at<=?{mine}"
            " ORDER BY recorded_at, id", (self._clock() - older_than, *params))]

    def forget(self, envelope_id: str) -> None:
        mine, params = self._mine()
        with self.db.tx() as q:
            q(f"DELETE FROM results WHERE id=?{mine}", (envelope_id, *params))

    # -- reading ------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.tx() as q:
            return q(sql, params)

    def get(self, envelope_id: str) -> ResultRecord | None:
        mine, params = self._mine()
        rows = self._rows(f"SELECT {_COLS} FROM results WHERE id=? AND {_ENDED_SQL}{mine}",
                          (envelope_id, *params))
        return _record(rows[0]) if rows else None

    def results(self, *, status: str | None = None, limit: int | None = None
                ) -> list[ResultRecord]:
        mine, params = self._mine()
        sql = f"SELECT {_COLS} FROM results WHERE {_ENDED_SQL}{mine}"
        if status:
            sql, params = sql + " AND status=?", (*params, status)
        sql += " ORDER BY recorded_at, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_record(r) for r in self._rows(sql, params)]

    def pieces(self, root_id: str) -> list[ResultRecord]:
        """Every ended piece of root ``root_id`` (itself, or its fan-out children)."""
        mine, params = self._mine()
        return [_record(r) for r in self._rows(
            f"SELECT {_COLS} FROM results WHERE root_id=? AND {_ENDED_SQL}{mine}"
            " ORDER BY recorded_at, id", (root_id, *params))]

    def totals(self) -> Totals:
        """Ended records per status of this mesh; ``duplicates`` over all its rows."""
        mine, params = self._mine()
        where = f" WHERE {mine.removeprefix(' AND ')}" if mine else ""
        counts, dups = dict.fromkeys(ENDED, 0), 0
        for status, count, dup in self._rows(self._TOTALS.format(where=where), params):
            if status in counts:
                counts[status] += int(count)
            dups += int(dup)
        return Totals(counts["succeeded"], counts["failed"], counts["paused"], dups)

    def ended_weight(self, root_ids: list[str]) -> dict[str, float]:
        """For each root id, the share of it that has ended (1.0 when all of it has)."""
        mine, params = self._mine()
        done: dict[str, Fraction] = defaultdict(Fraction)
        for start in range(0, len(root_ids), 500):
            chunk = root_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for root, weight in self._rows(
                    f"SELECT root_id, weight FROM results WHERE root_id IN ({marks})"
                    f" AND {_ENDED_SQL}{mine}", (*chunk, *params)):
                done[root] += Fraction(weight)
        return {root: float(done[root]) for root in root_ids}

    def close(self) -> None:
        self.db.close()


def _owner(mesh: str, row: Row) -> str:
    """The mesh a moved record belongs to; a write of another mesh is refused (meshes
    sharing a database must not share envelope ids)."""
    if not mesh or not row.mesh or mesh == row.mesh:
        return mesh or row.mesh
    raise StoreError(f"envelope {row.id!r} is recorded by mesh {mesh!r} in this database; "
                     f"mesh {row.mesh!r} cannot record it too (ids must differ between "
                     "meshes that share a store)")


def _record(row: tuple[Any, ...]) -> ResultRecord:
    envelope = json.loads(row[4])
    return ResultRecord(
        id=row[0], root_id=row[1], status=row[2], weight=row[3], envelope=envelope,
        payload=envelope.get("payload"), route=envelope.get("route", {}),
        error=json.loads(row[5]) if row[5] else None, recorded_at=row[6],
        duplicates=row[7],
    )

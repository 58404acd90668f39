"""The result store's logic, in portable SQL over a :class:`~asya_agents.stores.sql.Database`.

One row per envelope id: ``happy-end``, ``error-end`` and the review actor record ended
envelopes (``succeeded``, ``failed``, ``paused``); a duplicate delivery of the same
status is counted in ``duplicates``, never stored twice. Reads serve ``asya results``,
``asya send --wait``, the console and the gateway. The SQLite and PostgreSQL stores
(:mod:`.sqlite`, :mod:`.postgres`) only open their database and say how totals are
counted.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from asya_agents.stores.base import ENDED, ResultRecord, Status, Totals, result_row
from asya_agents.stores.sql import Database, Query

__all__ = ["RESULTS_DDL", "SQLResultStore"]

_COLS = "id, root_id, status, weight, envelope, error, recorded_at, duplicates"

#: The results table and its indexes, the same on both databases.
RESULTS_DDL = [
    "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, root_id TEXT NOT NULL,"
    " status TEXT NOT NULL, weight TEXT NOT NULL, envelope TEXT NOT NULL, error TEXT,"
    " recorded_at DOUBLE PRECISION NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS results_root ON results (root_id)",
    "CREATE INDEX IF NOT EXISTS results_status ON results (status, recorded_at)",
]


class SQLResultStore:
    """The :class:`~asya_agents.stores.base.ResultStore` on ``db``."""

    #: Whether a write is a short local call that may run on the event loop.
    inline_writes = False
    #: How :meth:`totals` reads the counts: one row (status, count, duplicates) each.
    _TOTALS = ("SELECT status, COUNT(*), COALESCE(SUM(duplicates), 0) FROM results"
               " GROUP BY status")

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock
        self._for_update = " FOR UPDATE" if db.dialect == "postgres" else ""

    # -- writing ------------------------------------------------------------------------

    def record(self, status: Status, envelope: dict[str, Any]) -> bool:
        return self.record_many(status, [envelope])[0]

    def record_many(self, status: Status, envelopes: list[dict[str, Any]]) -> list[bool]:
        now = self._clock()
        with self.db.tx() as q:
            return [self._upsert(q, result_row(status, env, now)) for env in envelopes]

    def _upsert(self, q: Query, row: tuple[Any, ...]) -> bool:
        """Insert, or move a record to a new status; count a repeat of the same status.
        (Updates in place: SQLite's ``INSERT OR REPLACE`` would delete the row without
        its delete trigger.)"""
        if q(f"INSERT INTO results ({_COLS}) VALUES (?,?,?,?,?,?,?,0)"
             " ON CONFLICT (id) DO NOTHING RETURNING id", row):
            return True
        old = q(f"SELECT status FROM results WHERE id=?{self._for_update}", (row[0],))
        if old and old[0][0] == row[2]:
            q("UPDATE results SET duplicates=duplicates+1 WHERE id=?", (row[0],))
            return False
        q("UPDATE results SET root_id=?, status=?, weight=?, envelope=?, error=?,"
          " recorded_at=? WHERE id=?", (*row[1:], row[0]))
        return True

    def forget(self, envelope_id: str) -> None:
        """Drop a record (before a replay)."""
        with self.db.tx() as q:
            q("DELETE FROM results WHERE id=?", (envelope_id,))

    # -- reading ------------------------------------------------------------------------

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.db.tx() as q:
            return q(sql, params)

    def get(self, envelope_id: str) -> ResultRecord | None:
        rows = self._rows(f"SELECT {_COLS} FROM results WHERE id=?", (envelope_id,))
        return _record(rows[0]) if rows else None

    def results(self, *, status: str | None = None, limit: int | None = None
                ) -> list[ResultRecord]:
        sql, params = f"SELECT {_COLS} FROM results", tuple[Any, ...]()
        if status:
            sql, params = sql + " WHERE status=?", (status,)
        sql += " ORDER BY recorded_at, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_record(r) for r in self._rows(sql, params)]

    def totals(self) -> Totals:
        counts, dups = dict.fromkeys(ENDED, 0), 0
        for status, count, dup in self._rows(self._TOTALS):
            counts[status] = int(count)
            dups += int(dup)
        return Totals(counts["succeeded"], counts["failed"], counts["paused"], dups)

    def ended_weight(self, root_ids: list[str]) -> dict[str, float]:
        """For each root id, the share of it that has ended (1.0 when all of it has)."""
        done: dict[str, Fraction] = defaultdict(Fraction)
        for start in range(0, len(root_ids), 500):
            chunk = root_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for root, weight in self._rows(
                    f"SELECT root_id, weight FROM results WHERE root_id IN ({marks})",
                    tuple(chunk)):
                done[root] += Fraction(weight)
        return {root: float(done[root]) for root in root_ids}

    def close(self) -> None:
        self.db.close()


def _record(row: tuple[Any, ...]) -> ResultRecord:
    envelope = json.loads(row[4])
    return ResultRecord(
        id=row[0], root_id=row[1], status=row[2], weight=row[3], envelope=envelope,
        payload=envelope.get("payload"), route=envelope.get("route", {}),
        error=json.loads(row[5]) if row[5] else None, recorded_at=row[6],
        duplicates=row[7],
    )

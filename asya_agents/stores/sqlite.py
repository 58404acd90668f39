"""SQLite result store, in the mesh's state folder beside the embedded queue."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path
from typing import Any

from asya_agents.errors import StoreError
from asya_agents.stores.base import ENDED, ResultRecord, Status, Totals, result_row

__all__ = ["SQLiteResultStore", "connect_wal"]

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS results (
        id TEXT PRIMARY KEY,
        root_id TEXT NOT NULL,
        status TEXT NOT NULL,
        weight TEXT NOT NULL,
        envelope TEXT NOT NULL,
        error TEXT,
        recorded_at REAL NOT NULL,
        duplicates INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS results_root ON results (root_id)",
    "CREATE INDEX IF NOT EXISTS results_status ON results (status, recorded_at)",
    # Totals per status, kept by triggers in the writing transaction, so that reading
    # them (asya status, the console, --wait) costs the same at ten rows or ten million.
    """CREATE TABLE IF NOT EXISTS result_totals (
        status TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        duplicates INTEGER NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS results_totals_insert AFTER INSERT ON results BEGIN
        INSERT INTO result_totals (status, count, duplicates)
        VALUES (NEW.status, 1, NEW.duplicates)
        ON CONFLICT (status) DO UPDATE SET count = count + 1,
                                           duplicates = duplicates + excluded.duplicates;
    END""",
    """CREATE TRIGGER IF NOT EXISTS results_totals_delete AFTER DELETE ON results BEGIN
        UPDATE result_totals SET count = count - 1, duplicates = duplicates - OLD.duplicates
        WHERE status = OLD.status;
    END""",
    """CREATE TRIGGER IF NOT EXISTS results_totals_update
    AFTER UPDATE OF status, duplicates ON results BEGIN
        UPDATE result_totals SET count = count - 1, duplicates = duplicates - OLD.duplicates
        WHERE status = OLD.status;
        INSERT INTO result_totals (status, count, duplicates)
        VALUES (NEW.status, 1, NEW.duplicates)
        ON CONFLICT (status) DO UPDATE SET count = count + 1,
                                           duplicates = duplicates + excluded.duplicates;
    END""",
]


def connect_wal(path: Path) -> sqlite3.Connection:
    """An autocommit connection in WAL mode that threads share under the caller's lock:
    what both SQLite stores open beside the embedded queue. sqlite3 errors propagate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class SQLiteResultStore:
    inline_writes = True  # a local file in WAL mode: short enough for the event loop

    def __init__(self, path: str | Path, *, clock: Any = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._conn = connect_wal(self.path)
            self._create_schema()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open result store {self.path}: {exc}") from exc

    def _create_schema(self) -> None:
        """Create what is missing, in one write transaction; a store written before the
        totals existed gets them counted from its rows once."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            had_totals = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='result_totals'"
            ).fetchone() is not None
            for statement in _SCHEMA:
                conn.execute(statement)
            if not had_totals:
                conn.execute("INSERT INTO result_totals (status, count, duplicates)"
                             " SELECT status, COUNT(*), COALESCE(SUM(duplicates), 0)"
                             " FROM results GROUP BY status")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"result store {self.path}: {exc}") from exc

    def record(self, status: Status, envelope: dict[str, Any]) -> bool:
        return self.record_many(status, [envelope])[0]

    def record_many(self, status: Status, envelopes: list[dict[str, Any]]) -> list[bool]:
        now = self._clock()
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                fresh = [self._upsert(result_row(status, env, now)) for env in envelopes]
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise StoreError(f"result store {self.path}: {exc}") from exc
        return fresh

    def _upsert(self, row: tuple[Any, ...]) -> bool:
        """Insert or move a record to a new status; count a repeat of the same status.
        (Updates in place rather than ``INSERT OR REPLACE``, whose implicit delete
        would not reach the totals' delete trigger.)"""
        old = self._conn.execute("SELECT status FROM results WHERE id=?", (row[0],)).fetchone()
        if old is None:
            self._conn.execute(
                "INSERT INTO results(id, root_id, status, weight, envelope, error,"
                " recorded_at, duplicates) VALUES (?,?,?,?,?,?,?,0)", row)
            return True
        if old[0] == row[2]:
            self._conn.execute("UPDATE results SET duplicates=duplicates+1 WHERE id=?",
                               (row[0],))
            return False
        self._conn.execute(
            "UPDATE results SET root_id=?, status=?, weight=?, envelope=?, error=?,"
            " recorded_at=? WHERE id=?", (*row[1:], row[0]))
        return True

    def _record(self, row: tuple[Any, ...]) -> ResultRecord:
        envelope = json.loads(row[4])
        return ResultRecord(
            id=row[0], root_id=row[1], status=row[2], weight=row[3], envelope=envelope,
            payload=envelope.get("payload"), route=envelope.get("route", {}),
            error=json.loads(row[5]) if row[5] else None, recorded_at=row[6],
            duplicates=row[7],
        )

    _COLS = "id, root_id, status, weight, envelope, error, recorded_at, duplicates"

    def get(self, envelope_id: str) -> ResultRecord | None:
        rows = self._exec(f"SELECT {self._COLS} FROM results WHERE id=?", (envelope_id,))
        return self._record(rows[0]) if rows else None

    def results(self, *, status: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        sql = f"SELECT {self._COLS} FROM results"
        params: tuple[Any, ...] = ()
        if status:
            sql += " WHERE status=?"
            params = (status,)
        sql += " ORDER BY recorded_at, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._record(r) for r in self._exec(sql, params)]

    def totals(self) -> Totals:
        counts = dict.fromkeys(ENDED, 0)
        dups = 0
        for status, count, dup in self._exec(
            "SELECT status, count, duplicates FROM result_totals"
        ):
            counts[status] = count
            dups += dup
        return Totals(counts["succeeded"], counts["failed"], counts["paused"], dups)

    def ended_weight(self, root_ids: list[str]) -> dict[str, float]:
        done: dict[str, Fraction] = defaultdict(Fraction)
        for start in range(0, len(root_ids), 500):
            chunk = root_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for root, weight in self._exec(
                f"SELECT root_id, weight FROM results WHERE root_id IN ({marks})", tuple(chunk)
            ):
                done[root] += Fraction(weight)
        return {root: float(done[root]) for root in root_ids}

    def forget(self, envelope_id: str) -> None:
        self._exec("DELETE FROM results WHERE id=?", (envelope_id,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

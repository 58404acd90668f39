"""The result store in PostgreSQL, for a mesh that runs on a cluster.

Same contract as :class:`~asya_agents.stores.sqlite.SQLiteResultStore` (one row per
envelope id; a duplicate delivery is counted, never stored twice), so ``happy-end``,
``error-end``, ``asya results`` and the review console read the same either way. The
table lives in the first schema of the connection's ``search_path`` (set it in the URL
with ``?options=-csearch_path%3Dmyschema`` to keep meshes apart).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from asya_agents.errors import ConfigError, StoreError
from asya_agents.stores.base import ENDED, ResultRecord, Status, Totals, result_row

__all__ = ["PostgresResultStore"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS results (id TEXT PRIMARY KEY, root_id TEXT NOT NULL,"
    " status TEXT NOT NULL, weight TEXT NOT NULL, envelope TEXT NOT NULL, error TEXT,"
    " recorded_at DOUBLE PRECISION NOT NULL, duplicates INTEGER NOT NULL DEFAULT 0)",
    "CREATE INDEX IF NOT EXISTS results_root ON results (root_id)",
    "CREATE INDEX IF NOT EXISTS results_status ON results (status, recorded_at)",
)
_COLS = "id, root_id, status, weight, envelope, error, recorded_at, duplicates"


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL store needs psycopg: pip install 'asya-agents[postgres]' ({exc})"
        ) from exc
    return psycopg


class PostgresResultStore:
    inline_writes = False  # a round trip to the server: written on a thread

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._pg = _psycopg()
        self.url = url
        self._clock = clock
        self._lock = threading.Lock()
        try:
            self._conn = self._pg.connect(url, autocommit=True)
            with self._conn.transaction():
                # Two processes creating the table at once would race; serialise them.
                self._conn.execute("SELECT pg_advisory_xact_lock(727002)")
                for ddl in _SCHEMA:
                    self._conn.execute(ddl)
        except self._pg.Error as exc:
            raise StoreError(f"cannot open result store {safe_url(url)}: {exc}") from exc

    def _exec(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                cur = self._conn.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
            except self._pg.Error as exc:
                raise StoreError(f"result store {safe_url(self.url)}: {exc}") from exc

    def record(self, status: Status, envelope: dict[str, Any]) -> bool:
        return self.record_many(status, [envelope])[0]

    def record_many(self, status: Status, envelopes: list[dict[str, Any]]) -> list[bool]:
        now = self._clock()
        with self._lock:
            try:
                with self._conn.transaction():
                    return [self._upsert(result_row(status, env, now)) for env in envelopes]
            except self._pg.Error as exc:
                raise StoreError(f"result store {safe_url(self.url)}: {exc}") from exc

    def _upsert(self, row: tuple[Any, ...]) -> bool:
        """Insert or move a record to a new status; count a repeat of the same status."""
        old = self._conn.execute("SELECT status FROM results WHERE id=%s FOR UPDATE",
                                 (row[0],)).fetchone()
        if old is not None and old[0] == row[2]:
            self._conn.execute("UPDATE results SET duplicates=duplicates+1 WHERE id=%s",
                               (row[0],))
            return False
        self._conn.execute(
            f"INSERT INTO results ({_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,0)"
            " ON CONFLICT (id) DO UPDATE SET root_id=EXCLUDED.root_id,"
            " status=EXCLUDED.status, weight=EXCLUDED.weight,"
            " envelope=EXCLUDED.envelope, error=EXCLUDED.error,"
            " recorded_at=EXCLUDED.recorded_at", row)
        return True

    def _record(self, row: tuple[Any, ...]) -> ResultRecord:
        envelope = json.loads(row[4])
        return ResultRecord(
            id=row[0], root_id=row[1], status=row[2], weight=row[3], envelope=envelope,
            payload=envelope.get("payload"), route=envelope.get("route", {}),
            error=json.loads(row[5]) if row[5] else None, recorded_at=row[6],
            duplicates=row[7],
        )

    def get(self, envelope_id: str) -> ResultRecord | None:
        rows = self._exec(f"SELECT {_COLS} FROM results WHERE id=%s", (envelope_id,))
        return self._record(rows[0]) if rows else None

    def results(self, *, status: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        sql = f"SELECT {_COLS} FROM results"
        params: tuple[Any, ...] = ()
        if status:
            sql, params = sql + " WHERE status=%s", (status,)
        sql += " ORDER BY recorded_at, id"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [self._record(r) for r in self._exec(sql, params)]

    def totals(self) -> Totals:
        counts, dups = dict.fromkeys(ENDED, 0), 0
        for status, count, dup in self._exec(
                "SELECT status, COUNT(*), COALESCE(SUM(duplicates), 0) FROM results"
                " GROUP BY status"):
            counts[status] = int(count)
            dups += int(dup)
        return Totals(counts["succeeded"], counts["failed"], counts["paused"], dups)

    def ended_weight(self, root_ids: list[str]) -> dict[str, float]:
        done: dict[str, Fraction] = defaultdict(Fraction)
        for start in range(0, len(root_ids), 500):
            chunk = root_ids[start:start + 500]
            for root, weight in self._exec(
                    "SELECT root_id, weight FROM results WHERE root_id = ANY(%s)", (chunk,)):
                done[root] += Fraction(weight)
        return {root: float(done[root]) for root in root_ids}

    def forget(self, envelope_id: str) -> None:
        self._exec("DELETE FROM results WHERE id=%s", (envelope_id,))

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"

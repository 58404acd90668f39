"""The gateway's table of jobs: which root envelopes it submitted, under which
``Idempotency-Key``, and which a client cancelled.

The gateway keeps no state of its own beyond the mesh's stores (DESIGN.md), so what it
must remember across restarts and across its replicas lives here, beside the result
store: SQLite in the state folder (``gateway.db``) or the mesh's PostgreSQL database.
A submission with a key gets the id derived from the client and the key, so a repeat
(after a timeout, after a gateway restart, on another gateway replica) finds the row
and answers with the same job; the body's hash tells a repeat from a reuse of the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asya_agents.errors import ConfigError
from asya_agents.stores.base import is_postgres_url
from asya_agents.stores.sql import Database, PostgresDB, SQLiteDB

__all__ = ["JOBS_DDL", "JobRow", "JobStore", "open_job_store"]

#: The jobs table, the same on both databases.
JOBS_DDL = [
    "CREATE TABLE IF NOT EXISTS gateway_jobs (id TEXT PRIMARY KEY, client TEXT NOT NULL,"
    " idem_key TEXT, body_hash TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,"
    " cancelled_at DOUBLE PRECISION, cancelled_by TEXT)",
]
_COLS = "id, client, idem_key, body_hash, created_at, cancelled_at, cancelled_by"


@dataclass(frozen=True)
class JobRow:
    """One submitted job; ``idem_key`` is the client's ``Idempotency-Key``, if any."""

    id: str
    client: str
    idem_key: str | None
    body_hash: str
    created_at: float
    cancelled_at: float | None = None
    cancelled_by: str | None = None


class JobStore:
    """The jobs table on ``db`` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def record(self, rows: list[JobRow]) -> None:
        """Insert ``rows`` in one transaction; a row whose id exists stays as it was."""
        if not rows:
            return
        with self.db.tx() as q:
            for r in rows:
                q(f"INSERT INTO gateway_jobs ({_COLS}) VALUES (?,?,?,?,?,?,?)"
                  " ON CONFLICT (id) DO NOTHING",
                  (r.id, r.client, r.idem_key, r.body_hash, r.created_at, r.cancelled_at,
                   r.cancelled_by))

    def get(self, job_id: str) -> JobRow | None:
        with self.db.tx() as q:
            rows = q(f"SELECT {_COLS} FROM gateway_jobs WHERE id = ?", (job_id,))
        return _row(rows[0]) if rows else None

    def mark_cancelled(self, job_id: str, *, by: str, at: float) -> bool:
        """Mark ``job_id`` cancelled (once); False when it was already, or is unknown."""
        with self.db.tx() as q:
            done = q("UPDATE gateway_jobs SET cancelled_at = ?, cancelled_by = ?"
                     " WHERE id = ? AND cancelled_at IS NULL RETURNING id",
                     (at, by, job_id))
        return bool(done)

    def close(self) -> None:
        self.db.close()


def _row(row: tuple[Any, ...]) -> JobRow:
    return JobRow(id=row[0], client=row[1], idem_key=row[2], body_hash=row[3],
                  created_at=float(row[4]),
                  cancelled_at=None if row[5] is None else float(row[5]),
                  cancelled_by=row[6])


def open_job_store(url: str | None, *, state_dir: Path) -> JobStore:
    """The jobs table beside the result store at ``url``: ``gateway.db`` in
    ``state_dir`` when unset, ``PATH-gateway.db`` beside a ``sqlite:///PATH.db``
    store, the same database for PostgreSQL."""
    if not url:
        return JobStore(SQLiteDB(state_dir / "gateway.db", what="gateway job table",
                                 schema=JOBS_DDL))
    if is_postgres_url(url):
        return JobStore(PostgresDB(url, what="gateway job table", schema=JOBS_DDL,
                                   lock_key=727017))
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return JobStore(SQLiteDB(path.with_name(f"{path.stem}-gateway.db"),
                                 what="gateway job table", schema=JOBS_DDL))
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")

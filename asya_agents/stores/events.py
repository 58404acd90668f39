"""The hop-event feed: an append-only table of what happened to every piece of every job.

The result store says how envelopes *ended*; a client watching a job also wants each
hop on the way. When a mesh has a gateway, its replicas append one row per hop, retry
and end here (:mod:`asya_agents.observe.events`, group-committed so that a hop pays no
commit of its own), and the gateway reads it two ways: one tail loop per gateway
follows ``seq`` and fans the rows out to its open streams, and a client reconnecting
with ``Last-Event-ID`` is replayed from the table (``seq`` is the SSE id), which
survives a gateway restart.

SQLite: a file of its own in the state folder (``events.db``, WAL), so that appends
never wait on the result store's write lock; the gateway polls it by ``seq``.
PostgreSQL: a table whose appends ``NOTIFY`` :data:`CHANNEL`, so that the gateway
sleeps until woken (:class:`~asya_agents.stores.sql.PostgresListener`). Appends there
take a transaction-scoped advisory lock, so rows commit in ``seq`` order and a reader
that follows ``seq`` never skips one committed late with a smaller number.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.errors import ConfigError, StoreError
from asya_agents.stores.base import is_postgres_url
from asya_agents.stores.sql import (
    Database,
    PostgresDB,
    PostgresListener,
    Query,
    SQLiteDB,
    connect_wal,
)

__all__ = ["CHANNEL", "KINDS", "EventStore", "HopEvent", "NewEvent", "open_event_store"]

#: What a row says happened to a piece: it moved on (``hop``), failed and will be
#: retried (``retry``), failed for good (``error``, on its way to error-end), ended
#: (``succeeded``, ``failed``), was parked for a person (``paused``) or was resumed by a
#: decision (``resumed``).
KINDS = ("hop", "retry", "error", "succeeded", "failed", "paused", "resumed")
#: The PostgreSQL channel appends notify.
CHANNEL = "asya_gateway_events"
_LOCK_KEY = 727016
_COLS = "seq, root_id, piece, actor, kind, at, data"


def _ddl(seq: str) -> list[str]:
    return [
        f"CREATE TABLE IF NOT EXISTS gateway_events (seq {seq},"
        " root_id TEXT NOT NULL, piece TEXT NOT NULL, actor TEXT NOT NULL,"
        " kind TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, data TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS gateway_events_root ON gateway_events (root_id, seq)",
    ]


@dataclass(frozen=True)
class NewEvent:
    """A row to append: ``piece`` is the envelope id, ``root_id`` its job."""

    root_id: str
    piece: str
    actor: str
    kind: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HopEvent:
    """A row of the feed, with its place in it."""

    seq: int
    root_id: str
    piece: str
    actor: str
    kind: str
    at: float
    data: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The event as the gateway's streams send it."""
        return {"job": self.root_id, "piece": self.piece, "actor": self.actor,
                "kind": self.kind, "at": self.at, **self.data}


class EventStore:
    """The feed on ``db`` (SQLite or PostgreSQL); ``url`` is where a PostgreSQL
    listener connects (``None`` on SQLite). On SQLite, reads go through a connection
    of their own (``reader``, the database file) that never takes the write lock, so
    a tail loop polling the feed never waits for, or delays, a replica's append."""

    def __init__(self, db: Database, *, url: str | None = None,
                 reader: Path | None = None) -> None:
        self.db = db
        self.url = url
        self._reader = connect_wal(reader) if reader is not None else None
        self._reading = threading.Lock()

    # -- writing ----------------------------------------------------------------------

    def append(self, events: Iterable[NewEvent]) -> None:
        """Append ``events`` in one transaction (in order)."""
        rows = [(e.root_id, e.piece, e.actor, e.kind, e.at, json.dumps(e.data))
                for e in events]
        if not rows:
            return
        with self.db.tx() as q:
            if self.db.dialect == "postgres":
                q("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
            for row in rows:
                q("INSERT INTO gateway_events (root_id, piece, actor, kind, at, data)"
                  " VALUES (?,?,?,?,?,?)", row)
            if self.db.dialect == "postgres":
                q(f"NOTIFY {CHANNEL}", ())

    def prune(self, before: float) -> int:
        """Drop events older than ``before`` (epoch seconds); how many went."""
        with self.db.tx() as q:
            gone = q("DELETE FROM gateway_events WHERE at < ? RETURNING seq", (before,))
        return len(gone)

    # -- reading ----------------------------------------------------------------------

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        if self._reader is None:
            with self.db.tx() as q:
                return q(sql, params)
        try:
            with self._reading:
                return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"event feed: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[HopEvent]:
        return [_event(row) for row in self._query(sql, params)]

    def after(self, seq: int, *, limit: int = 1000) -> list[HopEvent]:
        """Events past ``seq``, oldest first: what a tail loop reads next."""
        return self._read(f"SELECT {_COLS} FROM gateway_events WHERE seq > ?"
                          f" ORDER BY seq LIMIT {int(limit)}", (seq,))

    def for_root(self, root_id: str, *, after: int = 0) -> list[HopEvent]:
        """Every event of job ``root_id`` past ``after``: what a reconnect replays."""
        return self._read(f"SELECT {_COLS} FROM gateway_events WHERE root_id = ?"
                          " AND seq > ? ORDER BY seq", (root_id, after))

    def started(self, root_ids: list[str]) -> set[str]:
        """The roots of ``root_ids`` that have any event (a hop happened)."""
        found: set[str] = set()
        for start in range(0, len(root_ids), 500):
            chunk = root_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._query(
                f"SELECT DISTINCT root_id FROM gateway_events WHERE root_id IN ({marks})",
                tuple(chunk)))
        return found

    def last_seq(self) -> int:
        rows = self._query("SELECT MAX(seq) FROM gateway_events", ())
        return int(rows[0][0] or 0)

    def listener(self) -> PostgresListener | None:
        """A connection that wakes on appends (PostgreSQL); ``None``: poll (SQLite)."""
        if self.url is None:
            return None
        return PostgresListener(self.url, CHANNEL, what="event feed")

    def close(self) -> None:
        if self._reader is not None:
            with self._reading:
                self._reader.close()
        self.db.close()


def _event(row: tuple[Any, ...]) -> HopEvent:
    return HopEvent(seq=int(row[0]), root_id=row[1], piece=row[2], actor=row[3],
                    kind=row[4], at=float(row[5]), data=json.loads(row[6]))


def _sqlite_schema(query: Query) -> None:
    # AUTOINCREMENT: a seq is never reused, even once pruning emptied the table, so a
    # Last-Event-ID from before the prune never hides newer events.
    for ddl in _ddl("INTEGER PRIMARY KEY AUTOINCREMENT"):
        query(ddl, ())


def _sqlite(path: Path) -> EventStore:
    try:
        return EventStore(SQLiteDB(path, what="event feed", schema=_sqlite_schema),
                          reader=path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open event feed {path}: {exc}") from exc


def open_event_store(url: str | None, *, state_dir: Path) -> EventStore:
    """The feed beside the result store at ``url``: ``events.db`` in ``state_dir`` when
    unset, ``PATH-events.db`` beside a ``sqlite:///PATH.db`` store, the same database
    for PostgreSQL."""
    if not url:
        return _sqlite(state_dir / "events.db")
    if is_postgres_url(url):
        return EventStore(PostgresDB(url, what="event feed",
                                     schema=_ddl("BIGSERIAL PRIMARY KEY"),
                                     lock_key=_LOCK_KEY), url=url)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return _sqlite(path.with_name(f"{path.stem}-events.db"))
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")

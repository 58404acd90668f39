"""The two SQL databases the stores run on, behind one small interface.

Every store of the mesh (results, review items, fan-in groups) keeps its logic in
portable SQL and runs it in transactions of a :class:`Database`: SQLite in the mesh's
state folder beside the embedded transport, or PostgreSQL on a cluster. A transaction
yields a ``query(sql, params)`` function with ``?`` placeholders (rewritten for
psycopg) and takes the write lock from its start on SQLite (``BEGIN IMMEDIATE``), so a
compare-and-set holds across threads and processes on both. Database errors become
:class:`~asya_agents.errors.StoreError` naming the store and the URL, never a password.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from asya_agents.errors import ConfigError, StoreError

__all__ = ["Database", "PostgresDB", "PostgresListener", "Query", "SQLiteDB", "Schema",
           "columns", "connect_wal", "safe_url"]

Query = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]
#: DDL statements, or a function that creates what is missing in the transaction given.
Schema = Sequence[str] | Callable[[Query], None]


def _create(query: Query, schema: Schema) -> None:
    if callable(schema):
        schema(query)
        return
    for ddl in schema:
        query(ddl, ())


class Database(Protocol):
    #: ``sqlite`` or ``postgres``: what the few non-portable statements are chosen by.
    dialect: str

    def tx(self) -> AbstractContextManager[Query]:
        """A transaction holding the write lock from its start; yields ``query``."""
        ...

    def close(self) -> None: ...


def columns(query: Query, dialect: str, table: str) -> list[str]:
    """The columns ``table`` has now (none when it does not exist): what a migration
    that adds columns to a table of an earlier version checks first."""
    if dialect == "sqlite":
        return [row[1] for row in query(f"PRAGMA table_info({table})", ())]
    return [row[0] for row in query(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = ?", (table,))]


def connect_wal(path: Path) -> sqlite3.Connection:
    """An autocommit connection in WAL mode that threads share under the caller's lock.
    sqlite3 errors propagate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class SQLiteDB:
    """A SQLite file in WAL mode, one connection shared by this process's threads."""

    dialect = "sqlite"

    def __init__(self, path: str | Path, *, what: str, schema: Schema) -> None:
        self.path = Path(path)
        self.what = what
        self._lock = threading.Lock()
        try:
            self._conn = connect_wal(self.path)
            with self.tx() as query:
                _create(query, schema)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open {what} {self.path}: {exc}") from exc

    @contextmanager
    def tx(self) -> Iterator[Query]:
        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return self._conn.execute(sql, params).fetchall()

        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield query
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"{self.what} {self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _psycopg(what: str) -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL {what} needs psycopg: pip install 'asya-agents[postgres]' ({exc})"
        ) from exc
    return psycopg


class PostgresDB:
    """A PostgreSQL database; the tables live in the first schema of the connection's
    ``search_path`` (``?options=-csearch_path%3Dmyschema`` in the URL keeps meshes
    apart). ``lock_key`` serialises the creation of the schema across processes."""

    dialect = "postgres"

    def __init__(self, url: str, *, what: str, schema: Schema, lock_key: int) -> None:
        self._pg = _psycopg(what)
        self.url = url
        self.what = what
        self._lock = threading.Lock()
        try:
            self._conn = self._pg.connect(url, autocommit=True)
            with self.tx() as query:
                # Two processes creating the tables at once would race; serialise them.
                query("SELECT pg_advisory_xact_lock(?)", (lock_key,))
                _create(query, schema)
        except StoreError as exc:
            raise StoreError(f"cannot open {exc}") from exc
        except self._pg.Error as exc:
            raise StoreError(f"cannot open {what} {safe_url(url)}: {exc}") from exc

    @contextmanager
    def tx(self) -> Iterator[Query]:
        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            cur = self._conn.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

        with self._lock:
            try:
                with self._conn.transaction():
                    yield query
            except self._pg.Error as exc:
                raise StoreError(f"{self.what} {safe_url(self.url)}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresListener:
    """A connection of its own that ``LISTEN``s on ``channel``: :meth:`wait` blocks (call
    it on a thread) until a ``NOTIFY`` on the channel arrives or ``timeout`` passes, so
    that a reader of a table wakes when a writer commits instead of polling it."""

    def __init__(self, url: str, channel: str, *, what: str) -> None:
        self._pg = _psycopg(what)
        self.url, self.what = url, what
        try:
            self._conn = self._pg.connect(url, autocommit=True)
            self._conn.execute(f"LISTEN {channel}")
        except self._pg.Error as exc:
            raise StoreError(f"cannot listen for {what} {safe_url(url)}: {exc}") from exc

    def wait(self, timeout: float) -> bool:
        """Whether a notification came within ``timeout`` seconds."""
        notifies = self._conn.notifies(timeout=timeout, stop_after=1)
        try:
            return next(notifies, None) is not None
        except self._pg.Error as exc:
            raise StoreError(f"{self.what} {safe_url(self.url)}: {exc}") from exc
        finally:
            notifies.close()  # it holds the connection's lock until closed

    def close(self) -> None:
        self._conn.close()


def safe_url(url: str) -> str:
    """``url`` without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}@{host}"

"""The review store in SQLite, beside the embedded transport in the mesh's state folder.

Every transaction starts with ``BEGIN IMMEDIATE``, which takes SQLite's write lock up
front: the compare-and-set of a decision then holds across threads and processes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from asya_agents.errors import StoreError
from asya_agents.stores.review_base import Query, SQLReviewStore, schema
from asya_agents.stores.sqlite import connect_wal

__all__ = ["SQLiteReviewStore"]


class SQLiteReviewStore(SQLReviewStore):
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._conn = connect_wal(self.path)
            for ddl in schema(autoincrement="INTEGER PRIMARY KEY AUTOINCREMENT"):
                self._conn.execute(ddl)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open review store {self.path}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Query]:
        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            return self._conn.execute(sql, params).fetchall()

        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                yield query
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"review store {self.path}: {exc}") from exc
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

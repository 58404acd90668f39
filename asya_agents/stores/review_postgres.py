"""The review store in PostgreSQL, for a mesh that runs on a cluster.

The tables live in the first schema of the connection's ``search_path`` (set it in the
URL with ``?options=-csearch_path%3Dmyschema`` to keep meshes apart). Under READ
COMMITTED a decision's ``UPDATE … WHERE status = 'pending'`` waits for a concurrent one
on the same row and then re-checks its condition, so exactly one of them changes it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from asya_agents.errors import ConfigError, StoreError
from asya_agents.stores.postgres import safe_url as _safe
from asya_agents.stores.review_base import Query, SQLReviewStore, schema

__all__ = ["PostgresReviewStore"]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"a PostgreSQL review store needs psycopg: pip install 'asya-agents[postgres]' "
            f"({exc})"
        ) from exc
    return psycopg


class PostgresReviewStore(SQLReviewStore):
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._pg = _psycopg()
        self.url = url
        self._lock = threading.Lock()
        try:
            self._conn = self._pg.connect(url, autocommit=True)
            with self._conn.transaction():
                # Two processes creating the tables at once would race; serialise them.
                self._conn.execute("SELECT pg_advisory_xact_lock(727001)")
                for ddl in schema(autoincrement="BIGSERIAL PRIMARY KEY"):
                    self._conn.execute(ddl)
        except self._pg.Error as exc:
            raise StoreError(f"cannot open review store {_safe(url)}: {exc}") from exc

    @contextmanager
    def _tx(self) -> Iterator[Query]:
        def query(sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
            cur = self._conn.execute(sql.replace("?", "%s"), params)
            return list(cur.fetchall()) if cur.description else []

        with self._lock:
            try:
                with self._conn.transaction():
                    yield query
            except self._pg.Error as exc:
                raise StoreError(f"review store {_safe(self.url)}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

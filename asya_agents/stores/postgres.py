"""The result store in PostgreSQL, for a mesh that runs on a cluster.

Same contract and the same SQL as the SQLite store
(:class:`~asya_agents.stores.results.SQLResultStore`), so ``happy-end``, ``error-end``,
``asya results`` and the review console read the same either way. The table lives in the
first schema of the connection's ``search_path`` (``?options=-csearch_path%3Dmyschema``
in the URL); meshes may also share one table, each reading its own rows. A table written
by an earlier version gets its missing columns when a store first opens it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asya_agents.stores.results import SQLResultStore, create_results
from asya_agents.stores.sql import PostgresDB, Query, safe_url

__all__ = ["PostgresResultStore", "safe_url"]


def _schema(query: Query) -> None:
    create_results(query, "postgres")


class PostgresResultStore(SQLResultStore):
    inline_writes = False  # a round trip to the server: written on a thread

    def __init__(self, url: str, *, mesh: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.url = url
        super().__init__(PostgresDB(url, what="result store", schema=_schema,
                                    lock_key=727002), mesh=mesh, clock=clock)

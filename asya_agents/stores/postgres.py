"""The result store in PostgreSQL, for a mesh that runs on a cluster.

Same contract and the same SQL as the SQLite store
(:class:`~asya_agents.stores.results.SQLResultStore`), so ``happy-end``, ``error-end``,
``asya results`` and the review console read the same either way. The table lives in the
first schema of the connection's ``search_path`` (set it in the URL with
``?options=-csearch_path%3Dmyschema`` to keep meshes apart).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asya_agents.stores.results import RESULTS_DDL, SQLResultStore
from asya_agents.stores.sql import PostgresDB, safe_url

__all__ = ["PostgresResultStore", "safe_url"]


class PostgresResultStore(SQLResultStore):
    inline_writes = False  # a round trip to the server: written on a thread

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        super().__init__(PostgresDB(url, what="result store", schema=RESULTS_DDL,
                                    lock_key=727002), clock=clock)

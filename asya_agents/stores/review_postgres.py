"""The review store in PostgreSQL, for a mesh that runs on a cluster.

The tables live in the first schema of the connection's ``search_path`` (set it in the
URL with ``?options=-csearch_path%3Dmyschema`` to keep meshes apart). Under READ
COMMITTED a decision's ``UPDATE … WHERE status = 'pending'`` waits for a concurrent one
on the same row and then re-checks its condition, so exactly one of them changes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asya_agents.stores.review_base import SQLReviewStore, schema
from asya_agents.stores.sql import PostgresDB

__all__ = ["PostgresReviewStore"]


class PostgresReviewStore(SQLReviewStore):
    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        super().__init__(PostgresDB(url, what="review store", schema=schema("postgres"),
                                    lock_key=727001), clock=clock)

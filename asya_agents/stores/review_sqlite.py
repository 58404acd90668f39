"""The review store in SQLite, beside the embedded transport in the mesh's state folder.

Every transaction starts with ``BEGIN IMMEDIATE`` (:class:`~asya_agents.stores.sql.SQLiteDB`),
which takes SQLite's write lock up front: the compare-and-set of a decision then holds
across threads and processes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from asya_agents.stores.review_base import SQLReviewStore, schema
from asya_agents.stores.sql import SQLiteDB

__all__ = ["SQLiteReviewStore"]


class SQLiteReviewStore(SQLReviewStore):
    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDB(self.path, what="review store", schema=schema("sqlite")),
                         clock=clock)

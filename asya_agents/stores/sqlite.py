"""The result store in SQLite, in the mesh's state folder beside the embedded queue.

The logic is :class:`~asya_agents.stores.results.SQLResultStore`'s; this store adds the
totals per status kept by triggers in the writing transaction, so that reading them
(``asya status``, the console, ``--wait``) costs the same at ten rows or ten million.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from asya_agents.stores.results import RESULTS_DDL, SQLResultStore
from asya_agents.stores.sql import Query, SQLiteDB, connect_wal

__all__ = ["SQLiteResultStore", "connect_wal"]

_TOTALS_DDL = [
    """CREATE TABLE IF NOT EXISTS result_totals (
        status TEXT PRIMARY KEY,
        count INTEGER NOT NULL,
        duplicates INTEGER NOT NULL
    )""",
    """CREATE TRIGGER IF NOT EXISTS results_totals_insert AFTER INSERT ON results BEGIN
        INSERT INTO result_totals (status, count, duplicates)
        VALUES (NEW.status, 1, NEW.duplicates)
        ON CONFLICT (status) DO UPDATE SET count = count + 1,
                                           duplicates = duplicates + excluded.duplicates;
    END""",
    """CREATE TRIGGER IF NOT EXISTS results_totals_delete AFTER DELETE ON results BEGIN
        UPDATE result_totals SET count = count - 1, duplicates = duplicates - OLD.duplicates
        WHERE status = OLD.status;
    END""",
    """CREATE TRIGGER IF NOT EXISTS results_totals_update
    AFTER UPDATE OF status, duplicates ON results BEGIN
        UPDATE result_totals SET count = count - 1, duplicates = duplicates - OLD.duplicates
        WHERE status = OLD.status;
        INSERT INTO result_totals (status, count, duplicates)
        VALUES (NEW.status, 1, NEW.duplicates)
        ON CONFLICT (status) DO UPDATE SET count = count + 1,
                                           duplicates = duplicates + excluded.duplicates;
    END""",
]


def _schema(query: Query) -> None:
    """Create what is missing; a store written before the totals existed gets them
    counted from its rows once."""
    had_totals = bool(query("SELECT 1 FROM sqlite_master WHERE type='table'"
                            " AND name='result_totals'", ()))
    for ddl in [*RESULTS_DDL, *_TOTALS_DDL]:
        query(ddl, ())
    if not had_totals:
        query("INSERT INTO result_totals (status, count, duplicates)"
              " SELECT status, COUNT(*), COALESCE(SUM(duplicates), 0)"
              " FROM results GROUP BY status", ())


class SQLiteResultStore(SQLResultStore):
    inline_writes = True  # a local file in WAL mode: short enough for the event loop
    _TOTALS = "SELECT status, count, duplicates FROM result_totals"

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDB(self.path, what="result store", schema=_schema),
                         clock=clock)

"""The result store in SQLite, in the mesh's state folder beside the embedded queue.

The logic is :class:`~asya_agents.stores.results.SQLResultStore`'s; this store adds the
totals per mesh and status kept by triggers in the writing transaction, so that reading
them (``asya status``, the console, ``--wait``) costs the same at ten rows or ten
million. A store written by an earlier version gets its missing columns and its totals
(re)counted from its rows once, when it is first opened.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from asya_agents.stores.results import SQLResultStore, create_results
from asya_agents.stores.sql import Query, SQLiteDB, columns, connect_wal

__all__ = ["SQLiteResultStore", "connect_wal"]

_ADD = """INSERT INTO result_totals (mesh, status, count, duplicates)
        VALUES (NEW.mesh, NEW.status, 1, NEW.duplicates)
        ON CONFLICT (mesh, status) DO UPDATE SET count = count + 1,
                                                 duplicates = duplicates + excluded.duplicates;"""
_SUBTRACT = """UPDATE result_totals SET count = count - 1,
                                        duplicates = duplicates - OLD.duplicates
        WHERE mesh = OLD.mesh AND status = OLD.status;"""
_TRIGGERS = ("results_totals_insert", "results_totals_delete", "results_totals_update")
_TOTALS_DDL = [
    """CREATE TABLE IF NOT EXISTS result_totals (
        mesh TEXT NOT NULL,
        status TEXT NOT NULL,
        count INTEGER NOT NULL,
        duplicates INTEGER NOT NULL,
        PRIMARY KEY (mesh, status)
    )""",
    f"CREATE TRIGGER IF NOT EXISTS results_totals_insert AFTER INSERT ON results"
    f" BEGIN {_ADD} END",
    f"CREATE TRIGGER IF NOT EXISTS results_totals_delete AFTER DELETE ON results"
    f" BEGIN {_SUBTRACT} END",
    f"CREATE TRIGGER IF NOT EXISTS results_totals_update"
    f" AFTER UPDATE OF status, duplicates, mesh ON results BEGIN {_SUBTRACT} {_ADD} END",
]


def _schema(query: Query) -> None:
    """Create what is missing; totals from before they were kept per mesh (or from
    before they were kept at all) are dropped and counted from the rows once."""
    had = columns(query, "sqlite", "result_totals")
    create_results(query, "sqlite")
    if had and "mesh" not in had:
        for trigger in _TRIGGERS:
            query(f"DROP TRIGGER IF EXISTS {trigger}", ())
        query("DROP TABLE result_totals", ())
    for ddl in _TOTALS_DDL:
        query(ddl, ())
    if "mesh" not in had:
        query("INSERT INTO result_totals (mesh, status, count, duplicates)"
              " SELECT mesh, status, COUNT(*), COALESCE(SUM(duplicates), 0)"
              " FROM results GROUP BY mesh, status", ())


class SQLiteResultStore(SQLResultStore):
    inline_writes = True  # a local file in WAL mode: short enough for the event loop
    _TOTALS = ("SELECT status, SUM(count), SUM(duplicates) FROM result_totals{where}"
               " GROUP BY status")

    def __init__(self, path: str | Path, *, mesh: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        super().__init__(SQLiteDB(self.path, what="result store", schema=_schema),
                         mesh=mesh, clock=clock)

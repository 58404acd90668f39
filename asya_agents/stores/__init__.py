"""Stores: where ended envelopes are recorded and parked ones wait for a person.

``happy-end`` and ``error-end`` write the result store; ``asya results``, ``asya send
--wait``, the review console and the gateway read it. The review actor parks envelopes
in the review store and the console decides them there. SQLite beside the embedded
transport for a local mesh; PostgreSQL for a cluster (``ASYA_STORE_URL=postgresql://…``).
The result store keeps one row per envelope id, so a duplicate delivery (at-least-once)
is counted, never stored twice. :func:`open_result_store` and :func:`open_review_store`
are the one place that picks a store from its URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from asya_agents.errors import ConfigError
from asya_agents.stores.base import ResultRecord, ResultStore, Totals, is_postgres_url
from asya_agents.stores.sqlite import SQLiteResultStore

if TYPE_CHECKING:
    from asya_agents.stores.groups import GroupStore
    from asya_agents.stores.review_base import ReviewStore

__all__ = ["ResultRecord", "ResultStore", "SQLiteResultStore", "Totals", "open_group_store",
           "open_result_store", "open_review_store"]

#: Serialises the creation of the fan-in group tables on PostgreSQL.
_GROUPS_LOCK_KEY = 727005


def open_result_store(url: str | None, *, state_dir: Path,
                      mesh: str | None = None) -> ResultStore:
    """The store at ``url``, or SQLite in ``state_dir`` when ``url`` is unset; with
    ``mesh``, it records that mesh's rows and reads only them (see
    :mod:`~asya_agents.stores.results`)."""
    if not url:
        return SQLiteResultStore(state_dir / "results.db", mesh=mesh)
    if is_postgres_url(url):
        try:
            from asya_agents.stores.postgres import PostgresResultStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                f"a PostgreSQL store needs psycopg: pip install 'asya-agents[postgres]' ({exc})"
            ) from exc
        return PostgresResultStore(url, mesh=mesh)  # type: ignore[no-any-return,unused-ignore]
    if url.startswith("sqlite:///"):
        return SQLiteResultStore(Path(url.removeprefix("sqlite:///")), mesh=mesh)
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")


def open_review_store(url: str | None, *, state_dir: Path,
                      clock: Callable[[], float] = time.time) -> ReviewStore:
    """SQLite in ``state_dir`` when ``url`` is unset; PostgreSQL for postgresql:// URLs."""
    if not url:
        from asya_agents.stores.review_sqlite import SQLiteReviewStore

        return SQLiteReviewStore(state_dir / "review.db", clock=clock)
    if is_postgres_url(url):
        from asya_agents.stores.review_postgres import PostgresReviewStore

        return PostgresReviewStore(url, clock=clock)
    if url.startswith("sqlite:///"):
        from asya_agents.stores.review_sqlite import SQLiteReviewStore

        path = Path(url.removeprefix("sqlite:///"))
        return SQLiteReviewStore(path.with_name(f"{path.stem}-review.db"), clock=clock)
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")


def open_group_store(url: str | None, *, state_dir: Path, mesh: str) -> GroupStore:
    """The fan-in group store of ``mesh`` (:mod:`~asya_agents.stores.groups`): SQLite
    in ``state_dir`` when ``url`` is unset, else the database of the store URL."""
    from asya_agents.stores.groups import GroupStore, schema
    from asya_agents.stores.sql import PostgresDB, SQLiteDB

    what = "fan-in group store"
    if not url:
        return GroupStore(SQLiteDB(state_dir / "groups.db", what=what, schema=schema()),
                          mesh=mesh)
    if is_postgres_url(url):
        return GroupStore(PostgresDB(url, what=what, schema=schema(),
                                     lock_key=_GROUPS_LOCK_KEY), mesh=mesh)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return GroupStore(SQLiteDB(path.with_name(f"{path.stem}-groups.db"), what=what,
                                   schema=schema()), mesh=mesh)
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")

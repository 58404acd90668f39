"""Stores: where ended envelopes are recorded.

``happy-end`` and ``error-end`` write here; ``asya results``, ``asya send --wait`` and
the review console read here. SQLite beside the embedded transport for a local mesh;
PostgreSQL for a cluster (``ASYA_STORE_URL=postgresql://…``). Both keep one row per
envelope id, so a duplicate delivery (at-least-once) is counted, never stored twice.
"""

from __future__ import annotations

from pathlib import Path

from asya_agents.errors import ConfigError
from asya_agents.stores.base import ResultRecord, ResultStore, Totals, is_postgres_url
from asya_agents.stores.sqlite import SQLiteResultStore

__all__ = ["ResultRecord", "ResultStore", "SQLiteResultStore", "Totals", "open_result_store"]


def open_result_store(url: str | None, *, state_dir: Path) -> ResultStore:
    """The store at ``url``, or SQLite in ``state_dir`` when ``url`` is unset."""
    if not url:
        return SQLiteResultStore(state_dir / "results.db")
    if is_postgres_url(url):
        try:
            from asya_agents.stores.postgres import PostgresResultStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise ConfigError(
                f"a PostgreSQL store needs psycopg: pip install 'asya-agents[postgres]' ({exc})"
            ) from exc
        return PostgresResultStore(url)  # type: ignore[no-any-return,unused-ignore]
    if url.startswith("sqlite:///"):
        return SQLiteResultStore(Path(url.removeprefix("sqlite:///")))
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")

"""Fixtures for the ready-made actors: review stores on SQLite and on a real PostgreSQL
(each test in its own schema, dropped afterwards), and a controllable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.review import open_review_store
from asya_agents.stores.review_base import ReviewStore
from tests.conftest import FakeClock

Clock = FakeClock


@pytest.fixture
def clock() -> Clock:
    return Clock()


StoreFactory = Callable[[], ReviewStore]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "sqlite":
        return None
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def open_store(store_url: str | None, tmp_path: Path,
               clock: Clock) -> Iterator[Callable[..., ReviewStore]]:
    """Opens review stores on the same database (one connection each)."""
    opened: list[ReviewStore] = []

    def factory(**kwargs: Any) -> ReviewStore:
        store = open_review_store(store_url, state_dir=tmp_path,
                                  clock=kwargs.get("clock", clock))
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()

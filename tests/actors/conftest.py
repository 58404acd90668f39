"""Fixtures for the ready-made actors: review stores on SQLite and on a real PostgreSQL
(each test in its own schema, dropped afterwards), and a controllable clock."""

from __future__ import annotations

import contextlib
import gc
import inspect
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.review import open_review_store
from asya_agents.stores.review_base import ReviewStore


class Clock:
    """Time that moves only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


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


@pytest.fixture(autouse=True)
def _collect_leftovers() -> Iterator[None]:
    """Collect, after each test here, what outlives it by design and would otherwise be
    reported as unclosed in some later, unrelated test: litellm keeps its HTTP clients
    in a module-level cache and never closes them (closed here), and its service logger,
    called from the main thread (a judge called directly in a test), makes that thread
    an event loop with ``asyncio.get_event_loop()`` that nobody closes (closed here; in a
    replica handlers run on worker threads, where litellm uses ``asyncio.run``)."""
    yield
    import asyncio

    policy = asyncio.get_event_loop_policy()
    loop = getattr(getattr(policy, "_local", None), "_loop", None)
    if isinstance(loop, asyncio.AbstractEventLoop) and not loop.is_running() \
            and not loop.is_closed():
        loop.close()
        policy.set_event_loop(None)
    litellm = sys.modules.get("litellm")
    if litellm is not None:
        cache = litellm.in_memory_llm_clients_cache
        for client in list(cache.cache_dict.values()):
            close = getattr(client, "close", None)
            if callable(close) and not inspect.iscoroutinefunction(close):
                with contextlib.suppress(Exception):
                    close()
        cache.flush_cache()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()

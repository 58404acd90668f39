"""Shared fixtures and the CI rule for skips.

A test that needs a server (RabbitMQ, PostgreSQL, an SQS emulator, chromium) skips with
a reason that starts with ``SERVICE_SKIP`` where the server is absent; with
``CI=true`` such a skip is turned into a failure, so CI never passes by skipping.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import os
import socket
import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICE_SKIP = "service unavailable:"
IN_CI = os.environ.get("CI", "").lower() == "true"


class FakeClock:
    """Seconds that move only when the test says so: injected wherever the code under
    test reads time, so that no test sleeps for time to pass."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def require_service(name: str, host: str = "127.0.0.1", port: int | None = None) -> None:
    """Skip (fail in CI) unless ``host:port`` accepts connections."""
    if port is not None and not port_open(host, port):
        pytest.skip(f"{SERVICE_SKIP} {name} at {host}:{port}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        if SERVICE_SKIP in reason:
            report.outcome = "failed"
            report.longrepr = f"CI=true: a needed service is missing ({reason})"


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    """A moto server (the real SQS and S3 HTTP protocols) on a free port of 127.0.0.1,
    for the whole session; skips (fails in CI) where moto_server is not installed."""
    from tests.moto import moto_server

    with moto_server() as url:
        yield url


@pytest.fixture
def example_mesh() -> Path:
    return ROOT / "mesh" / "example"


PG_BASE = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped after the test."""
    require_service("PostgreSQL", port=5432)
    import psycopg

    schema = f"asya_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_BASE, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_BASE}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_BASE, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(autouse=True)
def _collect_leftovers() -> Iterator[None]:
    """Collect, after each test, what outlives it by design and would otherwise be
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

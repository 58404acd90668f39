"""An event loop on a thread of its own, for synchronous callers of async code.

Transports are asynchronous, and a transport belongs to the loop it was opened on (an
AMQP connection, an SQS client). Synchronous callers (the review console, whose pages
Streamlit runs on many threads; the test helper inside plain pytest tests; scripts
deciding reviews) therefore hand every coroutine to one private loop, which this class
starts on first use and stops on :meth:`close`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


class LoopThread:
    """One event loop, running on a daemon thread named ``name`` while it is open."""

    def __init__(self, name: str = "asya-loop") -> None:
        self.name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop, started on first use."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                                name=self.name)
                self._thread.start()
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T], *, timeout: float | None = None) -> T:
        """Run ``coro`` on the loop and wait for its result (or its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop()).result(timeout)

    def close(self, *, join: float = 5.0) -> None:
        """Stop the loop and its thread, then close the loop; a no-op when not started."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(join)
        if not loop.is_running():
            loop.close()

"""Which asyncio event loop a replica runs on.

``ASYA_EVENT_LOOP`` picks it: ``uvloop`` (libuv, written in Cython), ``asyncio`` (the
standard library's), or ``auto`` (the default: uvloop where it is installed, which the
``rabbitmq``, ``sqs`` and ``fast`` extras do). A replica that moves many small
messages spends much of its time in the loop itself (callbacks, futures, timers, socket
readiness), which uvloop runs in compiled code: about 10% less CPU per message for a
RabbitMQ hop measured on the development machine (see ``bench/bench_brokers.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from asya_agents.errors import ConfigError

__all__ = ["LOOPS", "loop_factory", "run"]

T = TypeVar("T")
LOOPS = ("auto", "uvloop", "asyncio")


def loop_factory(kind: str = "auto") -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop ``kind`` names; None means the standard library's."""
    if kind not in LOOPS:
        raise ConfigError(f"ASYA_EVENT_LOOP must be one of {', '.join(LOOPS)}, not {kind!r}")
    if kind == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as exc:
        if kind == "uvloop":
            raise ConfigError(
                "ASYA_EVENT_LOOP=uvloop, but uvloop is not installed: "
                f"pip install 'asya-agents[fast]' ({exc})"
            ) from exc
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T], *, kind: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop ``kind`` names."""
    with asyncio.Runner(loop_factory=loop_factory(kind)) as runner:
        return runner.run(main)

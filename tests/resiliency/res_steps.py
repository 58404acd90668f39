"""Handlers of the resiliency test meshes: each fails in one controlled way.

Envelope-mode handlers read ``meta.attempt`` so a test can script "fail twice, then
succeed" without any shared state between replicas.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any


class StatusError(Exception):
    """An HTTP-ish error, as client libraries raise them."""

    def __init__(self, status_code: int, message: str = "upstream error") -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code


def flaky(envelope: dict[str, Any]) -> dict[str, Any]:
    """Raises ``StatusError(payload.status)`` until attempt ``payload.succeed_at``."""
    payload = envelope["payload"]
    attempt = envelope["meta"]["attempt"]
    if attempt < payload.get("succeed_at", 1_000_000):
        raise StatusError(payload.get("status", 503))
    envelope["payload"] = {**payload, "done_at_attempt": attempt}
    return envelope


def down(payload: dict[str, Any]) -> dict[str, Any]:
    """A dependency that is down while the file ``payload.flag`` exists."""
    if os.path.exists(payload["flag"]):
        raise ConnectionError("dependency down")
    return {**payload, "served": True}


def bad_input(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("not a dependency problem")


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "echoed": True}


async def hang_once(envelope: dict[str, Any]) -> dict[str, Any]:
    """Hangs on the first attempt (async: cancelled by actorTimeout), then answers."""
    if envelope["meta"]["attempt"] == 1:
        await asyncio.sleep(3600)
    envelope["payload"] = {**envelope["payload"], "attempt": envelope["meta"]["attempt"]}
    return envelope


def import_litellm() -> Any:
    """litellm, with its offline switches set first (no network for its cost map)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm

    return litellm


def ask_llm(payload: dict[str, Any]) -> dict[str, Any]:
    """A judge-like call through litellm, no retries of its own; the provider's
    address travels in the payload (the test's provider listens on a free port)."""
    reply = import_litellm().completion(
        model="openai/judge", api_base=payload["api_base"], api_key="x", num_retries=0,
        messages=[{"role": "user", "content": f"score item {payload['n']}"}],
    )
    return {**payload, "api_base": None, "verdict": reply.choices[0].message.content}


def block_once(envelope: dict[str, Any]) -> dict[str, Any]:
    """A sync handler that overruns on its first attempt (its thread cannot be
    cancelled: the replica asks to be replaced), then answers."""
    import time

    if envelope["meta"]["attempt"] == 1:
        time.sleep(0.6)
    envelope["payload"] = {**envelope["payload"], "attempt": envelope["meta"]["attempt"]}
    return envelope

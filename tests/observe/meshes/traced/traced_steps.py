"""Handlers of the test mesh ``traced``: plain functions, nothing imported from asya."""

from __future__ import annotations

from typing import Any


def fan(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """One child per ``n``."""
    return [{"i": i, "fail_first": payload.get("fail_first", False)}
            for i in range(payload["n"])]


def flaky(envelope: dict[str, Any]) -> dict[str, Any]:
    """Fails the first attempt when asked to, so that the runtime retries it."""
    if envelope["payload"]["fail_first"] and envelope["meta"]["attempt"] == 1:
        raise RuntimeError("first attempt fails on purpose")
    return envelope


def tail(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**p, "done": True} for p in payloads]

"""A split, a worker whose process dies on the child asked to (as a segfault or an OOM
kill would end it: no exception, the replica is gone), and a merge."""

from __future__ import annotations

import os
from typing import Any


def split(payload: dict[str, Any]) -> list[dict[str, Any]]:
    crash = set(payload.get("crash", []))
    return [{"i": i, "crash": i in crash} for i in range(int(payload["n"]))]


def work(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("crash"):
        os._exit(1)
    return {**payload, "done": True}


def merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    return {"order": [p["i"] for p in payloads]}

"""Handlers that misbehave on purpose, chosen by payload["do"]."""

from __future__ import annotations

import asyncio
import time
from typing import Any


async def check(envelope: dict[str, Any]) -> Any:
    do = envelope["payload"].get("do", "ok")
    if do == "raise":
        raise ValueError("bad input: always raises")
    if do == "hang":
        await asyncio.sleep(60)
    if do == "alter-history":
        envelope["route"]["prev"] = ["somebody-else"]
    if do == "unknown-actor":
        envelope["route"]["next"] = ["nowhere", *envelope["route"]["next"]]
    if do == "fan-out":
        return [dict(envelope, payload={"n": i}) for i in range(3)]
    if do == "empty":
        return []
    if do == "huge":
        envelope["payload"]["blob"] = "x" * 400_000
    return envelope


def finish(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "finished": True}


def double_all(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    size = len(payloads)
    return [{**p, "doubled": p["n"] * 2, "batch": size} for p in payloads]


def slow_sync(payload: dict[str, Any]) -> dict[str, Any]:
    time.sleep(float(payload.get("sleep", 2)))
    return payload

"""Handlers of the fan-in benchmark: async, so that the runtime, not a thread pool, is
what is measured."""

from __future__ import annotations

from typing import Any


async def split(payload: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"i": i} for i in range(int(payload["n"]))]


async def work(payload: dict[str, Any]) -> dict[str, Any]:
    return {"i": payload["i"], "sq": payload["i"] ** 2}


async def merge(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    return {"sum": sum(p["sq"] for p in payloads), "n": len(payloads)}

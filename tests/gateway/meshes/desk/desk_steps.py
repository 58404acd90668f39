"""Handlers of the gateway's test mesh. Plain Python: nothing here imports asya-agents."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict


class Text(TypedDict):
    """What the mesh takes: a text of one or more sentences."""

    text: str


def split(payload: Text) -> list[dict[str, Any]]:
    """Fan out: one payload per sentence (with the payload's other keys)."""
    rest = {k: v for k, v in payload.items() if k != "text"}
    return [{**rest, "sentence": s.strip() + "."} for s in payload["text"].split(".")
            if s.strip()]


def shout(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("fail"):
        raise ValueError("asked to fail")
    return {**payload, "shout": str(payload.get("sentence", payload.get("text", ""))).upper()}


def boom(payload: dict[str, Any]) -> dict[str, Any]:
    raise ValueError(f"boom: {payload}")


async def nap(payload: dict[str, Any]) -> dict[str, Any]:
    """A slow step (the work itself takes this long), for jobs still running."""
    await asyncio.sleep(float(payload.get("seconds", 0.3)))
    return payload

"""Trivial async handlers for the mesh benchmark."""

from typing import Any


async def first(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "a": 1}


async def second(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "b": 2}


async def third(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "c": 3}

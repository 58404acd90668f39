"""A route that loops by mistake: ``again`` puts itself back into ``next`` forever."""

from __future__ import annotations

from typing import Any


def again(envelope: dict[str, Any]) -> dict[str, Any]:
    envelope["payload"]["rounds"] = envelope["payload"].get("rounds", 0) + 1
    envelope["route"]["next"] = ["again", *envelope["route"]["next"]]
    return envelope


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "echoed": True}

"""Handlers of the fan-in test mesh. ``CALLS`` records each gather call (the tests run
the mesh in this process)."""

from __future__ import annotations

import threading
from typing import Any

CALLS: list[list[Any]] = []
MADE: list[int] = []
_lock = threading.Lock()


def split(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """``{"n": N, "fail": [...]}`` -> N children ``{"i": i, "fail": bool}``; with
    ``"inner": M`` each child is ``{"n": M}`` again, to be split once more."""
    fail = set(payload.get("fail", []))
    if "inner" in payload:
        return [{"n": payload["inner"], "outer": i} for i in range(int(payload["n"]))]
    return [{"i": i, "fail": i in fail, **({"outer": payload["outer"]} if "outer" in payload
                                          else {})} for i in range(int(payload["n"]))]


def stream(payload: dict[str, Any]) -> Any:
    """A generator of N children; ``MADE`` says how many it had made so far."""
    for i in range(int(payload["n"])):
        with _lock:
            MADE.append(i)
        yield {"i": i, "fail": False}


def fork(envelope: dict[str, Any]) -> list[dict[str, Any]]:
    """Envelope mode: N children, each with a route of its own. ``via``: child i goes
    through ``twice`` first when i is odd; ``skip``: those go straight to ``finish``;
    ``after``: child -> the route after the gather."""
    payload = envelope["payload"]
    rest = envelope["route"]["next"]
    kids = []
    for i in range(int(payload["n"])):
        nxt = list(rest)
        if i % 2 and payload.get("via"):
            nxt = ["twice", *nxt]
        if i in payload.get("skip", []):
            nxt = ["finish"]
        if str(i) in payload.get("after", {}):  # [work, gather, <after>]
            nxt = [*nxt[:2], *payload["after"][str(i)]]
        kids.append({**envelope, "payload": {"i": i, "fail": False},
                     "route": {**envelope["route"], "next": nxt}})
    return kids


def work(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("fail"):
        raise ValueError(f"child {payload['i']} was asked to fail")
    return {**payload, "sq": payload["i"] ** 2}


def twice(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "twice": True}


def merge(payloads: list[Any]) -> dict[str, Any]:
    with _lock:
        CALLS.append(list(payloads))
    return {"items": payloads}


def merge_envelopes(envelopes: list[dict[str, Any]]) -> dict[str, Any]:
    with _lock:
        CALLS.append([e["id"] for e in envelopes])
    return {"payload": {"ids": [e["id"] for e in envelopes]},
            "route": {"next": ["twice", "finish"]}}


def merge_into_list(payloads: list[Any]) -> list[Any]:
    return payloads


def finish(payload: Any) -> Any:
    return {"done": payload}

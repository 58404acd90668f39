"""Handlers that misbehave on purpose, one way each, and one that does good work."""

from __future__ import annotations

import os
from typing import Any

from asya_agents.blob import BlobStore
from asya_agents.storage import StoragePolicy


def echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "echoed": True}


def forge(envelope: dict[str, Any]) -> dict[str, Any]:
    envelope["route"]["prev"] = ["somebody-else"]
    return envelope


def fragile(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("crash"):
        os._exit(1)  # as a segfault or an OOM kill would end the process
    return {**payload, "survived": True}


def again(envelope: dict[str, Any]) -> dict[str, Any]:
    envelope["payload"]["rounds"] = envelope["payload"].get("rounds", 0) + 1
    envelope["route"]["next"] = ["again", *envelope["route"]["next"]]
    return envelope


class Reader:
    def __init__(self, storage: StoragePolicy) -> None:
        self.blobs = BlobStore(policy=storage)

    def read(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "text": self.blobs.read_bytes(payload["url"]).decode()}

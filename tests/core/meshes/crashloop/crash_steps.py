"""Handlers for the preflight and crash-loop tests: one that works, one whose model does
not load, and shapes the preflight refuses."""

from __future__ import annotations

from typing import Any


class Fine:
    def __init__(self, greeting: str, storage: object = None) -> None:
        self.greeting = greeting

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "greeting": self.greeting}

    @staticmethod
    def alone(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    def two(self, payload: dict[str, Any], extra: int) -> dict[str, Any]:
        return payload


class Heavy:
    def __init__(self, model: str, steps: int = 30) -> None:
        raise RuntimeError(f"weights not found: {model}")

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


class Injected:
    """Asks for what the runtime injects (storage) besides its config."""

    def __init__(self, storage: object, size: int = 1) -> None:
        self.storage = storage

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload


def plain(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


NOT_CALLABLE = 3

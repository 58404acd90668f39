"""Handlers of the example mesh. Plain Python: nothing here imports asya-agents."""

from __future__ import annotations

import re
from typing import Any

_SENTENCE = re.compile(r"[^.!?]+[.!?]?")


def split(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """Fan out: one payload per sentence of ``payload["text"]``."""
    sentences = [s.strip() for s in _SENTENCE.findall(payload["text"]) if s.strip()]
    return [{"sentence": s, "index": i, "of": len(sentences)} for i, s in enumerate(sentences)]


def triage(envelope: dict[str, Any]) -> dict[str, Any]:
    """Route rewrite: a question takes a detour through ``answer`` before the rest."""
    payload = envelope["payload"]
    if payload["sentence"].endswith("?"):
        envelope["route"]["next"] = ["answer", *envelope["route"]["next"]]
        payload["kind"] = "question"
    else:
        payload["kind"] = "statement"
    return envelope


class Answerer:
    def __init__(self, default_answer: str) -> None:
        self.default_answer = default_answer

    async def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "answer": self.default_answer}


def format_sentence(payload: dict[str, Any]) -> dict[str, Any]:
    words = payload["sentence"].split()
    return {**payload, "words": len(words), "shout": payload["sentence"].upper()}

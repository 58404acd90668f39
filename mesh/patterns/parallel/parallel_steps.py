"""Glue of the parallel-sectioning pattern: the split, the gather, the offline model.

:class:`Splitter` turns one text into one child per aspect (a list fans out; the
children run at once on the ``review`` actor's replicas). :func:`combine` is the
``fanIn`` handler: it gets the children's payloads in the aspects' order and returns
the one report that goes on. Usage: each child starts from an empty ``usage`` (the
parent's is kept in ``usage_before``), so that the gather adds every call exactly once
(:func:`actors.llm.usage.combine`).
"""

from __future__ import annotations

import json
from typing import Any

from actors.llm import usage


def fan_out(payload: dict[str, Any], parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One child per part: the parent's fields, the part, and a fresh usage."""
    base = {k: v for k, v in payload.items() if k not in ("usage", "usage_before")}
    return [{**base, **part, "usage": {}, "usage_before": payload.get("usage") or {}}
            for part in parts]


class Splitter:
    def __init__(self, *, aspects: list[str]) -> None:
        if not aspects:
            raise ValueError("aspects: name at least one aspect to review")
        self.aspects = list(aspects)

    def split(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        if not str(payload.get("document", "")).strip():
            raise ValueError("payload.document: the text to review is missing or empty")
        aspects = payload.get("aspects") or self.aspects
        return fan_out(payload, [{"aspect": a} for a in aspects])


def combine(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """Every aspect's review in one report; the overall score is the weakest aspect's."""
    first = payloads[0]
    reviews = {p["aspect"]: p["review"] for p in payloads}
    weakest = min(reviews, key=lambda a: reviews[a]["score"])
    return {"document": first["document"], "reviews": reviews,
            "score": reviews[weakest]["score"], "weakest": weakest,
            "usage": usage.combine(first.get("usage_before"),
                                   [p.get("usage") for p in payloads])}


def offline_model(request: dict[str, Any]) -> str:
    """Scores each aspect by a crude rule: long sentences hurt clarity, exclamation
    marks tone, unsupported numbers accuracy."""
    user = request["messages"][-1]["content"]
    aspect, _, text = user.removeprefix("Aspect: ").partition("\nText: ")
    sentences = [s for s in text.replace("!", ".").split(".") if s.strip()]
    rules = {
        "clarity": (max((len(s.split()) for s in sentences), default=0) > 25,
                    "a sentence of more than 25 words"),
        "tone": ("!" in text, "exclamation marks"),
        "accuracy": (any(c.isdigit() for c in text) and "source" not in text.lower(),
                     "numbers without a source"),
    }
    flawed, finding = rules.get(aspect, (False, ""))
    return json.dumps({"score": 0.4 if flawed else 0.9,
                       "findings": [finding] if flawed else []})

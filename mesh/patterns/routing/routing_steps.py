"""Glue of the routing pattern: the offline stand-in model.

Everything else is the ready-made ``llm`` actor, configured in actors.yaml: the
classifier is ``LLM.route`` (its label picks the route), the specialists ``LLM.run``.
:func:`offline_model` answers what a model would, without one, so the mesh runs and is
tested with no key: a keyword classifier, and specialists that say who answered.
"""

from __future__ import annotations

import json
from typing import Any

KEYWORDS = {
    "billing": ("invoice", "refund", "charge", "bill", "payment", "price"),
    "technical": ("error", "crash", "install", "bug", "login", "password"),
    "general": ("opening", "hours", "where", "who", "contact", "thanks"),
}


def classify(message: str) -> str:
    """The desk whose keywords the message names; ``unsure`` for none or several."""
    words = message.lower()
    hits = [desk for desk, keys in KEYWORDS.items() if any(k in words for k in keys)]
    return hits[0] if len(hits) == 1 else "unsure"


def offline_model(request: dict[str, Any]) -> str:
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if system.startswith("You sort"):
        message = user.removeprefix("Message:").strip()
        label = classify(message)
        return json.dumps({"route": label, "reason": f"offline keyword match: {label}"})
    desk = system.removeprefix("You are ").split(".")[0]
    return f"({desk}, offline) About {user[:80]!r}: set ASYA_LLM_API_KEY for a real answer."

"""Glue of the chain pattern: the outline's schema, the gate, and the offline model.

The three model calls are the ready-made ``llm`` actor, configured in actors.yaml; this
module holds what is particular to the chain:

- :class:`Outline`, the JSON the first call must answer (checked by the actor);
- :class:`Gate`, plain code between two calls: an outline with fewer than
  ``min_points`` points stops the chain (``route.next`` emptied, the reason in
  ``payload["gate"]``) instead of paying for a draft of nothing;
- :func:`offline_model`, the stand-in the actors call with no API key (through the
  same litellm code, over HTTP to a local fake provider): deterministic answers of the
  right shape, so the chain runs and is tested anywhere.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field


class Outline(BaseModel):
    title: str
    points: list[str] = Field(max_length=8)


class Gate:
    def __init__(self, *, min_points: int = 3) -> None:
        self.min_points = min_points

    def check(self, envelope: dict[str, Any]) -> dict[str, Any]:
        payload = dict(envelope["payload"])
        points = len(payload["outline"]["points"])
        passed = points >= self.min_points
        payload["gate"] = {"passed": passed, "points": points, "reason": (
            "outline ready" if passed else
            f"the outline has {points} point(s), {self.min_points} needed: chain stopped")}
        nxt = envelope["route"]["next"] if passed else []
        return {**envelope, "payload": payload, "route": {**envelope["route"], "next": nxt}}


def offline_model(request: dict[str, Any]) -> str:
    """What a model would answer at each step, without one."""
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if system.startswith("You plan"):
        topic = user.removeprefix("Topic:").strip()
        if len(topic.strip("?!. ")) < 3:  # nothing to write about
            return json.dumps({"title": "", "points": []})
        return json.dumps({"title": f"{topic.capitalize()}: a short guide",
                           "points": [f"What {topic} is", f"Why {topic} matters",
                                      f"How to start with {topic}"]})
    if system.startswith("You write"):
        title, _, points = user.partition("\nPoints: ")
        return (f"{title.removeprefix('Title: ')}. " +
                " ".join(f"{p}: a few plain sentences on it." for p in json.loads(points)))
    return user.replace(": a few plain sentences on it.", ", in brief.").strip()

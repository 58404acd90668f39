"""Glue of the evaluator-optimizer pattern: the evaluator, and the offline stand-in.

The writer is the ready-made ``llm`` actor. :class:`Evaluator` (envelope mode) asks a
model for ``{"score": 0..1, "feedback": "..."}`` on the draft through the same
:class:`~actors.llm.handler.LLM` call, then routes:

- score >= ``accept``: the loop ends, the route goes on unchanged;
- else, while fewer than ``max_rounds`` drafts were written: ``retry_route`` (the writer
  and the evaluator) goes in front of the rest, the feedback in ``payload["feedback"]``;
- else: the loop limit. The best draft so far is put back in ``payload["draft"]`` and
  ``limit_route`` (a person, in this mesh) goes in front of the rest.

Every round is kept in ``payload["rounds"]`` (draft, score, feedback), so an envelope
read from any queue says how it got where it is.
"""

from __future__ import annotations

import json
from typing import Any

from actors.llm.handler import LLM

SYSTEM = """You review product descriptions for an online shop. Score the draft from 0
(unusable) to 1 (ready to publish): concrete, honest, at most 80 words, no empty
superlatives. Answer with one JSON object and nothing else:
{"score": <0..1>, "feedback": "<what to fix, or 'none'>"}"""


class Evaluator:
    def __init__(self, *, accept: float = 0.8, max_rounds: int = 3,
                 retry_route: list[str] | None = None, limit_route: list[str] | None = None,
                 system: str = SYSTEM, **llm: Any) -> None:
        if not 0.0 <= accept <= 1.0:
            raise ValueError(f"accept must be within 0..1, got {accept}")
        if max_rounds < 1:
            raise ValueError(f"max_rounds must be >= 1, got {max_rounds}")
        self.accept, self.max_rounds = accept, max_rounds
        self.retry_route = list(retry_route or ["write", "evaluate"])
        self.limit_route = list(limit_route or [])
        self.llm = LLM(system=system, prompt="Product: {task}\nDraft: {draft}",
                       output="json", schema={"score": "float", "feedback": "str"}, **llm)

    def evaluate(self, envelope: dict[str, Any]) -> dict[str, Any]:
        payload = dict(envelope["payload"])
        answer, payload["usage"] = self.llm.ask(payload)
        score = min(1.0, max(0.0, float(answer["score"])))
        rounds = [*payload.get("rounds", []),
                  {"draft": payload["draft"], "score": score, "feedback": answer["feedback"]}]
        payload["rounds"] = rounds
        rest = list(envelope["route"]["next"])
        if score >= self.accept:
            payload["evaluation"] = {"outcome": "accepted", "score": score,
                                     "rounds": len(rounds)}
            nxt = rest
        elif len(rounds) < self.max_rounds:
            payload["feedback"] = answer["feedback"]
            nxt = [*self.retry_route, *rest]
        else:
            best = max(rounds, key=lambda r: r["score"])
            payload["draft"] = best["draft"]
            payload["evaluation"] = {
                "outcome": "loop-limit", "score": best["score"], "rounds": len(rounds),
                "reason": f"{len(rounds)} drafts, none scored {self.accept} or more; "
                          f"the best ({best['score']}) is kept"}
            nxt = [*self.limit_route, *rest]
        return {**envelope, "payload": payload, "route": {**envelope["route"], "next": nxt}}


def offline_model(request: dict[str, Any]) -> str:
    """A writer that adds what the feedback asks for, an evaluator that wants a price
    and a size: the loop runs (two rounds) with no key."""
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if system.startswith("You review"):
        draft = user.partition("\nDraft: ")[2].lower()
        missing = [w for w in ("price", "size") if w not in draft]
        if not missing:
            return json.dumps({"score": 0.9, "feedback": "none"})
        return json.dumps({"score": 0.4, "feedback": f"name the {' and the '.join(missing)}"})
    product = user.partition("\n")[0].removeprefix("Product: ")
    feedback = user.rpartition("Feedback on it: ")[2]
    if feedback.startswith("name the"):
        return f"{product}: sturdy and plain. Size and price are on the label."
    return f"{product}: the best {product} ever made."

"""Glue of the swarm pattern: one role agent class, and the offline stand-in model.

No coordinator: each agent reads the shared context in the payload, adds its part, and
names who goes next by rewriting ``route.next``. Every role (planner, researcher,
critic, writer) is an :class:`Agent` with its own system prompt in ``spec.config``.

The payload carries the swarm's state, so that any hop explains itself:

- ``task``: what the swarm works on (sent by the caller);
- ``board``: one entry per turn, oldest first: ``{role, say, handoff, confidence}``;
  every agent sees the whole board in its prompt (the shared context);
- ``usage``: the tokens and litellm's cost of every call so far (:mod:`actors.llm.usage`);
- ``budget`` (optional, from the caller): limits that tighten the agents' own;
- ``swarm``: how it ended: ``{outcome, reason, ...}``; ``answer``: the writer's text.

An agent answers ``{"say": "...", "handoff": "<member>|done|review", "confidence":
0..1}``. Then, in this order:

1. before any call, the budget (``max_hops`` actors passed, ``max_tokens``,
   ``max_cost``, the tighter of the agent's and the payload's) is checked; a budget
   reached sends the work to ``review`` with the limit named, without another call;
2. ``handoff`` a member of ``team`` (not the agent itself): the route becomes that
   member, then what was left of it;
3. ``done`` from an agent that ``may_finish``: the answer ends the swarm when
   ``confidence >= min_confidence``, else it goes to ``review`` (unsure);
4. ``review``, or anything else (a name outside the team, ``done`` from an agent that
   may not finish): ``review``, with the reason.
"""

from __future__ import annotations

import json
from typing import Any

from actors.llm import usage
from actors.llm.handler import LLM

FORMAT = """

Your team: {team}. Answer with one JSON object and nothing else:
{{"say": "<your contribution>", "handoff": "<one of: {options}>",
 "confidence": <0..1, how sure you are that the work is right so far>}}"""

PROMPT = "Task: {task}\nThe board so far (oldest first): {board}"


class Agent:
    def __init__(self, *, role: str, system: str, team: list[str], may_finish: bool = False,
                 min_confidence: float = 0.7, budget: dict[str, float] | None = None,
                 review_actor: str = "review", **llm: Any) -> None:
        if not team:
            raise ValueError("team: name at least one member to hand work to")
        unknown = set(budget or {}) - {"max_hops", "max_tokens", "max_cost"}
        if unknown:
            raise ValueError(f"budget: unknown limit(s) {sorted(unknown)} (use max_hops, "
                             f"max_tokens, max_cost)")
        self.role, self.team, self.may_finish = role, list(team), may_finish
        self.min_confidence, self.budget = min_confidence, dict(budget or {})
        self.review_actor = review_actor
        options = [m for m in team if m != role] + (["done"] if may_finish else []) + ["review"]
        fmt = FORMAT.replace("{team}", ", ".join(team)).replace("{options}", ", ".join(options))
        self.llm = LLM(system=system + fmt, prompt=PROMPT, defaults={"board": []},
                       output="json", schema={"say": "str", "handoff": "str",
                                              "confidence": "float?"}, **llm)

    def limits(self, payload: dict[str, Any]) -> dict[str, float]:
        """The agent's budget, tightened by the payload's."""
        mine, theirs = self.budget, payload.get("budget") or {}
        keys = set(mine) | set(theirs)
        return {k: min(v for v in (mine.get(k), theirs.get(k)) if v is not None)
                for k in keys}

    def act(self, envelope: dict[str, Any]) -> dict[str, Any]:
        payload = dict(envelope["payload"])
        rest = list(envelope["route"]["next"])
        reached = usage.over_budget(payload.get("usage"), self.limits(payload),
                                    hops=len(envelope["route"]["prev"]))
        if reached:
            limit, used, ceiling = reached
            payload["swarm"] = {"outcome": "budget", "limit": limit, "used": used,
                                "max": ceiling, "stopped_at": self.role,
                                "reason": f"budget {limit} reached ({used:g} of {ceiling:g}) "
                                          f"before {self.role}'s turn"}
            return _route(envelope, payload, [self.review_actor, *rest])
        answer, payload["usage"] = self.llm.ask(payload)
        handoff = str(answer["handoff"]).strip().lower()
        confidence = answer.get("confidence")
        payload["board"] = [*payload.get("board", []),
                            {"role": self.role, "say": answer["say"], "handoff": handoff,
                             "confidence": confidence}]
        return _route(envelope, payload, self._next(payload, handoff, confidence, rest))

    def _next(self, payload: dict[str, Any], handoff: str, confidence: float | None,
              rest: list[str]) -> list[str]:
        if handoff in self.team and handoff != self.role:
            return [handoff, *rest]
        if handoff == "done" and self.may_finish:
            payload["answer"] = payload["board"][-1]["say"]
            sure = confidence is not None and confidence >= self.min_confidence
            payload["swarm"] = {"outcome": "done" if sure else "unsure",
                                "confidence": confidence, "reason": (
                                    "the writer is confident" if sure else
                                    f"confidence {confidence} is below {self.min_confidence}")}
            return rest if sure else [self.review_actor, *rest]
        payload["swarm"] = {"outcome": "review", "reason": (
            f"{self.role} asked for review" if handoff == "review" else
            f"{self.role} handed off to {handoff!r}, which it may not")}
        return [self.review_actor, *rest]


def _route(envelope: dict[str, Any], payload: dict[str, Any],
           nxt: list[str]) -> dict[str, Any]:
    return {**envelope, "payload": payload, "route": {**envelope["route"], "next": nxt}}


def offline_model(request: dict[str, Any]) -> str:
    """A team that works through the task once: planner -> researcher -> critic ->
    writer -> done, sure of itself."""
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    task, _, board_text = user.removeprefix("Task: ").partition(
        "\nThe board so far (oldest first): ")
    board = json.loads(board_text or "[]")
    turns = [entry["role"] for entry in board]
    if system.startswith("You are the planner"):
        say, handoff = f"Plan for {task!r}: research, check, write.", "researcher"
    elif system.startswith("You are the researcher"):
        say = f"Facts on {task!r} (offline: set ASYA_LLM_API_KEY for real research)."
        handoff = "critic"
    elif system.startswith("You are the critic"):
        say, handoff = "The facts hold together.", "writer"
    else:
        say = f"An answer to {task!r}, from {len(turns)} turns of work."
        handoff = "done"
    return json.dumps({"say": say, "handoff": handoff, "confidence": 0.9})

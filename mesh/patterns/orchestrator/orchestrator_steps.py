"""Glue of the orchestrator-workers pattern: the planner, the synthesiser, the offline
model.

Unlike parallel sectioning, the sub-tasks are not known before the task is read:
:class:`Planner` asks a model for ``{"subtasks": [{"title", "brief"}, ...]}`` and fans
out one child per sub-task (1 to ``max_subtasks``; more is an error naming the count).
The ``work`` actor (the ready-made ``llm`` actor) runs each; :class:`Synthesiser` is
the ``fanIn`` handler: it gets the workers' payloads in the plan's order and makes one
more call that writes the answer from all of them. Usage is counted once per call: the
children start from an empty ``usage``, the gather adds theirs to the planner's.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from actors.llm import usage
from actors.llm.client import OutputError
from actors.llm.handler import LLM

PLAN = """You are the orchestrator. Break the task into the independent sub-tasks it
needs (as few as will do), each for one worker. Answer with one JSON object and nothing
else: {"subtasks": [{"title": "...", "brief": "what exactly to do"}, ...]}"""

SYNTHESISE = """You are the editor. Write one answer to the task from the workers'
parts: keep what they found, remove repetition, say what is still open."""


class Subtask(BaseModel):
    title: str = Field(min_length=1)
    brief: str = Field(min_length=1)


class Plan(BaseModel):
    subtasks: list[Subtask] = Field(min_length=1)


class Planner:
    def __init__(self, *, max_subtasks: int = 6, system: str = PLAN, **llm: Any) -> None:
        if max_subtasks < 1:
            raise ValueError(f"max_subtasks must be >= 1, got {max_subtasks}")
        self.max_subtasks = max_subtasks
        self.llm = LLM(system=system, prompt="Task: {task}", output="json",
                       schema=f"{__name__}.Plan", **llm)

    def plan(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        answer, spent = self.llm.ask(payload)
        subtasks = answer["subtasks"]
        if len(subtasks) > self.max_subtasks:
            raise OutputError(f"model {self.llm.client.model!r} planned {len(subtasks)} "
                              f"sub-tasks, more than max_subtasks={self.max_subtasks}")
        base = {k: v for k, v in payload.items() if k not in ("usage", "usage_before")}
        return [{**base, "subtask": s, "part": i, "usage": {}, "usage_before": spent}
                for i, s in enumerate(subtasks)]


class Synthesiser:
    def __init__(self, *, system: str = SYNTHESISE, **llm: Any) -> None:
        self.llm = LLM(system=system, prompt="Task: {task}\nParts: {parts}", **llm)

    def synthesise(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        parts = [{"title": p["subtask"]["title"], "result": p["result"]} for p in payloads]
        spent = usage.combine(payloads[0].get("usage_before"),
                              [p.get("usage") for p in payloads])
        fields = {"task": payloads[0]["task"], "parts": parts, "usage": spent}
        answer, fields["usage"] = self.llm.ask(fields)
        return {**fields, "answer": answer}


def offline_model(request: dict[str, Any]) -> str:
    """Plans one sub-task per question the task asks (split at '?' and ' and '), works
    each by restating it, and joins the parts."""
    system, user = request["messages"][0]["content"], request["messages"][-1]["content"]
    if system.startswith("You are the orchestrator"):
        task = user.removeprefix("Task: ")
        asks = [a.strip(" ?.,") for q in task.split("?") for a in q.split(" and ")]
        return json.dumps({"subtasks": [{"title": a[:60], "brief": f"Find out: {a}"}
                                        for a in asks if a]})
    if system.startswith("You are a worker"):
        part = user.partition("\nYour part: ")[2]
        return f"(offline) notes on {part.partition(': ')[0]!r}"
    parts = json.loads(user.partition("\nParts: ")[2])
    return " ".join(p["result"] for p in parts)

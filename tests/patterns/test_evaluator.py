"""Evaluator-optimizer: the judge's feedback reaches the writer's next prompt, and the
loop stops at its limit with the best draft."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asya_agents.review import open_review_store
from asya_agents.testing import LocalMesh
from tests.patterns.conftest import Provider, asked, pattern, steps, user_of

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def test_the_feedback_is_fixed_in_the_next_round(tmp_path: Path, provider: Provider) -> None:
    # Given the mesh's own stand-in: a first draft without price and size, scored 0.4
    llm = provider(steps("evaluator").offline_model)
    with LocalMesh(pattern("evaluator", llm), state_dir=tmp_path) as mesh:
        env_id = mesh.send({"task": "a canvas tote bag"})
        mesh.join(timeout=60)
        record = mesh.result(env_id)
    # Then it went round once, the feedback in the writer's second prompt
    assert record.status == "succeeded"
    assert record.route["prev"] == ["write", "evaluate", "write", "evaluate"]
    first, second = asked(llm, "You write")
    assert "Feedback on it: (none yet)" in user_of(first)
    assert "Feedback on it: name the price and the size" in user_of(second)
    assert [r["score"] for r in record.payload["rounds"]] == [0.4, 0.9]
    assert record.payload["evaluation"] == {"outcome": "accepted", "score": 0.9, "rounds": 2}


def scores(values: list[float]) -> Any:
    """A writer that numbers its drafts, an evaluator scoring them in turn."""
    seen: list[float] = []

    def answer(request: dict[str, Any]) -> str:
        if request["messages"][0]["content"].startswith("You review"):
            seen.append(values[len(seen)])
            return json.dumps({"score": seen[-1], "feedback": f"round {len(seen)}: more"})
        return f"draft {len(seen) + 1}"

    return answer


def test_the_loop_stops_at_max_rounds_with_the_best_draft_for_review(
        tmp_path: Path, provider: Provider) -> None:
    # Given an evaluator that is never satisfied, and a limit of 3 rounds
    llm = provider(scores([0.3, 0.6, 0.5, 0.9]))
    reviews = open_review_store(None, state_dir=tmp_path)
    with LocalMesh(pattern("evaluator", llm), state_dir=tmp_path) as mesh:
        env_id = mesh.send({"task": "a lamp"})
        mesh.join(timeout=60, settle=lambda: len(reviews.pending()) == 1)
        record = mesh.result(env_id)
    # Then exactly three drafts were written and judged, no fourth
    assert len(asked(llm, "You write")) == 3 and len(asked(llm, "You review")) == 3
    assert record.route["prev"] == ["write", "evaluate"] * 3
    # and the best of them (the second, 0.6) waits for a person, the limit named
    assert (record.status, record.route["curr"]) == ("paused", "review")
    assert record.payload["draft"] == "draft 2"
    evaluation = record.payload["evaluation"]
    assert (evaluation["outcome"], evaluation["rounds"], evaluation["score"]) == (
        "loop-limit", 3, 0.6)
    reviews.close()

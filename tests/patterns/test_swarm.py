"""The swarm: agents hand work on by rewriting the route, share the board, stop at a
budget of hops, tokens or cost, and end in review when unsure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asya_agents.review import open_review_store
from asya_agents.stores import ResultRecord
from asya_agents.testing import LocalMesh
from tests.patterns.conftest import Provider, asked, pattern, steps, user_of

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def team(*, writer_confidence: float = 0.9, critic_sends_back: bool = False) -> Any:
    """Each role answers by its system prompt; the critic may keep sending work back."""

    def answer(request: dict[str, Any]) -> str:
        role = request["messages"][0]["content"].split(".")[0].removeprefix("You are the ")
        role = role.split()[0]
        handoff = {"planner": "researcher", "researcher": "critic",
                   "critic": "researcher" if critic_sends_back else "writer",
                   "writer": "done"}[role]
        confidence = writer_confidence if role == "writer" else 0.8
        return json.dumps({"say": f"{role} notes " + "x" * 40, "handoff": handoff,
                           "confidence": confidence})

    return answer


def run(tmp_path: Path, llm: Any, payload: dict[str, Any]) -> ResultRecord:
    reviews = open_review_store(None, state_dir=tmp_path)
    try:
        with LocalMesh(pattern("swarm", llm), state_dir=tmp_path) as mesh:
            env_id = mesh.send(payload)
            mesh.join(timeout=90, settle=lambda: mesh.result(env_id).status != "paused"
                      or len(reviews.pending()) == 1)
            return mesh.result(env_id)
    finally:
        reviews.close()


def test_the_team_hands_work_on_and_shares_the_board(tmp_path: Path,
                                                     provider: Provider) -> None:
    # Given the swarm's own stand-in team
    llm = provider(steps("swarm").offline_model)
    record = run(tmp_path, llm, {"task": "Why do onions make you cry?"})
    # Then each agent handed to the next by rewriting the route, and the writer finished
    assert record.status == "succeeded"
    assert record.route["prev"] == ["planner", "researcher", "critic", "writer"]
    assert [e["role"] for e in record.payload["board"]] == ["planner", "researcher",
                                                            "critic", "writer"]
    assert record.payload["swarm"]["outcome"] == "done"
    assert record.payload["answer"] == record.payload["board"][-1]["say"]
    # and each agent saw what those before it put on the board
    [writer] = asked(llm, "You are the writer")
    assert "The facts hold together." in user_of(writer)
    assert record.payload["usage"]["calls"] == 4 and record.payload["usage"]["cost"] > 0


def test_an_unsure_writer_ends_in_review(tmp_path: Path, provider: Provider) -> None:
    llm = provider(team(writer_confidence=0.4))
    record = run(tmp_path, llm, {"task": "Is this mushroom edible?"})
    assert (record.status, record.route["curr"]) == ("paused", "review")
    assert record.payload["swarm"]["outcome"] == "unsure"
    assert "0.4 is below 0.7" in record.payload["swarm"]["reason"]


def test_a_loop_between_agents_stops_at_the_hop_budget(tmp_path: Path,
                                                       provider: Provider) -> None:
    # Given a critic that always sends the work back to the researcher, and 6 hops
    llm = provider(team(critic_sends_back=True))
    record = run(tmp_path, llm, {"task": "Everything about tea", "budget": {"max_hops": 6}})
    # Then six agents worked; the seventh spent nothing and sent the work to review,
    # naming the limit
    assert (record.status, record.route["curr"]) == ("paused", "review")
    assert record.route["prev"] == ["planner", "researcher", "critic", "researcher",
                                    "critic", "researcher", "critic"]
    assert len(llm.requests) == 6 == record.payload["usage"]["calls"]
    swarm = record.payload["swarm"]
    assert (swarm["outcome"], swarm["limit"], swarm["used"], swarm["max"]) == (
        "budget", "max_hops", 6.0, 6.0)
    assert swarm["stopped_at"] == "critic"


def test_the_token_and_cost_budgets_read_litellms_usage(tmp_path: Path,
                                                        provider: Provider) -> None:
    # Given the looping team, a token budget the first calls exceed (tokens reported
    # by the provider, counted by litellm)
    llm = provider(team(critic_sends_back=True))
    record = run(tmp_path / "tokens", llm, {"task": "tea", "budget": {"max_tokens": 500}})
    swarm = record.payload["swarm"]
    assert (swarm["outcome"], swarm["limit"]) == ("budget", "max_tokens")
    assert swarm["used"] == record.payload["usage"]["total_tokens"] >= 500
    calls = record.payload["usage"]["calls"]
    assert 1 <= calls < 12 and len(llm.requests) == calls
    # and a cost budget, in dollars from litellm's price list for gpt-4o-mini
    priced = run(tmp_path / "cost", provider(team(critic_sends_back=True)),
                 {"task": "tea", "budget": {"max_cost": 0.0002}})
    cost = priced.payload["swarm"]
    assert (cost["outcome"], cost["limit"]) == ("budget", "max_cost")
    assert cost["used"] == priced.payload["usage"]["cost"] >= 0.0002
    assert priced.payload["usage"]["unpriced_calls"] == 0

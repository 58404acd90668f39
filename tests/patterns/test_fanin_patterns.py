"""The patterns that gather what they spread (spec.fanIn): parallel sectioning, voting
and orchestrator-workers. Each child is its own model call; the gather gets them all,
in fan-out order, once."""

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


def test_sections_are_reviewed_apart_and_gathered_in_order(tmp_path: Path,
                                                           provider: Provider) -> None:
    # Given the parallel mesh, and a payload naming four aspects
    llm = provider(steps("parallel").offline_model)
    aspects = ["tone", "accuracy", "clarity", "style"]
    text = "Best soup ever! Now 40% cheaper."
    with LocalMesh(pattern("parallel", llm), state_dir=tmp_path) as mesh:
        env_id = mesh.send({"document": text, "aspects": aspects})
        mesh.join(timeout=60)
        record = mesh.result(env_id)
        pieces = [r.id for r in mesh.children(env_id)]
    # Then one call per aspect, each asked about its aspect only
    assert sorted(user_of(r).partition("\n")[0] for r in llm.requests) == sorted(
        f"Aspect: {a}" for a in aspects)
    # and one gathered envelope, with the parent's id, the reviews in aspect order
    assert record.status == "succeeded" and record.id == env_id
    assert record.route["prev"] == ["split", "review", "combine"]
    assert list(record.payload["reviews"]) == aspects
    assert (record.payload["score"], record.payload["weakest"]) == (0.4, "tone")
    assert record.payload["usage"]["calls"] == 4  # each child's call counted once
    assert pieces == [env_id]  # the children ended in the gather, not on their own


def test_a_failed_section_fails_the_report_with_its_reason(tmp_path: Path,
                                                           provider: Provider) -> None:
    # Given a model that answers one aspect with something that is not JSON
    def answer(request: dict[str, Any]) -> str:
        return "no idea" if "Aspect: tone" in user_of(request) else '{"score": 1, "findings": []}'

    with LocalMesh(pattern("parallel", provider(answer)), state_dir=tmp_path) as mesh:
        env_id = mesh.send({"document": "Hello."})
        mesh.join(timeout=60)
        pieces = mesh.children(env_id)
    failed = [r for r in pieces if r.status == "failed"]
    # Then the group fails (partial: false), naming the child's reason
    assert failed, "the report should have failed"
    assert any("without a JSON object" in json.dumps(r.error) for r in failed)
    assert not [r for r in pieces if r.status == "succeeded"]


def votes(labels: list[str]) -> Any:
    """Voter ``seed`` votes ``labels[seed]``."""
    def answer(request: dict[str, Any]) -> str:
        return json.dumps({"label": labels[int(request["seed"])], "reason": "scripted"})
    return answer


def test_votes_are_counted_and_a_split_vote_goes_to_review(tmp_path: Path,
                                                            provider: Provider) -> None:
    # Given five voters that vote 4-1
    clear = provider(votes(["spam", "spam", "ok", "spam", "spam"]))
    with LocalMesh(pattern("voting", clear), state_dir=tmp_path / "clear") as mesh:
        env_id = mesh.send({"text": "BUY NOW http://x"})
        mesh.join(timeout=60)
        record = mesh.result(env_id)
    # Then every voter was asked once with its own seed, and the votes counted in order
    assert sorted(r["seed"] for r in clear.requests) == [0, 1, 2, 3, 4]
    assert record.status == "succeeded"
    assert record.route["prev"] == ["ballots", "vote", "tally", "decide"]
    assert record.payload["votes"] == ["spam", "spam", "ok", "spam", "spam"]
    assert record.payload["counts"] == {"spam": 4, "ok": 1}
    assert (record.payload["winner"], record.payload["agreement"]) == ("spam", 0.8)
    assert record.payload["decided"] is True
    # When the vote ties
    tied = provider(votes(["spam", "ok", "spam", "ok", "unsure"]))
    reviews = open_review_store(None, state_dir=tmp_path / "tied")
    with LocalMesh(pattern("voting", tied), state_dir=tmp_path / "tied") as mesh:
        env_id = mesh.send({"text": "hmm"})
        mesh.join(timeout=60, settle=lambda: len(reviews.pending()) == 1)
        split = mesh.result(env_id)
    reviews.close()
    # Then no winner is named and a person decides
    assert (split.status, split.route["curr"]) == ("paused", "review")
    assert split.payload["winner"] is None and split.payload["decided"] is False


def test_the_planner_decides_how_many_workers_run(tmp_path: Path,
                                                  provider: Provider) -> None:
    # Given the orchestrator's stand-in: one sub-task per question the task asks
    llm = provider(steps("orchestrator").offline_model)
    with LocalMesh(pattern("orchestrator", llm), state_dir=tmp_path) as mesh:
        two = mesh.send({"task": "Which flour suits pizza and how long should dough rest?"})
        three = mesh.send({"task": "What is rye? Where does it grow? Who bakes with it?"})
        mesh.join(timeout=90)
        records = mesh.result(two), mesh.result(three)
    # Then the number of workers was decided at run time, per task
    assert [len(r.payload["parts"]) for r in records] == [2, 3]
    assert len(asked(llm, "You are a worker")) == 5
    assert len(asked(llm, "You are the editor")) == 2
    # and the synthesiser saw every part, in the plan's order
    assert [p["title"] for p in records[1].payload["parts"]] == [
        "What is rye", "Where does it grow", "Who bakes with it"]
    editor = next(r for r in asked(llm, "You are the editor") if "rye" in user_of(r))
    assert all(p["result"] in user_of(editor) for p in records[1].payload["parts"])
    assert records[1].payload["usage"]["calls"] == 1 + 3 + 1


def test_a_plan_over_max_subtasks_fails_naming_the_count(tmp_path: Path,
                                                         provider: Provider) -> None:
    subtasks = [{"title": f"t{i}", "brief": "b"} for i in range(9)]
    llm = provider(lambda request: json.dumps({"subtasks": subtasks}))
    with LocalMesh(pattern("orchestrator", llm), state_dir=tmp_path) as mesh:
        env_id = mesh.send({"task": "everything"})
        mesh.join(timeout=60)
        record = mesh.result(env_id)
    assert record.status == "failed" and record.error is not None
    assert "planned 9 sub-tasks, more than max_subtasks=6" in record.error["message"]
    assert not asked(llm, "You are a worker")

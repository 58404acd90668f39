"""The qa-loop mesh: the judge template reused for text. A weak answer loops back to
the answerer with the judge's feedback, an uncertain one waits in review; the model
behind both actors is the local fake provider, over real HTTP."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asya_agents.fakes import FakeLLMProvider
from asya_agents.manifest import load_mesh
from asya_agents.review import open_review_store
from asya_agents.testing import LocalMesh
from tests.conftest import ROOT

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def model(request: dict[str, Any]) -> str:
    """Answers like a model that improves on feedback; judges like a strict grader."""
    system = request["messages"][0]["content"]
    user = json.dumps(request["messages"][1]["content"])
    if system.startswith("You answer"):
        return "A refined, complete answer." if "Feedback:" in user else "A draft."
    if "refined" in user:
        return json.dumps({"score": 0.9, "verdict": "accept", "reasons": ["complete"]})
    if "philosophy" in user:
        return json.dumps({"score": 0.6, "verdict": "uncertain", "reasons": ["debatable"]})
    return json.dumps({"score": 0.3, "verdict": "reject", "reasons": ["too thin"],
                       "defects": ["incomplete"]})


@pytest.mark.slow
def test_weak_answers_are_refined_and_uncertain_ones_reviewed(tmp_path: Path) -> None:
    with FakeLLMProvider(responder=model) as llm:
        loaded = load_mesh(ROOT / "mesh" / "qa-loop")
        keys = {"backend": "llm", "model": "openai/fake", "api_base": llm.base_url,
                "api_key": "test-key"}
        loaded.actors["answer"].spec.config.update(keys)
        loaded.actors["judge"].spec.config.update(keys)
        reviews = open_review_store(None, state_dir=tmp_path)
        with LocalMesh(loaded, state_dir=tmp_path) as mesh:
            bread = mesh.send({"question": "Why does bread rise?"})
            deep = mesh.send({"question": "Is philosophy useful?"})
            mesh.join(timeout=60, settle=lambda: len(reviews.pending()) == 1)
            refined = mesh.result(bread)
            waiting = mesh.result(deep)
        feedback_prompts = [r for r in llm.requests if "Feedback:" in json.dumps(r)]
    # Then the weak answer went round once, with the judge's reasons in the prompt
    assert refined.status == "succeeded"
    assert refined.route["prev"] == ["answer", "judge", "answer", "judge"]
    assert refined.payload["answer"] == "A refined, complete answer."
    assert refined.payload["drafts"] == ["A draft."]
    assert [h["verdict"] for h in refined.payload["judge_history"]] == ["reject", "accept"]
    assert len(feedback_prompts) == 1 and "too thin" in json.dumps(feedback_prompts[0])
    # and the uncertain one waits for a person
    assert (waiting.status, waiting.route["curr"]) == ("paused", "review")
    assert [i.id for i in reviews.pending()] == [deep]
    reviews.close()

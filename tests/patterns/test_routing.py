"""Routing: the classifier's label rewrites the route to one specialist; a message it
cannot place waits for a person before the generalist answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.review import open_review_store
from asya_agents.testing import LocalMesh
from tests.patterns.conftest import Provider, asked, pattern, steps

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

MESSAGES = {
    "billing": "Please refund the double charge on my invoice",
    "technical": "The app shows an error when I log in",
    "general": "What are your opening hours?",
    "unsure": "My invoice page shows an error",  # billing and technical: not one desk
}


def test_each_message_reaches_only_its_specialist(tmp_path: Path, provider: Provider) -> None:
    # Given the routing mesh on a provider answering as its offline stand-in
    llm = provider(steps("routing").offline_model)
    reviews = open_review_store(None, state_dir=tmp_path)
    with LocalMesh(pattern("routing", llm), state_dir=tmp_path) as mesh:
        # When one message of each kind is sent
        ids = {label: mesh.send({"message": text}) for label, text in MESSAGES.items()}
        mesh.join(timeout=60, settle=lambda: len(reviews.pending()) == 1)
        records = {label: mesh.result(i) for label, i in ids.items()}
    # Then each placed message took the route its label names, and nothing else
    for desk in ("billing", "technical", "general"):
        record = records[desk]
        assert record.status == "succeeded", desk
        assert record.route["prev"] == ["classify", desk]
        assert record.payload["routed"] == {"label": desk, "to": [desk], "fallback": False}
        assert record.payload["answer"].startswith(f"(the {desk} desk")
    assert [m["content"] for r in asked(llm, "You are the billing") for m in r["messages"]
            if m["role"] == "user"] == [MESSAGES["billing"]]
    # and the ambiguous one waits in review, the generalist still ahead of it
    unsure = records["unsure"]
    assert (unsure.status, unsure.route["curr"]) == ("paused", "review")
    assert unsure.route["next"] == ["general"]
    assert unsure.payload["routed"] == {"label": "unsure", "to": ["review", "general"],
                                        "fallback": True}
    assert [item.id for item in reviews.pending()] == [ids["unsure"]]
    reviews.close()


def test_a_label_without_a_route_and_no_fallback_fails_naming_it(
        tmp_path: Path, provider: Provider) -> None:
    # Given a classifier with no fallback route, whose model answers a label it lacks
    llm = provider(lambda request: '{"route": "legal"}')
    loaded = pattern("routing", llm)
    loaded.actors["classify"].spec.config["fallback_route"] = None
    with LocalMesh(loaded, state_dir=tmp_path) as mesh:
        env_id = mesh.send({"message": "Can I sue you?"})
        mesh.join(timeout=60)
        record = mesh.result(env_id)
    # Then it ends in error-end with the label and the routes it had
    assert record.status == "failed"
    assert record.error is not None and record.error["type"] == "actors.llm.handler.RouteError"
    assert "'legal'" in record.error["message"]
    assert "billing, technical, general" in record.error["message"]

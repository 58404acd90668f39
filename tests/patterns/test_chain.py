"""Prompt chaining: three calls in a fixed order, a code gate between them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asya_agents.testing import LocalMesh
from tests.patterns.conftest import Provider, asked, pattern, steps

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


def test_each_step_builds_on_the_last_and_the_gate_stops_a_thin_outline(
        tmp_path: Path, provider: Provider) -> None:
    # Given the chain, its model answering as the mesh's offline stand-in does
    llm = provider(steps("chain").offline_model)
    loaded = pattern("chain", llm)
    # When a good topic and a vague one are sent
    with LocalMesh(loaded, state_dir=tmp_path) as mesh:
        good = mesh.send({"topic": "sourdough baking"})
        vague = mesh.send({"topic": "?"})
        mesh.join(timeout=60)
        written, stopped = mesh.result(good), mesh.result(vague)
    # Then the good topic went through every step, each fed the step before
    assert written.status == "succeeded"
    assert written.route["prev"] == ["outline", "gate", "draft", "polish"]
    points = written.payload["outline"]["points"]
    [draft_request] = asked(llm, "You write")
    assert json.dumps(points, ensure_ascii=False) in draft_request["messages"][-1]["content"]
    [polish_request] = asked(llm, "You are an editor")
    assert polish_request["messages"][-1]["content"] == written.payload["draft"]
    assert written.payload["text"].endswith("in brief.")
    # and its usage counts the three calls, priced by litellm
    assert written.payload["usage"]["calls"] == 3
    assert written.payload["usage"]["cost"] > 0
    # while the vague one stopped at the gate after one call, saying why
    assert stopped.status == "succeeded"
    assert stopped.route["prev"] == ["outline", "gate"]
    assert stopped.payload["gate"]["passed"] is False
    assert "0 point(s), 3 needed" in stopped.payload["gate"]["reason"]
    assert stopped.payload["usage"]["calls"] == 1 and "draft" not in stopped.payload
    assert len(asked(llm, "You plan")) == 2 and len(llm.requests) == 4

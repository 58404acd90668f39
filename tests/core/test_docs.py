"""The examples in docs/ run: Python blocks execute, manifests load, envelopes decode."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_agents.envelope import Envelope
from asya_agents.manifest import Flavor, Mesh, parse_actor
from asya_agents.stores.base import ResultRecord

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(page: str, lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall((DOCS / page).read_text()) if kind == lang]


@pytest.mark.parametrize("page", ["envelope.md", "handlers.md", "testing.md"])
def test_python_examples_run(page: str) -> None:
    found = blocks(page, "python")
    assert found, f"{page} has Python examples"
    for body in found:
        exec(compile(body, f"docs/{page}", "exec"), {})


def test_the_envelope_example_is_a_valid_envelope() -> None:
    [body] = blocks("envelope.md", "json")
    env = Envelope.from_dict(json.loads(body))
    assert env.route.curr == "judge" and env.advanced().route.curr == "upload"


def test_manifest_examples_load(tmp_path: Path) -> None:
    docs: list[dict[str, Any]] = [yaml.safe_load(b) for b in blocks("manifest.md", "yaml")]
    flavors = {d["metadata"]["name"]: Flavor.model_validate(d)
               for d in docs if d["kind"] == "Flavor"}
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["kind"] == "AsyncActor":
            actor = parse_actor(doc, tmp_path / "doc.yaml", flavors)
            assert actor.spec.concurrency == 8
        elif doc["kind"] == "Mesh":
            Mesh.model_validate(doc)
    assert kinds == {"AsyncActor", "Flavor", "Mesh"}


def test_cli_doc_shows_the_fields_results_json_prints() -> None:
    [body] = blocks("cli.md", "json")
    [documented] = json.loads(body)
    record = ResultRecord(id="x", root_id="x", status="succeeded", payload={}, route={},
                          envelope={}, error=None, weight="1", recorded_at=0.0)
    assert set(documented) == set(record.to_json())

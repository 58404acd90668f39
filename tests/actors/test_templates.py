"""The judge and review templates: their actor.yaml loads (flavors merged) and its
config is accepted, and the README documents every config key."""

from __future__ import annotations

import inspect
import shutil
from pathlib import Path

import pytest

from actors.judge.handler import Judge
from asya_agents.manifest import load_mesh
from asya_agents.review import ReviewConfig
from tests.conftest import ROOT

MESH_YAML = """apiVersion: asya.sh/v1alpha1
kind: Mesh
metadata: {name: template}
spec: {route: [ACTOR], flavorPaths: [FLAVORS]}
"""


def template_mesh(tmp_path: Path, actor: str) -> Path:
    """A one-actor mesh holding the template's actor.yaml as it ships."""
    shutil.copy(ROOT / "actors" / actor / "actor.yaml", tmp_path / "actor.yaml")
    text = MESH_YAML.replace("ACTOR", actor).replace("FLAVORS", str(ROOT / "mesh/flavors"))
    (tmp_path / "mesh.yaml").write_text(text)
    return tmp_path


@pytest.mark.parametrize(("actor", "keys"), [
    ("judge", [p for p in inspect.signature(Judge).parameters]),
    ("review", list(ReviewConfig.model_fields)),
])
def test_the_readme_documents_every_config_key(actor: str, keys: list[str]) -> None:
    readme = (ROOT / "actors" / actor / "README.md").read_text()
    missing = [k for k in keys if f"| `{k}` |" not in readme]
    assert not missing, f"actors/{actor}/README.md does not document {missing}"


def test_the_judge_template_loads_with_its_flavor(tmp_path: Path) -> None:
    loaded = load_mesh(template_mesh(tmp_path, "judge"))
    spec = loaded.actors["judge"].spec
    assert spec.handlerMode == "envelope"
    assert "rate-limited" in spec.resiliency.policies  # from llm-resilient
    judge = Judge(**{**spec.config, "backend": "heuristic"})
    assert (judge.accept, judge.reject, judge.max_loops) == (0.8, 0.5, 2)


def test_the_review_template_config_is_valid(tmp_path: Path) -> None:
    loaded = load_mesh(template_mesh(tmp_path, "review"))
    spec = loaded.actors["review"].spec
    config = ReviewConfig.model_validate(spec.config)
    assert (config.deadline, config.deadline_action) == (24 * 3600, "reject")
    assert spec.scaling.minReplicaCount == 1  # deadlines fire with no new work
    with pytest.raises(ValueError, match="deadline_action"):
        ReviewConfig.model_validate({**spec.config, "deadline_action": "shrug"})


def test_an_unknown_review_key_fails_at_startup_naming_it(tmp_path: Path) -> None:
    from asya_agents.errors import ConfigError
    from asya_agents.replica import build_runtime
    from asya_agents.settings import Settings, StoreSettings
    from asya_agents.transports.embedded import EmbeddedTransport

    loaded = load_mesh(template_mesh(tmp_path, "review"))
    loaded.actors["review"].spec.config["deadlines"] = "1h"
    with pytest.raises(ConfigError, match=r"actor.yaml: spec.config.deadlines: unknown field "
                       r"\(did you mean 'deadline'\?\)"):
        build_runtime(loaded, "review", EmbeddedTransport(tmp_path / "q.db"),
                      settings=Settings(store=StoreSettings(url=None)), state_dir=tmp_path)

"""The enhance template's files agree with its code: actor.yaml is a valid AsyncActor
whose config the Enhancer accepts, and the README documents every config key."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from actors.enhance.handler import Enhancer
from asya_agents.manifest import Flavor, parse_actor

HERE = Path(__file__).resolve().parents[2] / "actors" / "enhance"


def test_actor_yaml_is_valid_and_its_config_fits_the_enhancer() -> None:
    # Given a stand-in for the gpu flavor (mesh/flavors/gpu.yaml is another template's)
    gpu = Flavor.model_validate({"apiVersion": "asya.sh/v1alpha1", "kind": "Flavor",
                                 "metadata": {"name": "gpu"}, "spec": {}})
    doc = yaml.safe_load((HERE / "actor.yaml").read_text())
    actor = parse_actor(doc, HERE / "actor.yaml", {"gpu": gpu})
    assert actor.spec.handler == "actors.enhance.handler.Enhancer.enhance_batch"
    assert actor.spec.batch is not None
    assert actor.spec.batch.maxSize == actor.spec.config["max_batch"]
    inspect.signature(Enhancer).bind(**actor.spec.config)


def test_readme_documents_every_config_key() -> None:
    readme = (HERE / "README.md").read_text()
    keys = list(inspect.signature(Enhancer).parameters)
    missing = [k for k in keys if f"| `{k}` |" not in readme]
    assert keys and missing == []

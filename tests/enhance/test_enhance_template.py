"""The enhance template's files agree with its code: actor.yaml is a valid AsyncActor
whose config the Enhancer accepts, and the README documents every config key."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from actors.enhance.handler import Enhancer
from asya_agents.manifest import load_flavors, parse_actor

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "actors" / "enhance"


def test_actor_yaml_with_the_gpu_flavor_fits_the_enhancer() -> None:
    # Given the template and the shared flavors
    flavors = load_flavors([ROOT / "mesh" / "flavors"])
    doc = yaml.safe_load((HERE / "actor.yaml").read_text())
    # When the template is read with them
    actor = parse_actor(doc, HERE / "actor.yaml", flavors)
    # Then it is the batch handler, batches match the pipeline's, and Enhancer takes
    # every config key
    assert actor.spec.handler == "actors.enhance.handler.Enhancer.enhance_batch"
    assert actor.spec.batch is not None
    assert actor.spec.batch.maxSize == actor.spec.config["max_batch"]
    assert actor.spec.concurrency == 2 and actor.spec.resources  # flavor merged under it
    inspect.signature(Enhancer).bind(**actor.spec.config)


def test_readme_documents_every_config_key() -> None:
    readme = (HERE / "README.md").read_text()
    keys = list(inspect.signature(Enhancer).parameters)
    missing = [k for k in keys if f"| `{k}` |" not in readme]
    assert keys and missing == []

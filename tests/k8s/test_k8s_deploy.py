"""deploy/: every kustomization builds with kubectl and every object it yields is valid;
rendered overlays are what `asya render` writes today; RBAC stays narrow."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from asya_agents.cli import main
from asya_agents.k8s.crd import flavor_crd
from asya_agents.k8s.render import RUN_AS
from asya_agents.manifest import load_flavors
from tests.conftest import ROOT, SERVICE_SKIP
from tests.k8s.conftest import validate_any

DEPLOY = ROOT / "deploy"
KUSTOMIZATIONS = sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))
#: overlay → the `asya render` arguments it was generated with (its kustomization says so)
RENDERED = {
    "example": "mesh/example -o deploy/overlays/example/mesh --transport rabbitmq",
    "food-image": "mesh/food-image -o deploy/overlays/food-image/mesh --transport rabbitmq "
                  "--overrides deploy/overlays/food-image/cluster.yaml",
}

def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip(f"{SERVICE_SKIP} kubectl (Debian package kubernetes-client) not installed")
    done = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d is not None]


def overlay_ids() -> list[str]:
    return [str(p.relative_to(DEPLOY)) for p in KUSTOMIZATIONS]


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=overlay_ids())
def test_kustomization_builds_and_validates(folder: Path, keda: dict[str, Any]) -> None:
    # Given a kustomization under deploy/; When kubectl builds it
    objs = kustomize(folder)
    # Then it yields objects, each valid against its schema
    assert objs
    for obj in objs:
        validate_any(obj, keda)


def test_the_overlays_that_matter_exist() -> None:
    names = set(overlay_ids())
    assert {"base", "crds", "overlays/rabbitmq", "overlays/sqs", "overlays/example"} <= names


@pytest.mark.parametrize("overlay", sorted(RENDERED))
def test_rendered_overlays_are_current(overlay: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the command an overlay documents; When run again into a fresh folder
    args = RENDERED[overlay].split()
    if not (ROOT / args[0]).is_dir():
        pytest.skip(f"{args[0]} is not in this checkout yet")
    committed = ROOT / args[2]
    args[2] = str(tmp_path)
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["render", *args])
    assert result.exit_code == 0, result.output
    # Then it writes what is committed, byte for byte
    fresh = sorted(p.name for p in tmp_path.iterdir())
    assert fresh == sorted(p.name for p in committed.iterdir())
    for name in fresh:
        assert (committed / name).read_text() == (tmp_path / name).read_text(), (
            f"{committed / name} is stale: make k8s-generate")
    comment = " ".join((committed.parent / "kustomization.yaml").read_text()
                       .replace("#", " ").replace("\\", " ").split())
    assert f"asya render {RENDERED[overlay]}" in comment


@pytest.mark.parametrize("transport", ["rabbitmq", "sqs"])
def test_the_transport_overlay_configures_the_operator(transport: str) -> None:
    objs = kustomize(DEPLOY / "overlays" / transport)
    operator = next(o for o in objs if o["kind"] == "Deployment")
    container = operator["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["asya", "operator"]
    assert container["args"] == ["--transport", transport]
    for env in container["env"]:
        if "KEY" in env["name"] or env["name"].endswith("_URL"):
            assert "secretKeyRef" in env["valueFrom"], env


def test_operator_rbac_is_narrow() -> None:
    rbac = list(yaml.safe_load_all((DEPLOY / "base" / "operator-rbac.yaml").read_text()))
    rules = rbac[0]["rules"]
    resources = {r for rule in rules for r in rule["resources"]}
    verbs = {v for rule in rules for v in rule["verbs"]}
    assert "*" not in resources and "*" not in verbs
    assert not {"secrets", "pods", "roles", "clusterroles", "rolebindings"} & resources
    assert "deletecollection" not in verbs and "escalate" not in verbs


def test_shared_flavors_match_the_flavor_crd() -> None:
    # the platform team applies mesh/flavors/ as Flavor resources for the operator
    flavors = load_flavors([ROOT / "mesh" / "flavors"])
    assert "gpu" in flavors
    schema = flavor_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator = jsonschema.Draft4Validator(schema)
    for file in sorted((ROOT / "mesh" / "flavors").glob("*.yaml")):
        validator.validate(yaml.safe_load(file.read_text()))


@pytest.mark.parametrize("name", ["runtime.Dockerfile", "gpu.Dockerfile"])
def test_images_run_as_the_user_the_pods_expect(name: str) -> None:
    # the images cannot be built here (no container engine); the pod's runAsUser and the
    # image's USER must agree, or runAsNonRoot refuses to start it
    text = (DEPLOY / "docker" / name).read_text()
    assert f"USER {RUN_AS}" in text

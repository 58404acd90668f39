"""The CRDs: generated from the models, structural, committed as generated."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner

from asya_agents.cli import main
from asya_agents.k8s.crd import asyncactor_crd, crd_documents, dump_yaml, flavor_crd
from tests.conftest import ROOT
from tests.k8s.conftest import validate_builtin

CRD_DIR = ROOT / "deploy" / "crds"


def _nodes(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in schema.get("properties", {}).items():
        out += _nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        out += _nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _nodes(schema["additionalProperties"], f"{path}{{}}")
    return out


def _open_api(crd: dict[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


@pytest.mark.parametrize("crd", crd_documents(), ids=lambda c: c["metadata"]["name"])
def test_crd_schema_is_structural(crd: dict[str, Any]) -> None:
    # Given a generated CRD; Then every node is typed (or explicitly free-form) and
    # uses nothing the API server rejects in a structural schema
    validate_builtin(crd)
    for path, node in _nodes(_open_api(crd)):
        assert not {"$ref", "$defs", "anyOf", "oneOf", "allOf", "const", "default",
                    "title"} & set(node), path
        assert ("type" in node or node.get("x-kubernetes-int-or-string")
                or node.get("x-kubernetes-preserve-unknown-fields")), path
        assert not ("properties" in node and "additionalProperties" in node), path
        if "exclusiveMinimum" in node:
            assert isinstance(node["exclusiveMinimum"], bool), path
    assert _open_api(crd)["properties"]["metadata"] == {"type": "object"}


def test_asyncactor_crd_shape() -> None:
    crd = asyncactor_crd()
    version = crd["spec"]["versions"][0]
    spec = _open_api(crd)["properties"]["spec"]["properties"]
    # durations are strings in manifests, numbers to pydantic
    assert spec["resiliency"]["properties"]["actorTimeout"] == {
        "x-kubernetes-int-or-string": True,
        "description": "A duration: 300s, 1m, 1h30m, 250ms, or whole seconds"}
    assert spec["config"]["x-kubernetes-preserve-unknown-fields"] is True
    assert spec["handlerMode"]["enum"] == ["payload", "envelope"]
    assert spec["maxMessageBytes"]["nullable"] is True
    assert version["subresources"] == {"status": {}}
    conditions = _open_api(crd)["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Handler"] == ".spec.handler"


def test_flavor_crd_has_no_flavors_field() -> None:
    spec = _open_api(flavor_crd())["properties"]["spec"]
    assert "flavors" not in spec["properties"]
    assert "handler" in spec["properties"]


def test_schema_accepts_example_manifests_and_refuses_a_wrong_type() -> None:
    # Given the actor manifests of the example mesh; When checked against the CRD schema
    schema = _open_api(asyncactor_crd())
    docs = list(yaml.safe_load_all((ROOT / "mesh" / "example" / "actors.yaml").read_text()))
    validator = jsonschema.Draft4Validator(schema)  # OpenAPI v3.0 is draft 4's dialect
    for doc in docs:
        validator.validate(doc)
    # Then a wrongly typed field is refused at that field
    bad = {**docs[0], "spec": {**docs[0]["spec"], "concurrency": "many"}}
    with pytest.raises(jsonschema.ValidationError) as err:
        validator.validate(bad)
    assert list(err.value.absolute_path) == ["spec", "concurrency"]


def test_committed_crds_equal_generated() -> None:
    # Given deploy/crds in the repo; Then each file is what `asya crd` writes
    for crd in crd_documents():
        path = CRD_DIR / f"{crd['metadata']['name']}.yaml"
        assert path.read_text() == dump_yaml([crd]), f"{path} is stale: make k8s-generate"
    result = CliRunner().invoke(main, ["crd"])
    assert result.exit_code == 0, result.output
    assert result.output == dump_yaml(crd_documents())


def test_crd_output_is_stable(tmp_path: Any) -> None:
    first = CliRunner().invoke(main, ["crd", "-o", str(tmp_path / "a")])
    second = CliRunner().invoke(main, ["crd", "-o", str(tmp_path / "b")])
    assert first.exit_code == second.exit_code == 0
    for file in sorted((tmp_path / "a").iterdir()):
        assert file.read_bytes() == (tmp_path / "b" / file.name).read_bytes()

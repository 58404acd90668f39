"""On a cluster: a mesh whose mesh.yaml asks for a gateway gets its Deployment and
Service, with probes and keys from a Secret; a mesh that does not ask gets nothing."""

from __future__ import annotations

from pathlib import Path

from asya_agents.k8s.render import RenderOptions, render_mesh, write_rendered
from asya_agents.manifest import load_mesh
from tests.conftest import ROOT
from tests.k8s.conftest import validate_builtin

GATEWAY_MESH = ROOT / "tests" / "gateway" / "meshes" / "desk"


def test_a_mesh_with_spec_gateway_gets_a_gateway_deployment_and_service() -> None:
    # Given a mesh whose mesh.yaml has spec.gateway
    rendered = render_mesh(load_mesh(GATEWAY_MESH), RenderOptions(project_root=ROOT))
    # When its gateway objects are read
    deployment, service = rendered.files["gateway.yaml"]
    # Then they are valid Kubernetes objects
    validate_builtin(deployment)
    validate_builtin(service)
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["command"][:3] == ["asya", "gateway", "/etc/asya/mesh"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    # with the keys from a Secret, never a key or a hash in the objects
    env = {e["name"]: e for e in container["env"]}
    assert env["ASYA_GATEWAY_KEYS_FILE"]["value"] == "/etc/asya/gateway-keys/keys"
    assert "ASYA_GATEWAY_KEYS" not in env
    assert env["ASYA_STORE_URL"]["valueFrom"]["secretKeyRef"]["optional"] is False
    assert {"name": "gateway-keys", "secret": {"secretName": "asya-gateway-keys"}} \
        in pod["volumes"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    # and the mounted mesh.yaml tells the replicas to write hop events
    assert "gateway:" in rendered.files["mesh-configmap.yaml"][0]["data"]["mesh.yaml"]


def test_a_mesh_without_spec_gateway_renders_no_gateway(tmp_path: Path) -> None:
    rendered = render_mesh(load_mesh(ROOT / "mesh" / "example"),
                           RenderOptions(project_root=ROOT))
    assert "gateway.yaml" not in rendered.files
    assert "gateway" not in rendered.files["mesh-configmap.yaml"][0]["data"]["mesh.yaml"]
    write_rendered(rendered, tmp_path)
    assert not (tmp_path / "gateway.yaml").exists()

"""docs/gateway.md shows what works: its mesh.yaml loads, its MCP client configuration is
JSON, and every command it shows is one the CLI has."""

from __future__ import annotations

import json
import re

import yaml

from asya_agents.manifest import Mesh
from tests.conftest import ROOT

PAGE = (ROOT / "docs" / "gateway.md").read_text()
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def _blocks(lang: str) -> list[str]:
    return [body for kind, body in BLOCK.findall(PAGE) if kind == lang]


def test_the_mesh_example_is_a_valid_mesh_with_a_gateway() -> None:
    [mesh] = [Mesh.model_validate(yaml.safe_load(b)) for b in _blocks("yaml")]
    assert mesh.spec.gateway is not None and mesh.spec.gateway.replicas == 2


def test_the_mcp_client_configuration_is_json_pointing_at_mcp() -> None:
    [config] = [json.loads(b) for b in _blocks("json")]
    server = config["mcpServers"]["food-image"]
    assert server["url"].endswith("/mcp") and server["headers"]["Authorization"]


def test_the_python_examples_compile() -> None:
    found = _blocks("python")
    assert len(found) == 3
    for body in found:
        compile(body, "docs/gateway.md", "exec", flags=0x2000)  # top-level await


def test_the_metrics_table_lists_every_gateway_metric_and_no_other() -> None:
    from asya_agents.observe.gatewaymetrics import GatewayMetrics

    metrics = GatewayMetrics(mesh="m", open_streams=lambda: 0)
    metrics.request("/v1/jobs", "POST", 201, 0.01)
    metrics.job("c", "http")
    exposed = {re.sub(r"_(bucket|sum|count)$", "", s.name)
               for fam in metrics.registry.collect() for s in fam.samples
               if not s.name.endswith("_created")}
    section = PAGE.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    assert set(re.findall(r"`(asya_gateway_[a-z_]+)`", section)) == exposed

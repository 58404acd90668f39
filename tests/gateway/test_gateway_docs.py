"""docs/gateway.md shows what works: its mesh.yaml loads, its MCP client configuration is
JSON, and every command it shows is one the CLI has."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
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


# -- the examples, run as written against a real gateway of mesh/example --------------

EXAMPLE = ROOT / "mesh" / "example"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The page's own setup: mesh/example behind a gateway, on the embedded transport."""
    from tests.gateway.conftest import serving

    with pytest.MonkeyPatch.context() as env:
        env.setenv("ASYA_GATEWAY_EVENTS", "1")  # its replicas (here) write hop events
        with serving("embedded", tmp_path_factory.mktemp("gw-example"), folder=EXAMPLE,
                     ASYA_GATEWAY_EVENTS="1") as served:
            yield served


def _as_served(body: str, served: Any) -> str:
    """An example pointed at ``served``'s port in place of the page's 8080."""
    return body.replace("http://127.0.0.1:8080", served.url)


def test_the_curl_examples_run_as_written(example: Any) -> None:
    import shutil
    import subprocess

    from tests.gateway.conftest import KEY

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    [block] = [b for b in _blocks("bash") if "$GW/v1/jobs" in b]
    out = subprocess.run(["bash", "-c", "set -e\n" + _as_served(block, example)],
                         env={"KEY": KEY, "PATH": os.environ["PATH"]},
                         capture_output=True, text=True, timeout=60, check=True).stdout
    answers, decoder, at = [], json.JSONDecoder(), 0
    while (at := out.find("{", at)) >= 0:
        answer, at = decoder.raw_decode(out, at)
        answers.append(answer)
    # Then both submits are jobs (curl -d's form Content-Type notwithstanding)
    keyed, routed, *rest = answers
    assert keyed["status"] == "queued" and routed["status"] == "queued", answers
    assert keyed["id"] != routed["id"]
    # and the reads of the page's made-up id are JSON errors naming the id
    assert [a["error"]["field"] for a in rest] == ["id", "id", "id"], rest
    example.wait_ended([keyed["id"], routed["id"]])
    with example.client() as api:
        [record] = api.get(f"/v1/jobs/{routed['id']}").json()["results"]
    assert record["route"]["prev"] == ["split", "format"]


def test_the_python_examples_run_as_written(example: Any, capsys: Any) -> None:
    import textwrap

    from tests.gateway.conftest import KEY

    # Given the page's three Python examples (httpx + SSE, MCP, A2A), in page order
    for body in _blocks("python"):
        code = _as_served(body, example)
        if "await" in code:
            code = ("import asyncio\nasync def main():\n" + textwrap.indent(code, "    ")
                    + "\nasyncio.run(main())\n")
        # When each runs as written (KEY is the one thing a reader fills in)
        exec(compile(code, "docs/gateway.md", "exec"), {"KEY": KEY})
    printed = capsys.readouterr().out.splitlines()
    # Then the stream reached its end, the results printed, the tool call succeeded
    assert any(line.startswith("hop ") for line in printed), printed
    assert any(line.startswith("end ") and "succeeded" in line for line in printed)
    assert any("'shout': 'IS IT ON?'" in line for line in printed)
    assert any(line.startswith("split: hop") for line in printed)  # MCP progress
    assert printed[-1] == "succeeded"  # the MCP call's status; A2A raised nothing

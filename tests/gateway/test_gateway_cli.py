"""Starting the gateway: credentials first (keys as hashes, no open gateway unless
--insecure on loopback), ``asya gateway hash-key``, and ``asya up --gateway`` running it
beside the replicas and stopping it with them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from asya_agents.cli import main
from asya_agents.errors import ConfigError
from asya_agents.gateway.keys import KeyRing, hash_key
from tests.conftest import ROOT
from tests.gateway.conftest import KEY, MESH, free_port
from tests.gateway.helpers import read_stream


def test_hash_key_prints_an_entry_that_verifies_the_key_and_no_other() -> None:
    # Given a key hashed by the command
    out = CliRunner().invoke(main, ["gateway", "hash-key", "shop"], input=KEY + "\n")
    assert out.exit_code == 0, out.output
    entry = out.output.strip()
    # Then the entry names the client, holds no key, and verifies only that key
    assert entry.startswith("shop:sha256$") and KEY not in entry
    ring = KeyRing.parse([("entry 1", entry)])
    assert ring.verify(KEY) == "shop"
    assert ring.verify(KEY + "x") is None
    assert ring.bearer(f"Bearer {KEY}") == "shop" and ring.bearer(KEY) is None


def test_hash_key_refuses_a_short_key_or_none() -> None:
    short = CliRunner().invoke(main, ["gateway", "hash-key", "shop"], input="tiny\n")
    assert short.exit_code != 0 and "openssl rand" in short.output
    empty = CliRunner().invoke(main, ["gateway", "hash-key", "shop"], input="")
    assert empty.exit_code != 0 and "no key on stdin" in empty.output


def test_a_bad_entry_is_named_by_its_place_never_by_its_hash() -> None:
    good = f"shop:{hash_key(KEY)}"
    with pytest.raises(ConfigError, match="ASYA_GATEWAY_KEYS entry 2") as err:
        KeyRing.parse([("ASYA_GATEWAY_KEYS entry 1", good),
                       ("ASYA_GATEWAY_KEYS entry 2", "other:md5$abc$def")])
    assert "md5$abc" not in str(err.value)
    with pytest.raises(ConfigError, match="listed twice"):
        KeyRing.parse([("a", good), ("b", good)])


def test_every_entry_is_compared_whichever_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Constant time: the comparison runs against every entry, not up to the first match
    import hmac

    calls: list[str] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest",
                        lambda a, b: calls.append(b) or real(a, b))
    ring = KeyRing.parse([(str(i), f"c{i}:{hash_key(KEY + str(i))}") for i in range(3)])
    assert ring.verify(KEY + "0") == "c0"
    assert len(calls) == 3


def test_the_gateway_refuses_to_start_open(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYA_GATEWAY_KEYS")}
    runner = CliRunner(env={**env, "ASYA_GATEWAY_KEYS": ""})
    args = ["gateway", str(MESH), "--state-dir", str(tmp_path)]
    no_keys = runner.invoke(main, args)
    assert no_keys.exit_code == 2 and "has no keys" in no_keys.output
    wide = runner.invoke(main, [*args, "--insecure", "--host", "0.0.0.0"])
    assert wide.exit_code == 2 and "only on a loopback address" in wide.output
    up = runner.invoke(main, ["up", str(MESH), "--state-dir", str(tmp_path), "--gateway"])
    assert up.exit_code == 2 and "has no keys" in up.output


@pytest.mark.slow
def test_up_with_gateway_serves_the_mesh_and_stops_with_it(tmp_path: Path) -> None:
    # Given `asya up --gateway` with a key
    port = free_port()
    env = {**os.environ, "ASYA_GATEWAY_KEYS": f"tester:{hash_key(KEY)}",
           "ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1"}
    env.pop("ASYA_STORE_URL", None)
    up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(MESH),
                           "--state-dir", str(tmp_path), "--gateway", "--gateway-port",
                           str(port)], env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        # When a job goes through it
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": f"Bearer {KEY}"}) as api:
            job = api.post("/v1/jobs", json={"payload": {"text": "Up. Here."}}).json()["id"]
            events = read_stream(api, job)
        # Then the replicas' hops reached the stream, and the job succeeded
        assert {d["actor"] for e, _, d in events if e == "hop"} == {"split", "shout"}
        assert events[-1][2]["status"] == "succeeded"
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    # and SIGTERM stopped the mesh and its gateway
    assert code == 0
    with pytest.raises(httpx.HTTPError):
        httpx.get(url + "/healthz", timeout=1)


def test_no_key_or_hash_reaches_the_log_even_at_debug(tmp_path: Path) -> None:
    import asyncio

    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    from tests.gateway.conftest import serving

    wrong = "wrong-key-but-long-enough-0123456789"
    # Given a gateway logging everything
    with serving("embedded", tmp_path, ASYA_LOG_LEVEL="DEBUG") as served:
        hashes = [entry.split("$")[-1]
                  for entry in served.env["ASYA_GATEWAY_KEYS"].split(",")]
        # When clients call it with the right key and a wrong one, over HTTP and MCP
        with served.client() as api:
            job = api.post("/v1/jobs", json={"payload": {"text": "Log. Me."}}).json()["id"]
            read_stream(api, job)
        assert httpx.get(served.url + "/v1/jobs/" + job,
                         headers={"Authorization": f"Bearer {wrong}"}).status_code == 401

        async def call() -> None:
            async with create_mcp_http_client(headers=served.headers) as http, \
                    Client(streamable_http_client(served.url + "/mcp",
                                                  http_client=http)) as mcp:
                await mcp.call_tool("desk", {"text": "Tool."})

        asyncio.run(call())
        served.stop()
        log = served.log.read_text()
    # Then the log has plenty of lines, and none holds a key or a hash
    assert "mcp" in log and log.count("\n") > 10
    for secret in (KEY, wrong, *hashes):
        assert secret not in log


def test_healthz_says_stopping_with_503_once_the_gateway_stops(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from asya_agents.context import MeshContext
    from asya_agents.gateway.app import create_app
    from asya_agents.gateway.service import Gateway

    gateway = Gateway(MeshContext.open(MESH, state_dir=tmp_path), keys=None)
    with TestClient(create_app(gateway)) as client:
        assert client.get("/healthz").status_code == 200
        # When SIGTERM begins the stop, a load balancer's probe sends clients elsewhere
        gateway.begin_stop()
        answer = client.get("/healthz")
        assert answer.status_code == 503 and answer.json()["status"] == "stopping"

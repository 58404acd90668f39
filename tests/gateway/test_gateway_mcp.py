"""The mesh as an MCP tool, through the official SDK's client on streamable HTTP: one
tool named after the mesh with the entry actor's input schema, a progress notification
per hop, the job's result as the tool's result; a paused job says it waits for a
person, a failed one is an error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tests.gateway.conftest import Served
from tests.gateway.helpers import decide_in_console


async def _with_client(served: Served, work: Any, *, key: bool = True) -> Any:
    headers = served.headers if key else {}
    async with create_mcp_http_client(headers=headers) as http, \
            Client(streamable_http_client(served.url + "/mcp", http_client=http)) as client:
        return await work(client)


def test_the_mesh_is_one_tool_with_its_entry_actors_input_schema(served: Served) -> None:
    async def work(client: Client) -> Any:
        return (await client.list_tools()).tools

    [tool] = asyncio.run(_with_client(served, work))
    assert tool.name == "desk"
    assert tool.description == "Splits a text into sentences and shouts each one."
    assert tool.input_schema["type"] == "object"
    assert tool.input_schema["required"] == ["text"]
    assert tool.input_schema["properties"]["text"]["type"] == "string"


def test_calling_the_tool_runs_a_job_with_progress_per_hop(served: Served) -> None:
    progress: list[tuple[float, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, message))

    async def work(client: Client) -> Any:
        return await client.call_tool("desk", {"text": "One. Two."},
                                      progress_callback=on_progress)

    result = asyncio.run(_with_client(served, work))
    assert result.is_error is False
    data = result.structured_content
    assert data is not None and data["status"] == "succeeded"
    assert sorted(r["payload"]["shout"] for r in data["results"]) == ["ONE.", "TWO."]
    # one notification per hop and piece end: split, two shouts, two ends
    assert [p for p, _ in progress] == list(range(1, len(progress) + 1))
    assert len(progress) >= 5
    assert any(m and m.startswith("shout: hop") for _, m in progress)


def test_a_failed_job_is_an_error_result(served: Served) -> None:
    async def work(client: Client) -> Any:
        return await client.call_tool("desk", {"text": "x", "fail": True})

    result = asyncio.run(_with_client(served, work))
    assert result.is_error is True
    assert result.structured_content is not None
    assert result.structured_content["status"] == "failed"
    [record] = result.structured_content["results"]
    assert record["error"]["message"] == "asked to fail"


def test_an_unknown_tool_is_an_error_naming_it(served: Served) -> None:
    async def work(client: Client) -> Any:
        return await client.call_tool("nothing", {})

    result = asyncio.run(_with_client(served, work))
    assert result.is_error is True and "nothing" in result.content[0].text


def test_a_paused_job_answers_that_it_waits_for_a_person(reviewed: Served) -> None:
    # Given a mesh whose route stops at a review desk
    async def work(client: Client) -> Any:
        return await client.call_tool("review", {"text": "look"})

    # When the tool is called
    result = asyncio.run(_with_client(reviewed, work))
    # Then it returns, not an error, saying the job waits for a person and where
    data = result.structured_content
    assert result.is_error is False and data is not None
    assert data["status"] == "paused"
    assert "waits for a person" in data["waiting"] and data["id"] in data["waiting"]
    # and a decision in the console lets the job finish
    decide_in_console(reviewed.mesh, data["id"], "approve")
    reviewed.wait_ended([data["id"]])


def test_without_a_key_the_mcp_endpoint_refuses(served: Served) -> None:
    async def work(client: Client) -> Any:
        return await client.list_tools()

    with pytest.raises(BaseException):  # noqa: B017 - the SDK's error for a 401 varies
        asyncio.run(_with_client(served, work, key=False))

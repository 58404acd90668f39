"""The mesh as a Model Context Protocol tool, at ``/mcp`` (streamable HTTP).

An AI assistant that speaks MCP sees one tool per mesh, named after it, whose input
schema is the entry actor's declared payload type (:mod:`.schema`). Calling it submits
a job with the arguments as its payload, reports a progress notification per hop (when
the caller asked for progress), and answers with the job's ended records, as
structured content and as JSON text. A job that fails answers ``isError``; a job that
pauses for review answers that it waits for a person, with where to decide it (the
review console, or an A2A message on the task of the same id).

Built on the official SDK's low-level server and its streamable-HTTP session manager,
stateless: each call stands alone, so any replica of the gateway serves it and a
restart forgets nothing that mattered. Credentials are the gateway's own (the request
reaches this app only through :class:`~asya_agents.gateway.auth.RequireKey`).
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from asya_agents.errors import GatewayError, MessageTooLarge
from asya_agents.gateway.auth import ANONYMOUS, client_of
from asya_agents.gateway.jobs import Job
from asya_agents.gateway.service import Gateway

__all__ = ["McpEndpoint", "tool_result"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def tool_result(gateway: Gateway, job: Job) -> types.CallToolResult:
    """What a call answers once its job finished, or paused, or the gateway stops."""
    data = job.to_json()
    if job.status == "paused":
        data["waiting"] = (f"job {job.id} waits for a person: decide it in the review "
                           f"console (asya review), or send an A2A message with a "
                           f"decision on task {job.id}")
    elif job.status not in ("succeeded", "failed"):
        data["note"] = (f"the gateway is stopping; job {job.id} goes on: read it at "
                        f"GET /v1/jobs/{job.id}")
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(data))],
        structured_content=data, is_error=job.status == "failed")


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)],
                                is_error=True)


class McpEndpoint:
    """The MCP server of ``gateway``: its ASGI app and the session manager whose
    :meth:`run` the app's lifespan enters."""

    def __init__(self, gateway: Gateway, *, host: str) -> None:
        self.gateway = gateway
        self.tool = types.Tool(name=gateway.name, title=f"{gateway.name} mesh",
                               description=gateway.description,
                               input_schema=gateway.schema)
        self.server: Server[Any] = Server(
            gateway.name, version="1", description=gateway.description,
            on_list_tools=self._list_tools, on_call_tool=self._call_tool)
        self.manager = StreamableHTTPSessionManager(
            app=self.server, stateless=True, security_settings=_security(host))
        self.app = StreamableHTTPASGIApp(self.manager)

    async def _list_tools(self, ctx: ServerRequestContext[Any],
                          params: types.PaginatedRequestParams | None
                          ) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[self.tool])

    async def _call_tool(self, ctx: ServerRequestContext[Any],
                         params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name != self.tool.name:
            return _error(f"no tool {params.name!r}: this gateway serves {self.tool.name!r}")
        scope = getattr(ctx.request, "scope", None)
        client = client_of(scope) if isinstance(scope, dict) else ANONYMOUS
        try:
            done = await self.gateway.jobs.submit(dict(params.arguments or {}), client=client)
        except (GatewayError, MessageTooLarge) as exc:
            return _error(str(exc))
        if self.gateway.metrics is not None:
            self.gateway.metrics.job(client, "mcp")
        hops = 0
        async for event in self.gateway.follow(done.id,
                                               until=("succeeded", "failed", "paused")):
            if event.event in ("hop", "piece"):
                hops += 1
                await ctx.session.report_progress(hops, None, _progress(event.data))
        return tool_result(self.gateway, await self.gateway.jobs.get(done.id))


def _progress(data: dict[str, Any]) -> str:
    return f"{data.get('actor')}: {data.get('kind')} ({data.get('piece')})"


def _security(host: str) -> TransportSecuritySettings | None:
    """On loopback, refuse requests whose Host or Origin is not loopback (DNS
    rebinding); elsewhere the gateway sits behind a Service and its keys."""
    if host not in _LOOPBACK:
        return None
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=["127.0.0.1:*", "localhost:*", "[::1]:*"],
        allowed_origins=["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])

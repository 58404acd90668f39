"""The gateway's ASGI application: the HTTP API, MCP and A2A, over one :class:`Gateway`.

:func:`create_app` puts the parts together on FastAPI, which also writes the OpenAPI
document (``/openapi.json``, browsable at ``/docs``): the jobs API (:mod:`.http`), the
MCP server at ``/mcp`` (:mod:`.mcp_server`), the A2A JSON-RPC endpoint at ``/a2a`` and
the agent card (:mod:`.a2a_server`). Around them, outermost first: the request metrics,
the credentials (:class:`~.auth.RequireKey`), the body limit and the fast path of
``POST /v1/jobs`` (:class:`~.http.SubmitFast`). The app's lifespan
starts the gateway and the MCP session manager on the serving loop and closes both.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from a2a.server.request_handlers.response_helpers import agent_card_to_dict
from a2a.server.routes import add_a2a_routes_to_fastapi, create_jsonrpc_routes
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asya_agents.envelope import MAX_ENVELOPE_BYTES
from asya_agents.gateway.a2a_server import MeshAgent, agent_card
from asya_agents.gateway.auth import PUBLIC_PATHS, LimitBody, RequireKey
from asya_agents.gateway.http import SubmitFast, install_errors, router
from asya_agents.gateway.mcp_server import McpEndpoint
from asya_agents.gateway.service import Gateway

__all__ = ["create_app"]

#: Paths served by plain Starlette routes (no template of their own for the metrics).
_PLAIN_ROUTES = frozenset({"/mcp"})
#: Room for the JSON around a payload (the route, the keys, an MCP or A2A frame).
_BODY_SLACK = 64 * 1024


class _Timed:
    """Counts and times every request by its route's template."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway) -> None:
        self.app, self.gateway = app, gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        metrics = self.gateway.metrics
        if scope["type"] != "http" or metrics is None:
            await self.app(scope, receive, send)
            return
        started, code = time.perf_counter(), 500

        async def sent(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            route = getattr(scope.get("route"), "path", None) or (
                scope["path"] if scope["path"] in _PLAIN_ROUTES else "other")
            metrics.request(route, scope["method"], code, time.perf_counter() - started)


def create_app(gateway: Gateway, *, host: str = "127.0.0.1") -> FastAPI:
    """The app serving ``gateway`` (listening on ``host``: loopback turns on the MCP
    transport's DNS-rebinding protection)."""
    mcp = McpEndpoint(gateway, host=host)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            async with mcp.manager.run():
                yield
        finally:
            await gateway.close()

    app = FastAPI(title=f"asya gateway: {gateway.name}", version="1",
                  description=gateway.description, lifespan=lifespan)
    app.state.gateway = gateway
    app.include_router(router)
    install_errors(app)
    app.router.routes.append(Route("/mcp", endpoint=mcp.app,
                                   methods=["GET", "POST", "DELETE"]))
    add_a2a_routes_to_fastapi(app, jsonrpc_routes=create_jsonrpc_routes(
        MeshAgent(gateway), rpc_url="/a2a", enable_v0_3_compat=True))
    _card_routes(app, gateway)
    _document_credentials(app)
    app.add_middleware(SubmitFast, gateway=gateway, route=next(
        r for r in router.routes if isinstance(r, APIRoute) and r.path == "/v1/jobs"))
    app.add_middleware(LimitBody, max_bytes=_max_body(gateway))
    app.add_middleware(RequireKey, keys=gateway.keys)
    app.add_middleware(_Timed, gateway=gateway)
    return app


def _document_credentials(app: FastAPI) -> None:
    """The OpenAPI document names the bearer scheme on every path that asks for it."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()
        schemes = doc.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {"type": "http", "scheme": "bearer",
                             "description": "a key whose hash is in ASYA_GATEWAY_KEYS"}
        for path, operations in doc.get("paths", {}).items():
            if path not in PUBLIC_PATHS:
                for operation in operations.values():
                    operation["security"] = [{"bearer": []}]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _max_body(gateway: Gateway) -> int:
    entry = gateway.ctx.loaded.actors[gateway.ctx.loaded.route[0]].spec
    return (entry.maxMessageBytes or MAX_ENVELOPE_BYTES) + _BODY_SLACK


def _card_routes(app: FastAPI, gateway: Gateway) -> None:
    async def card(request: Request) -> Any:
        base = gateway.settings.public_url or str(request.base_url)
        return JSONResponse(agent_card_to_dict(agent_card(gateway, base)))

    for path in ("/.well-known/agent-card.json", "/.well-known/agent.json"):
        app.add_api_route(path, card, methods=["GET"], tags=["A2A: Agent Card"],
                          summary="The A2A agent card of the mesh")

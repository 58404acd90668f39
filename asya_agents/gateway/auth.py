"""What every request passes before a route sees it: its credentials and its size.

:class:`RequireKey` lets through the few public paths (liveness, metrics, the OpenAPI
document, the A2A agent card) and asks every other request for ``Authorization:
Bearer KEY``; a missing or wrong key gets ``401`` with a JSON error and
``WWW-Authenticate: Bearer``. The client's name goes into the ASGI scope as a Starlette
user, which the routes, the MCP server and the A2A SDK all read. :class:`LimitBody`
refuses a body whose declared length is past what the mesh could ever take, before a
byte of it is read. Both are plain ASGI, so streaming responses pass untouched.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.authentication import AuthCredentials, SimpleUser
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asya_agents.gateway.keys import KeyRing

__all__ = ["ANONYMOUS", "PUBLIC_PATHS", "LimitBody", "RequireKey", "client_of", "error_body",
           "send_json"]

#: Paths served without credentials.
PUBLIC_PATHS = frozenset({"/healthz", "/metrics", "/openapi.json", "/docs", "/redoc",
                          "/.well-known/agent-card.json", "/.well-known/agent.json"})
#: The client of a gateway started with ``--insecure``.
ANONYMOUS = "anonymous"


def error_body(status: int, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON of every error the gateway answers."""
    return {"error": {"status": status, "field": field, "message": message}}


async def send_json(send: Send, status: int, body: dict[str, Any],
                     headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


def client_of(scope: Scope) -> str:
    """The name of the client a request came from (set by :class:`RequireKey`)."""
    user = scope.get("user")
    return user.username if isinstance(user, SimpleUser) else ANONYMOUS


class RequireKey:
    """Bearer keys on every path but :data:`PUBLIC_PATHS`; ``keys`` ``None``: none asked
    (``--insecure`` on loopback), every caller is :data:`ANONYMOUS`."""

    def __init__(self, app: ASGIApp, *, keys: KeyRing | None) -> None:
        self.app, self.keys = app, keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        client = ANONYMOUS if self.keys is None else \
            self.keys.bearer(Headers(scope=scope).get("authorization"))
        if client is None:
            await send_json(send, 401, error_body(
                401, "a gateway key is needed: Authorization: Bearer KEY", "Authorization"),
                [(b"www-authenticate", b'Bearer realm="asya-gateway"')])
            return
        scope["user"], scope["auth"] = SimpleUser(client), AuthCredentials(["gateway"])
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    """A body that streamed past the limit (no ``Content-Length`` said so first)."""


class LimitBody:
    """``413`` for a request whose body is past ``max_bytes``: at once when its
    ``Content-Length`` says so, else (a chunked body) as soon as it streams past."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _refusal(self, size: str) -> dict[str, Any]:
        return error_body(413, f"the body is {size} bytes, over the gateway's limit of "
                               f"{self.max_bytes} (send large data by URL)", "payload")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and length.isdigit():
            if int(length) > self.max_bytes:
                await send_json(send, 413, self._refusal(length))
                return
            await self.app(scope, receive, send)  # the server holds it to its length
            return
        seen, started = 0, False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, sending)
        except _TooLarge:
            if started:
                raise
            await send_json(send, 413, self._refusal(f"more than {self.max_bytes}"))

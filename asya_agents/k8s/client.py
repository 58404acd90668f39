"""A small Kubernetes API client for the operator: list, server-side apply, delete.

kopf logs in (service account or kubeconfig) and hands over its connection info; this
client reuses it over aiohttp, which kopf already depends on, rather than pulling in a
full client library for four calls. Errors from the API become
:class:`~asya_agents.errors.ClusterError` with the method, the path and the server's
message.
"""

from __future__ import annotations

import json
import ssl
from typing import Any

from asya_agents.errors import ClusterError
from asya_agents.k8s.crd import RESOURCES

__all__ = ["ClusterError", "HttpCluster", "resource_path"]

MANAGER = "asya-operator"


def resource_path(kind: str, namespace: str, name: str | None = None) -> str:
    """``/api/v1/namespaces/NS/configmaps/NAME`` and the like for ``kind``."""
    api_version, plural = RESOURCES[kind]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{root}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


class HttpCluster:
    """:class:`asya_agents.k8s.operator.Cluster` over HTTP; ``connect`` before use."""

    def __init__(self, server: str | None = None, *, headers: dict[str, str] | None = None,
                 ssl_context: ssl.SSLContext | bool | None = None) -> None:
        self.server = server
        self.headers = headers or {}
        self.ssl_context = ssl_context
        self._session: Any = None

    def connect(self, info: Any) -> None:
        """Take kopf's ``ConnectionInfo`` (server, CA, token or client certificate)."""
        self.server = info.server.rstrip("/")
        self.headers = dict(info.as_http_headers())
        ctx = ssl.create_default_context(cafile=info.ca_path or None,
                                         cadata=_text(info.ca_data))
        if info.insecure:
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        if info.certificate_path:
            ctx.load_cert_chain(info.certificate_path, info.private_key_path)
        self.ssl_context = ctx

    async def _request(self, method: str, path: str, *, body: Any = None,
                       params: dict[str, str] | None = None,
                       content_type: str = "application/json") -> Any:
        import aiohttp

        if self.server is None:
            raise ClusterError("not connected to a cluster")
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self.headers)
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        try:
            async with self._session.request(method, self.server + path, data=data,
                                             params=params, headers=headers,
                                             ssl=self.ssl_context) as resp:
                text = await resp.text()
                if resp.status == 404 and method == "DELETE":
                    return None
                if resp.status >= 400:
                    hint = _hint(resp.status, path)
                    raise ClusterError(f"{method} {path}: HTTP {resp.status}{hint}: {text[:300]}")
                return json.loads(text) if text else None
        except aiohttp.ClientError as exc:
            raise ClusterError(f"{method} {path}: {exc}") from exc

    async def list(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        found = await self._request("GET", resource_path(kind, namespace))
        return list(found.get("items", [])) if found else []

    async def apply(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta["namespace"], meta["name"])
        await self._request("PATCH", path, body=obj,
                            params={"fieldManager": MANAGER, "force": "true"},
                            content_type="application/apply-patch+yaml")

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        await self._request("DELETE", resource_path(kind, namespace, name),
                            body={"propagationPolicy": "Background"})

    async def patch_status(self, kind: str, namespace: str, name: str,
                           status: dict[str, Any]) -> None:
        await self._request("PATCH", resource_path(kind, namespace, name) + "/status",
                            body={"status": status},
                            content_type="application/merge-patch+json")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _text(data: str | bytes | None) -> str | None:
    if data is None:
        return None
    return data.decode() if isinstance(data, bytes) else data


def _hint(status: int, path: str) -> str:
    if status == 404 and "/apis/keda.sh/" in path:
        return " (is KEDA installed?)"
    if status == 403:
        return " (the operator's ClusterRole does not allow it)"
    return ""

"""The operator's API client over real HTTP (a local server that records requests),
and its wiring into kopf."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web

from asya_agents.k8s.client import ClusterError, HttpCluster, resource_path


def test_resource_paths() -> None:
    assert resource_path("ConfigMap", "ns", "m") == "/api/v1/namespaces/ns/configmaps/m"
    assert resource_path("Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert (resource_path("ScaledObject", "ns", "a")
            == "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/a")
    assert (resource_path("AsyncActor", "ns")
            == "/apis/asya.sh/v1alpha1/namespaces/ns/asyncactors")


async def _with_server(calls: list[dict[str, Any]], body: Any) -> None:
    async def record(request: web.Request) -> web.Response:
        calls.append({"method": request.method, "path": request.path,
                      "query": dict(request.query),
                      "type": request.headers.get("Content-Type"),
                      "auth": request.headers.get("Authorization"),
                      "body": await request.text()})
        if request.path.endswith("/missing"):
            return web.json_response({"reason": "NotFound"}, status=404)
        if "/scaledobjects/" in request.path:
            return web.json_response({"reason": "NotFound"}, status=404)
        if request.path.endswith("/forbidden"):
            return web.json_response({"message": "deployments is forbidden"}, status=403)
        return web.json_response({"items": [{"metadata": {"name": "a"}}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    cluster = HttpCluster(f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer t"})
    try:
        await body(cluster)
    finally:
        await cluster.close()
        await runner.cleanup()


def run(body: Any) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    asyncio.run(_with_server(calls, body))
    return calls


def test_apply_is_a_server_side_apply() -> None:
    obj = {"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "judge", "namespace": "pics"}, "spec": {}}

    async def body(cluster: HttpCluster) -> None:
        await cluster.apply(obj)

    [call] = run(body)
    assert (call["method"], call["path"]) == ("PATCH",
                                              "/apis/apps/v1/namespaces/pics/deployments/judge")
    assert call["type"] == "application/apply-patch+yaml"
    assert call["query"] == {"fieldManager": "asya-operator", "force": "true"}
    assert call["auth"] == "Bearer t"
    assert json.loads(call["body"]) == obj


def test_list_delete_and_status() -> None:
    found: list[Any] = []

    async def body(cluster: HttpCluster) -> None:
        found.extend(await cluster.list("Flavor", "pics"))
        await cluster.delete("ScaledObject", "pics", "missing")  # 404: already gone
        await cluster.patch_status("AsyncActor", "pics", "judge", {"queue": "q"})

    calls = run(body)
    assert found == [{"metadata": {"name": "a"}}]
    assert [c["method"] for c in calls] == ["GET", "DELETE", "PATCH"]
    assert calls[2]["path"].endswith("/asyncactors/judge/status")
    assert calls[2]["type"] == "application/merge-patch+json"
    assert json.loads(calls[2]["body"]) == {"status": {"queue": "q"}}


def test_refusals_name_the_request() -> None:
    async def body(cluster: HttpCluster) -> None:
        with pytest.raises(ClusterError, match=r"PATCH .*/forbidden: HTTP 403 \(the operator"):
            await cluster.apply({"kind": "Deployment",
                                 "metadata": {"name": "forbidden", "namespace": "x"}})
        with pytest.raises(ClusterError, match=r"HTTP 404 \(is KEDA installed\?\)"):
            await cluster.apply({"kind": "ScaledObject",
                                 "metadata": {"name": "judge", "namespace": "x"}})

    assert len(run(body)) == 2


def test_unreachable_api_is_a_cluster_error() -> None:
    async def main() -> None:
        cluster = HttpCluster("http://127.0.0.1:1")
        try:
            with pytest.raises(ClusterError, match="GET /api/v1/namespaces/x/configmaps"):
                await cluster.list("ConfigMap", "x")
        finally:
            await cluster.close()

    asyncio.run(main())


def test_kopf_registers_every_handler() -> None:
    kopf = pytest.importorskip("kopf")
    from asya_agents.k8s.operator import Operator, _register
    from asya_agents.k8s.render import RenderOptions

    cluster = HttpCluster()
    op = Operator(cluster, RenderOptions(), lambda mesh: None)  # type: ignore[arg-type,return-value]
    registry = kopf.OperatorRegistry()
    _register(kopf, registry, op, cluster)
    actors = kopf.Resource("asya.sh", "v1alpha1", "asyncactors")
    flavors = kopf.Resource("asya.sh", "v1alpha1", "flavors")
    handlers = [h for h in registry._changing.get_all_handlers()
                if h.selector is not None and h.selector.check(actors)]
    reasons = {str(h.reason).split(".")[-1].lower() for h in handlers if h.reason}
    assert reasons == {"create", "update", "delete"}
    assert any(h.initial for h in handlers), "resume: reconcile what exists at startup"
    flavor_handlers = [h for h in registry._changing.get_all_handlers()
                       if h.selector is not None and h.selector.check(flavors)]
    assert len(flavor_handlers) == 2
    assert registry._activities.get_all_handlers(), "login handler"

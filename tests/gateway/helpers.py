"""What the gateway's tests do besides calling it: read a stream to its end, decide
a review item the way the review console does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from httpx_sse import connect_sse

from asya_agents.review import ReviewService
from asya_agents.testing import LocalMesh


def read_stream(client: httpx.Client, job: str, *, last_id: str | None = None,
                stop_after: str = "end") -> list[tuple[str, str, dict[str, Any]]]:
    """``(event, id, data)`` of a job's SSE stream, up to ``stop_after`` (or its end)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    got = []
    with connect_sse(client, "GET", f"/v1/jobs/{job}/events", headers=headers) as source:
        assert source.response.status_code == 200
        for sse in source.iter_sse():
            got.append((sse.event, sse.id, json.loads(sse.data)))
            if sse.event == stop_after:
                break
    return got


def waiting_items(mesh: LocalMesh, job: str) -> list[Any]:
    store = mesh.ctx.reviews()
    return [i for i in store.pending(mesh=mesh.loaded.name)
            if (i.envelope.get("meta") or {}).get("root_id") == job]


def decide_in_console(mesh: LocalMesh, job: str, decision: str, *,
                      reviewer: str = "alice") -> list[Any]:
    """Decide the job's waiting pieces as the review console does (its own
    connection to the mesh, through the review service)."""
    async def go() -> list[Any]:
        async with mesh.ctx.connected() as transport:
            service = ReviewService(mesh.ctx.reviews(), transport, mesh.store,
                                    mesh=mesh.loaded.name)
            try:
                return [await service.adecide(i.id, decision=decision, reviewer=reviewer)
                        for i in waiting_items(mesh, job)]
            finally:
                service.close()

    return asyncio.run(go())

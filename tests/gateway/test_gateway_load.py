"""The gateway under stress, on each transport: restarted while jobs run (no job lost,
streams resume where they stopped, an Idempotency-Key still finds its job), stopped by
SIGTERM with a last event on every open stream, and 1,000 concurrent submissions that
all end."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from tests.gateway.conftest import TRANSPORTS, Served, serving
from tests.gateway.helpers import read_stream


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_gateway_restarted_while_jobs_run_loses_none(transport: str,
                                                       tmp_path: Path) -> None:
    with serving(transport, tmp_path) as served, served.client() as api:
        # Given 20 slow jobs running, one of them with a key, and a client on a stream
        body = {"payload": {"seconds": 0.4}, "route": ["nap", "shout"]}
        keyed = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "slow-1"})
        jobs = [keyed.json()["id"]] + [api.post("/v1/jobs", json=body).json()["id"]
                                       for _ in range(19)]
        got = []
        with connect_sse(api, "GET", f"/v1/jobs/{jobs[-1]}/events") as source:
            for sse in source.iter_sse():
                got.append((sse.event, sse.id, json.loads(sse.data)))
                if len(got) == 1:
                    # When the gateway gets SIGTERM while the stream is open
                    served.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        # Then the stream ended with a last event, and the gateway exited cleanly
        assert got[-1][0] == "shutdown"
        assert got[-1][2]["job"] == jobs[-1]
        assert served.stop() == 0
        # When it starts again (the mesh ran on meanwhile)
        served.start()
        # Then the stream resumes after the last id it got and reaches the end
        last = next((i for _, i, _ in reversed(got) if i), None)
        rest = read_stream(api, jobs[-1], last_id=last)
        seen = [i for _, i, _ in got if i] + [i for e, i, _ in rest if e in ("hop", "piece")]
        assert len(seen) == len(set(seen)) and rest[-1][0] == "end"
        # and every job ends succeeded, and the key still names its job
        served.wait_ended(jobs)
        assert {api.get(f"/v1/jobs/{j}").json()["status"] for j in jobs} == {"succeeded"}
        again = api.post("/v1/jobs", json=body, headers={"Idempotency-Key": "slow-1"})
        assert again.status_code == 200 and again.json()["id"] == jobs[0]


async def _submit_all(served: Served, count: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=60,
                                 limits=limits) as client:
        return await asyncio.gather(*(
            client.post("/v1/jobs", json={"payload": {"text": f"n{i}"}, "route": ["shout"]})
            for i in range(count)))


async def _statuses(served: Served, jobs: list[str]) -> set[str]:
    async with httpx.AsyncClient(base_url=served.url, headers=served.headers, timeout=60,
                                 limits=httpx.Limits(max_connections=32)) as client:
        answers = await asyncio.gather(*(client.get(f"/v1/jobs/{j}") for j in jobs))
    return {a.json()["status"] for a in answers}


@pytest.mark.slow
def test_a_thousand_concurrent_submissions_all_end(served: Served) -> None:
    # Given 1,000 clients submitting at once
    answers = asyncio.run(_submit_all(served, 1000))
    # Then each got its own job, and every job ends succeeded
    assert {a.status_code for a in answers} == {201}
    jobs = [a.json()["id"] for a in answers]
    assert len(set(jobs)) == 1000
    served.wait_ended(jobs, timeout=120)
    assert asyncio.run(_statuses(served, jobs)) == {"succeeded"}

"""Live progress: each job's Server-Sent Events, one per hop and status change of
every piece, then ``end``; a client reconnecting with Last-Event-ID misses nothing."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.gateway.conftest import MESH, Served, serving
from tests.gateway.helpers import decide_in_console, read_stream, waiting_items


def test_a_fanned_out_job_streams_each_hop_of_each_piece_then_end(
        served: Served, api: httpx.Client) -> None:
    # Given a job that fans out into two pieces
    job = api.post("/v1/jobs", json={"payload": {"text": "One. Two."}}).json()["id"]
    # When its stream is read to the end
    events = read_stream(api, job)
    # Then it saw the split, a shout hop of each piece, each piece end, then end
    hops = [(d["actor"], d["piece"]) for e, _, d in events if e == "hop"]
    assert (("split", job)) in hops
    assert {p for a, p in hops if a == "shout"} == {f"{job}.0", f"{job}.1"}
    pieces = {d["piece"]: d["kind"] for e, _, d in events if e == "piece"}
    assert pieces == {f"{job}.0": "succeeded", f"{job}.1": "succeeded"}
    assert events[-1][0] == "end" and events[-1][2] == {"job": job, "status": "succeeded"}
    assert [d["status"] for e, _, d in events if e == "status"][-1] == "succeeded"
    ids = [int(i) for e, i, _ in events if e in ("hop", "piece")]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_a_reconnect_with_last_event_id_gets_exactly_what_came_after(
        served: Served, api: httpx.Client) -> None:
    # Given the whole stream of a finished job
    job = api.post("/v1/jobs", json={"payload": {"text": "A. B. C."}}).json()["id"]
    full = read_stream(api, job)
    numbered = [(e, i) for e, i, _ in full if e in ("hop", "piece")]
    # When a client that got the first two events reconnects with the second's id
    again = read_stream(api, job, last_id=numbered[1][1])
    # Then it gets every later event, none before, and the end
    assert [(e, i) for e, i, _ in again if e in ("hop", "piece")] == numbered[2:]
    assert again[-1][0] == "end"
    bad = api.get(f"/v1/jobs/{job}/events", headers={"Last-Event-ID": "x7"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "Last-Event-ID"
    assert api.get("/v1/jobs/nope/events").status_code == 404


def test_a_paused_job_streams_paused_then_resumes_once_on_a_decision(
        served: Served, api: httpx.Client) -> None:
    # Given a job that stops at the review desk, and a client reading its stream
    job = api.post("/v1/jobs", json={"payload": {"text": "check me"},
                                     "route": ["shout", "desk", "shout"]}).json()["id"]
    with ThreadPoolExecutor(3) as pool, served.client() as reader:
        stream = pool.submit(read_stream, reader, job)
        while not waiting_items(served.mesh, job):
            time.sleep(0.02)
        assert api.get(f"/v1/jobs/{job}").json()["status"] == "paused"
        # When two reviewers decide it at once in the console
        clicks = [pool.submit(decide_in_console, served.mesh, job, d, reviewer=r)
                  for d, r in (("approve", "alice"), ("reject", "bob"))]
        results = [r for click in clicks for r in click.result(timeout=30)]
        events = stream.result(timeout=60)
    # Then exactly one decision won, and the one stream saw the pause, the resume, the end
    won = [r for r in results if r.won]
    assert len(won) == 1
    statuses = [d["status"] for e, _, d in events if e == "status"]
    assert "paused" in statuses
    assert ("piece", "paused") in [(e, d.get("kind")) for e, _, d in events]
    final = "succeeded" if won[0].item.decided_by == "alice" else "failed"
    assert events[-1][0] == "end" and events[-1][2] == {"job": job, "status": final}
    [record] = api.get(f"/v1/jobs/{job}").json()["results"]
    assert record["status"] == final


QUIET = MESH.parent / "quiet"


def test_without_hop_events_a_stream_still_reaches_its_end(tmp_path: Path) -> None:
    # Given a mesh whose replicas write no hop events (as when an event is lost with a
    # killed replica): only the result store knows the job ended
    with serving("embedded", tmp_path, folder=QUIET) as served, served.client() as api:
        job = api.post("/v1/jobs", json={"payload": {"text": "psst"}}).json()["id"]
        # When its stream is read
        events = read_stream(api, job)
    # Then the feed's check of the result store ends it, with no hop lines
    assert [e for e, _, _ in events if e in ("hop", "piece")] == []
    assert events[-1] == ("end", events[-1][1], {"job": job, "status": "succeeded"})

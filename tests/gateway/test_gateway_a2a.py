"""The mesh as an A2A agent, through the official SDK's client: its card, the task
methods (send, get, cancel, streaming) on jobs, a paused job as ``input-required``, and
a decision on it (from A2A or the console) that resumes it once."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from a2a.client import ClientConfig, create_client
from a2a.client.errors import A2AClientError
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import A2AError
from google.protobuf import json_format, struct_pb2

from tests.gateway.conftest import Served
from tests.gateway.helpers import decide_in_console, waiting_items


def _message(*, text: str | None = None, data: Any = None,
             task_id: str | None = None) -> pb.SendMessageRequest:
    parts = []
    if text is not None:
        parts.append(pb.Part(text=text))
    if data is not None:
        parts.append(pb.Part(data=json_format.ParseDict(data, struct_pb2.Value())))
    message = pb.Message(message_id=uuid.uuid4().hex, role=pb.ROLE_USER, parts=parts,
                         task_id=task_id or "")
    return pb.SendMessageRequest(message=message)


async def _agent(served: Served, work: Callable[[Any], Awaitable[Any]], *,
                 streaming: bool = False) -> Any:
    async with httpx.AsyncClient(headers=served.headers, timeout=60) as http:
        client = await create_client(served.url, ClientConfig(httpx_client=http,
                                                              streaming=streaming))
        try:
            return await work(client)
        finally:
            await client.close()


async def _send(client: Any, request: pb.SendMessageRequest) -> list[pb.StreamResponse]:
    return [event async for event in client.send_message(request)]


def test_the_agent_card_names_the_mesh_its_skill_and_its_credentials(served: Served) -> None:
    card = httpx.get(served.url + "/.well-known/agent-card.json").json()
    assert card["name"] == "desk"
    assert card["description"] == "Splits a text into sentences and shouts each one."
    assert [s["id"] for s in card["skills"]] == ["desk"]
    assert card["supportedInterfaces"][0]["url"] == served.url + "/a2a"
    assert card["capabilities"]["streaming"] is True
    assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "bearer"


def test_a_message_runs_a_job_and_the_task_is_the_job(served: Served) -> None:
    async def work(client: Any) -> tuple[pb.Task, pb.Task]:
        [reply] = await _send(client, _message(data={"text": "One. Two."}))
        task = await client.get_task(pb.GetTaskRequest(id=reply.task.id))
        return reply.task, task

    sent, got = asyncio.run(_agent(served, work))
    assert sent.status.state == pb.TASK_STATE_COMPLETED
    assert got.id == sent.id and got.status.state == pb.TASK_STATE_COMPLETED
    records = [json_format.MessageToDict(p.data) for p in got.artifacts[0].parts]
    assert sorted(r["payload"]["shout"] for r in records) == ["ONE.", "TWO."]
    with served.client() as api:
        assert api.get(f"/v1/jobs/{sent.id}").json()["status"] == "succeeded"


def test_a_text_message_is_the_payload_text_and_a_resent_message_the_same_job(
        served: Served) -> None:
    request = _message(text="Hello there.")

    async def work(client: Any) -> tuple[str, str]:
        [first] = await _send(client, request)
        [again] = await _send(client, request)
        return first.task.id, again.task.id

    first, again = asyncio.run(_agent(served, work))
    assert first == again
    assert len(served.mesh.children(first)) == 1


def test_a_message_id_and_an_http_idempotency_key_of_the_same_text_are_two_jobs(
        served: Served) -> None:
    # Given an HTTP job submitted with the Idempotency-Key "order-17" (docs/gateway.md)
    key = f"order-{uuid.uuid4().hex[:6]}"
    with served.client() as api:
        http_job = api.post("/v1/jobs", json={"payload": {"text": "Via HTTP."}},
                            headers={"Idempotency-Key": key}).json()["id"]
    # When the same client sends an A2A message whose id is that key
    request = _message(data={"text": "Via A2A."})
    request.message.message_id = key

    async def work(client: Any) -> pb.Task:
        [reply] = await _send(client, request)
        return reply.task

    task = asyncio.run(_agent(served, work))
    # Then the message is a job of its own, not a conflict with the HTTP one
    assert task.status.state == pb.TASK_STATE_COMPLETED and task.id != http_job
    served.wait_ended([http_job])


def test_streaming_sends_a_status_update_per_hop_then_the_result(served: Served) -> None:
    async def work(client: Any) -> list[pb.StreamResponse]:
        return await _send(client, _message(data={"text": "A. B."}))

    events = asyncio.run(_agent(served, work, streaming=True))
    assert events[0].HasField("task")
    updates = [e.status_update for e in events if e.HasField("status_update")]
    working = [u for u in updates if u.status.state == pb.TASK_STATE_WORKING]
    assert len(working) >= 5  # split, two shouts, two ends
    assert any(e.HasField("artifact_update") for e in events)
    assert updates[-1].status.state == pb.TASK_STATE_COMPLETED


def test_a_failed_job_is_a_failed_task(served: Served) -> None:
    async def work(client: Any) -> pb.Task:
        [reply] = await _send(client, _message(data={"text": "x", "fail": True}))
        return reply.task

    assert asyncio.run(_agent(served, work)).status.state == pb.TASK_STATE_FAILED


def test_a_paused_job_is_input_required_and_a_reply_resumes_it(reviewed: Served) -> None:
    async def work(client: Any) -> tuple[pb.Task, pb.Task]:
        [paused] = await _send(client, _message(data={"text": "look"}))
        [done] = await _send(client, _message(text="approve: fine by me",
                                              task_id=paused.task.id))
        return paused.task, done.task

    paused, done = asyncio.run(_agent(reviewed, work))
    assert paused.status.state == pb.TASK_STATE_INPUT_REQUIRED
    assert "waits for a person" in paused.status.message.parts[0].text
    assert done.id == paused.id and done.status.state == pb.TASK_STATE_COMPLETED
    [record] = [json_format.MessageToDict(p.data) for p in done.artifacts[0].parts]
    assert record["payload"]["review"]["notes"] == "fine by me"
    assert record["payload"]["review"]["reviewer"] == "a2a:tester"


def test_a2a_and_the_console_deciding_at_once_resume_the_job_once(reviewed: Served) -> None:
    # Given a task waiting for input
    async def start(client: Any) -> str:
        [paused] = await _send(client, _message(data={"text": "race"}))
        return paused.task.id

    job = asyncio.run(_agent(reviewed, start))
    assert waiting_items(reviewed.mesh, job)

    # When an A2A reply and a console click decide it at the same moment
    async def reply(client: Any) -> Any:
        try:
            return await _send(client, _message(data={"decision": "reject",
                                                      "notes": "no"}, task_id=job))
        except (A2AClientError, A2AError) as exc:
            return exc

    async def both() -> list[Any]:
        return await asyncio.gather(_agent(reviewed, reply),
                                    asyncio.to_thread(decide_in_console, reviewed.mesh,
                                                      job, "approve"))

    a2a, console = asyncio.run(both())
    # Then exactly one of them won, and the job ended the way the winner said, once
    a2a_won = not isinstance(a2a, Exception)
    console_won = any(r.won for r in console)
    assert a2a_won != console_won
    reviewed.wait_ended([job])
    [record] = reviewed.mesh.children(job)
    assert record.status == ("failed" if a2a_won else "succeeded")
    assert record.duplicates == 0


def test_cancel_rejects_a_waiting_task(reviewed: Served) -> None:
    async def cancel_paused(client: Any) -> pb.Task:
        [paused] = await _send(client, _message(data={"text": "stop"}))
        return await client.cancel_task(pb.CancelTaskRequest(id=paused.task.id))

    cancelled = asyncio.run(_agent(reviewed, cancel_paused))
    reviewed.wait_ended([cancelled.id])

    async def state(client: Any) -> pb.Task:
        return await client.get_task(pb.GetTaskRequest(id=cancelled.id))

    assert asyncio.run(_agent(reviewed, state)).status.state == pb.TASK_STATE_CANCELED


def test_cancel_refuses_work_already_done(served: Served) -> None:
    async def cancel_done(client: Any) -> None:
        [done] = await _send(client, _message(data={"text": "done"}))
        await client.cancel_task(pb.CancelTaskRequest(id=done.task.id))

    with pytest.raises((A2AClientError, A2AError), match="only a job that waits"):
        asyncio.run(_agent(served, cancel_done))


def test_the_a2a_0_3_method_names_work_too(served: Served) -> None:
    with served.client() as api:
        sent = api.post("/a2a", json={
            "jsonrpc": "2.0", "id": 1, "method": "message/send",
            "params": {"message": {"messageId": uuid.uuid4().hex, "role": "user",
                                   "kind": "message",
                                   "parts": [{"kind": "data", "data": {"text": "Old."}}]}}})
        task = sent.json()["result"]
        got = api.post("/a2a", json={"jsonrpc": "2.0", "id": 2, "method": "tasks/get",
                                     "params": {"id": task["id"]}}).json()["result"]
    assert task["status"]["state"] == "completed" and got["id"] == task["id"]

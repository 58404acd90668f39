"""The mesh as an Agent2Agent (A2A) agent: its card, and the task methods on jobs.

Another agent finds this one by its card (``/.well-known/agent-card.json``: the mesh's
name and description, one skill, the JSON-RPC endpoint ``/a2a``, bearer credentials)
and talks to it with the official SDK's JSON-RPC methods, A2A 1.0 names and 0.3 ones
alike (``SendMessage`` / ``message/send``, ``GetTask`` / ``tasks/get``, ``CancelTask`` /
``tasks/cancel``, ``SendStreamingMessage`` / ``message/stream``, ``SubscribeToTask``).
A task *is* a job: its id is the job's id, and its state is read from the mesh's
stores every time, so nothing lives in the gateway's memory:

| job | task state |
| --- | --- |
| queued, running | submitted, working |
| paused (a piece waits in review) | input-required |
| succeeded / failed (cancelled) | completed / failed (canceled) |

A message without a task id submits a job: its first data part is the payload (an
object), else its text becomes ``{"text": ...}``; the message id is the idempotency
key (``a2a:ID``, apart from the client's HTTP keys), so a resent message finds its
job. A message *on* an input-required task carries a decision (a data part
``{"decision": "approve" | "reject" | "send_back" | "edit", "notes": ...,
"payload": ...}``, or a text such as ``approve``, ``reject: too dark``,
``send back: brighter``), which decides the job's waiting pieces through the review
service: a compare-and-set, so whichever of the console and A2A decides first wins,
once. Cancel rejects the waiting pieces of an input-required task; work already on a
queue cannot be recalled, and a cancel of it is refused (``TaskNotCancelableError``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from a2a.server.context import ServerCallContext
from a2a.server.request_handlers import RequestHandler
from a2a.types import a2a_pb2 as pb
from a2a.utils.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    UnsupportedOperationError,
)
from google.protobuf import json_format, struct_pb2

from asya_agents.errors import GatewayError, JobConflict, JobNotFound, MessageTooLarge
from asya_agents.gateway.auth import ANONYMOUS
from asya_agents.gateway.follow import StreamEvent
from asya_agents.gateway.jobs import Job
from asya_agents.gateway.service import Gateway

__all__ = ["MeshAgent", "agent_card", "parse_decision", "task_of"]

_UNTIL = ("succeeded", "failed", "paused")
_STATES = {"queued": pb.TASK_STATE_SUBMITTED, "running": pb.TASK_STATE_WORKING,
           "paused": pb.TASK_STATE_INPUT_REQUIRED, "succeeded": pb.TASK_STATE_COMPLETED,
           "failed": pb.TASK_STATE_FAILED}
_WORDS = {"approve": "approve", "approved": "approve", "yes": "approve", "ok": "approve",
          "reject": "reject", "rejected": "reject", "no": "reject",
          "send_back": "send_back", "sendback": "send_back", "edit": "edit"}


def _value(data: Any) -> struct_pb2.Value:
    return json_format.ParseDict(data, struct_pb2.Value())


def _agent_message(task_id: str, text: str, data: Any = None) -> pb.Message:
    parts = [pb.Part(text=text)]
    if data is not None:
        parts.append(pb.Part(data=_value(data)))
    return pb.Message(message_id=uuid.uuid4().hex, task_id=task_id, context_id=task_id,
                      role=pb.ROLE_AGENT, parts=parts)


def _status(job: Job, text: str | None = None) -> pb.TaskStatus:
    state = pb.TASK_STATE_CANCELED if job.cancelled and job.status == "failed" \
        else _STATES[job.status]
    if text is None and job.status == "paused":
        text = ("waits for a person: reply on this task with approve, reject or "
                "send back (with notes), or decide it in the review console")
    status = pb.TaskStatus(state=state, message=_agent_message(job.id, text or job.status))
    status.timestamp.FromSeconds(int(time.time()))
    return status


def _artifact(job: Job) -> pb.Artifact:
    return pb.Artifact(artifact_id=f"{job.id}-results", name="results",
                       description="the ended pieces, as `asya results --json` prints them",
                       parts=[pb.Part(data=_value(r.to_json())) for r in job.results])


def task_of(job: Job, text: str | None = None) -> pb.Task:
    """The A2A task of ``job`` (module docstring)."""
    task = pb.Task(id=job.id, context_id=job.id, status=_status(job, text))
    if job.results:
        task.artifacts.append(_artifact(job))
    return task


def parse_decision(message: pb.Message) -> dict[str, Any]:
    """The decision a message on an input-required task carries (module docstring);
    ``InvalidParamsError`` saying what is accepted otherwise."""
    for part in message.parts:
        if part.HasField("data"):
            data = json_format.MessageToDict(part.data)
            if isinstance(data, dict) and data.get("decision") in _WORDS.values():
                return {k: data.get(k) for k in ("decision", "notes", "payload", "piece")}
    text = " ".join(p.text for p in message.parts if p.text).strip()
    head, _, notes = text.replace(":", " :", 1).partition(":")
    words = head.lower().replace("-", " ").split()
    key = "_".join(words[:2]) if words[:2] == ["send", "back"] else (words[0] if words else "")
    if key in _WORDS:
        return {"decision": _WORDS[key], "notes": notes.strip() or None, "payload": None,
                "piece": None}
    raise InvalidParamsError(message="the task waits for a decision: send a data part "
                             "{\"decision\": \"approve\"|\"reject\"|\"send_back\"|\"edit\", "
                             "\"notes\": ...} or a text such as 'approve' or "
                             "'reject: too dark'")


def _payload(message: pb.Message) -> dict[str, Any]:
    for part in message.parts:
        if part.HasField("data"):
            data = json_format.MessageToDict(part.data)
            if not isinstance(data, dict):
                raise InvalidParamsError(message="a data part is the job's payload: an object")
            return data
    text = " ".join(p.text for p in message.parts if p.text)
    if not text:
        raise InvalidParamsError(message="the message has no data part and no text")
    return {"text": text}


def _key(message: pb.Message) -> str | None:
    """The idempotency key of a message: its id, in a namespace of its own, so that
    an A2A message id never meets an HTTP ``Idempotency-Key`` of the same client."""
    return f"a2a:{message.message_id}" if message.message_id else None


def _client(context: ServerCallContext) -> str:
    user = context.user
    return user.user_name if user.is_authenticated else ANONYMOUS


class MeshAgent(RequestHandler):
    """The A2A request handler of ``gateway`` (module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def _job(self, job_id: str) -> Job:
        try:
            return await self.gateway.jobs.get(job_id)
        except JobNotFound as exc:
            raise InvalidParamsError(message=str(exc)) from exc

    async def _start(self, params: pb.SendMessageRequest,
                     context: ServerCallContext) -> tuple[str, int]:
        """Submit or decide what ``params`` says; the job and the seq to follow after."""
        message, client = params.message, _client(context)
        if message.task_id:
            await self._job(message.task_id)
            after = max((e.seq for e in await self.gateway.jobs.events_of(message.task_id)),
                        default=0)
            decision = parse_decision(message)
            try:
                await self.gateway.jobs.decide(message.task_id, reviewer=f"a2a:{client}",
                                               **decision)
            except JobConflict as exc:
                raise InvalidParamsError(message=str(exc)) from exc
            return message.task_id, after
        route = None
        if message.HasField("metadata") and "route" in message.metadata.fields:
            route = json_format.MessageToDict(message.metadata)["route"]
        try:
            done = await self.gateway.jobs.submit(_payload(message), route=route,
                                                  client=client, key=_key(message))
        except (GatewayError, MessageTooLarge, ValueError) as exc:
            raise InvalidParamsError(message=str(exc)) from exc
        if self.gateway.metrics is not None and not done.repeat:
            self.gateway.metrics.job(client, "a2a")
        return done.id, 0

    async def on_message_send(self, params: pb.SendMessageRequest,
                              context: ServerCallContext) -> pb.Task | pb.Message:
        job_id, after = await self._start(params, context)
        if not params.configuration.return_immediately:
            async for _ in self.gateway.follow(job_id, after=after, until=_UNTIL):
                pass
        return task_of(await self.gateway.jobs.get(job_id))

    async def on_message_send_stream(self, params: pb.SendMessageRequest,
                                     context: ServerCallContext
                                     ) -> AsyncGenerator[Any]:
        job_id, after = await self._start(params, context)
        async for event in self._stream(job_id, after):
            yield event

    async def on_subscribe_to_task(self, params: pb.SubscribeToTaskRequest,
                                   context: ServerCallContext) -> AsyncGenerator[Any]:
        await self._job(params.id)
        async for event in self._stream(params.id, 0):
            yield event

    async def _stream(self, job_id: str, after: int) -> AsyncGenerator[Any]:
        yield task_of(await self.gateway.jobs.get(job_id))
        async for event in self.gateway.follow(job_id, after=after, until=_UNTIL):
            update = await self._update(job_id, event)
            if update is not None:
                yield update
            if event.event == "end":
                job = await self.gateway.jobs.get(job_id)
                if job.results:
                    yield pb.TaskArtifactUpdateEvent(task_id=job_id, context_id=job_id,
                                                     artifact=_artifact(job),
                                                     last_chunk=True)
                yield pb.TaskStatusUpdateEvent(task_id=job_id, context_id=job_id,
                                               status=_status(job))

    async def _update(self, job_id: str, event: StreamEvent) -> Any:
        if event.event in ("hop", "piece"):
            text = f"{event.data.get('actor')}: {event.data.get('kind')}"
            status = pb.TaskStatus(state=pb.TASK_STATE_WORKING,
                                   message=_agent_message(job_id, text, event.data))
            return pb.TaskStatusUpdateEvent(task_id=job_id, context_id=job_id,
                                            status=status)
        if event.event == "shutdown":
            job = await self.gateway.jobs.get(job_id)
            return pb.TaskStatusUpdateEvent(task_id=job_id, context_id=job_id, status=_status(
                job, "the gateway is stopping: subscribe to the task again"))
        return None

    async def on_get_task(self, params: pb.GetTaskRequest,
                          context: ServerCallContext) -> pb.Task | None:
        try:
            return task_of(await self.gateway.jobs.get(params.id))
        except JobNotFound:
            return None

    async def on_cancel_task(self, params: pb.CancelTaskRequest,
                             context: ServerCallContext) -> pb.Task | None:
        try:
            job = await self.gateway.jobs.cancel(params.id, client=_client(context))
        except JobNotFound:
            return None
        except JobConflict as exc:
            raise TaskNotCancelableError(message=str(exc)) from exc
        return task_of(job)

    # -- what this agent does not offer ----------------------------------------------------

    async def on_list_tasks(self, params: pb.ListTasksRequest,
                            context: ServerCallContext) -> pb.ListTasksResponse:
        raise UnsupportedOperationError(message="listing tasks: read GET /v1/jobs/{id}")

    async def on_create_task_push_notification_config(
            self, params: pb.TaskPushNotificationConfig,
            context: ServerCallContext) -> pb.TaskPushNotificationConfig:
        raise UnsupportedOperationError(message="push notifications: stream the task")

    async def on_get_task_push_notification_config(
            self, params: pb.GetTaskPushNotificationConfigRequest,
            context: ServerCallContext) -> pb.TaskPushNotificationConfig:
        raise UnsupportedOperationError(message="push notifications: stream the task")

    async def on_list_task_push_notification_configs(
            self, params: pb.ListTaskPushNotificationConfigsRequest,
            context: ServerCallContext) -> pb.ListTaskPushNotificationConfigsResponse:
        raise UnsupportedOperationError(message="push notifications: stream the task")

    async def on_delete_task_push_notification_config(
            self, params: pb.DeleteTaskPushNotificationConfigRequest,
            context: ServerCallContext) -> None:
        raise UnsupportedOperationError(message="push notifications: stream the task")

    async def on_get_extended_agent_card(self, params: pb.GetExtendedAgentCardRequest,
                                         context: ServerCallContext) -> pb.AgentCard:
        raise UnsupportedOperationError(message="no extended card: read the public one")


def agent_card(gateway: Gateway, base_url: str) -> pb.AgentCard:
    """The card of ``gateway``'s mesh, reached at ``base_url``."""
    modes = ["application/json", "text/plain"]
    card = pb.AgentCard(
        name=gateway.name, description=gateway.description, version="1.0",
        supported_interfaces=[pb.AgentInterface(url=base_url.rstrip("/") + "/a2a",
                                                protocol_binding="JSONRPC",
                                                protocol_version="1.0")],
        capabilities=pb.AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=modes, default_output_modes=["application/json"],
        skills=[pb.AgentSkill(id=gateway.name, name=gateway.name,
                              description=gateway.description, tags=["asya", "mesh"],
                              input_modes=modes, output_modes=["application/json"])])
    if gateway.keys is not None:
        card.security_schemes["bearer"].CopyFrom(pb.SecurityScheme(
            http_auth_security_scheme=pb.HTTPAuthSecurityScheme(scheme="bearer")))
        card.security_requirements.append(pb.SecurityRequirement(
            schemes={"bearer": pb.StringList()}))
    return card

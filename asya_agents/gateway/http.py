"""The gateway's HTTP API: jobs, their status and results, their live events.

- ``POST /v1/jobs``: submit ``{"payload": {...}, "route": [...]}`` (``201``); an
  ``Idempotency-Key`` makes a repeat return the same job (``200``);
- ``GET /v1/jobs/{id}``: ``{"id", "status", "results"}`` for the whole root;
- ``GET /v1/jobs/{id}/events``: Server-Sent Events, resumed after ``Last-Event-ID``;
- ``POST /v1/jobs/{id}/cancel``: cancel a job that waits for a person;
- ``GET /healthz``, ``GET /metrics``: liveness and Prometheus metrics, no credentials.

Every error is JSON naming the field (:func:`~asya_agents.gateway.auth.error_body`):
``422`` for an invalid body, route or header, ``413`` past the envelope size limit,
``404`` for an unknown job, ``409`` for a reused Idempotency-Key or a job that cannot
be cancelled, ``401`` (from :mod:`.auth`) without a valid key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse, ServerSentEvent

from asya_agents.errors import (
    JobConflict,
    JobNotFound,
    MessageTooLarge,
    TransportError,
    UnknownActorError,
)
from asya_agents.gateway.auth import client_of, error_body
from asya_agents.gateway.jobs import STATUSES
from asya_agents.gateway.service import Gateway

__all__ = ["JobCreated", "JobRequest", "JobView", "cancel_job", "get_job", "healthz",
           "install_errors", "job_events", "metrics", "router", "submit"]

router = APIRouter()


class JobRequest(BaseModel):
    """A job to run: ``payload`` for the first actor, ``route`` to override mesh.yaml's."""

    model_config = ConfigDict(extra="forbid")

    payload: dict[str, Any] = Field(description="the payload of the root envelope")
    route: list[str] | None = Field(default=None, min_length=1,
                                    description="actors to visit [mesh.yaml's route]")


class JobCreated(BaseModel):
    id: str = Field(description="the job's id: the root envelope's id")
    status: str = Field(description=" | ".join(STATUSES))


class JobView(BaseModel):
    id: str
    status: str = Field(description=" | ".join(STATUSES))
    results: list[dict[str, Any]] = Field(
        description="the ended pieces, as `asya results --json` prints them")


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post("/v1/jobs", status_code=201, response_model=JobCreated,
             responses={200: {"model": JobCreated, "description": "a repeat"}})
async def submit(body: JobRequest, request: Request,
                 idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
                 ) -> Any:
    """Submit a job; an ``Idempotency-Key`` makes a repeat return the same job."""
    gateway, client = _gateway(request), client_of(request.scope)
    done = await gateway.jobs.submit(body.payload, route=body.route, client=client,
                                     key=idempotency_key)
    if gateway.metrics is not None and not done.repeat:
        gateway.metrics.job(client, "http")
    return JSONResponse({"id": done.id, "status": done.status},
                        status_code=200 if done.repeat else 201)


@router.get("/v1/jobs/{job_id}", response_model=JobView)
async def get_job(job_id: str, request: Request) -> Any:
    """The job's status for the whole root, and its ended records."""
    return (await _gateway(request).jobs.get(job_id)).to_json()


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(job_id: str, request: Request) -> Any:
    """Cancel a job that waits for a person (its waiting pieces are rejected)."""
    gateway = _gateway(request)
    return (await gateway.jobs.cancel(job_id, client=client_of(request.scope))).to_json()


@router.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def job_events(job_id: str, request: Request,
                     last_event_id: Annotated[str | None, Header()] = None) -> Any:
    """Server-Sent Events: ``hop``, ``piece`` and ``status`` events, then ``end``."""
    after = _last_event_id(last_event_id)
    gateway = _gateway(request)
    await gateway.jobs.get(job_id)  # a 404 before the stream starts
    return EventSourceResponse(_sse(gateway, job_id, after), ping=15)


async def _sse(gateway: Gateway, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
    async for event in gateway.follow(job_id, after=after):
        yield ServerSentEvent(data=json.dumps(event.data), event=event.event,
                              id=None if event.id is None else str(event.id))


def _last_event_id(value: str | None) -> int:
    if value is None or value == "":
        return 0
    if not value.isdigit():
        raise RequestValidationError([{"loc": ("header", "Last-Event-ID"),
                                       "msg": f"not an event id: {value!r}",
                                       "type": "value_error"}])
    return int(value)


@router.get("/healthz")
async def healthz(request: Request) -> dict[str, str]:
    """Liveness: the gateway answers (no credentials)."""
    gateway = _gateway(request)
    return {"status": "stopping" if gateway.stopping.is_set() else "ok",
            "mesh": gateway.name}


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics of the gateway (no credentials)."""
    gateway = _gateway(request)
    if gateway.metrics is None:
        return JSONResponse(error_body(404, "metrics need prometheus-client: pip install "
                                            "'asya-agents[metrics]'"), status_code=404)
    body, content_type = gateway.metrics.render()
    return Response(body, media_type=content_type)


# -- errors ---------------------------------------------------------------------------------


def _field(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "header", "path", "query"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def install_errors(app: FastAPI) -> None:
    """Every error as JSON naming the field."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _field(first.get("loc", ()))
        message = f"{field}: {first.get('msg', 'invalid')}" + (
            f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        return JSONResponse(error_body(422, message, field), status_code=422)

    for kind, status, field in ((UnknownActorError, 422, "route"),
                                (MessageTooLarge, 413, "payload"),
                                (JobNotFound, 404, "id"), (JobConflict, 409, None),
                                (TransportError, 503, None)):
        app.add_exception_handler(kind, _handler(status, field))


def _handler(status: int, field: str | None) -> Any:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        named = field
        if isinstance(exc, JobConflict) and "Idempotency-Key" in str(exc):
            named = "Idempotency-Key"
        return JSONResponse(error_body(status, str(exc), named), status_code=status)

    return handle

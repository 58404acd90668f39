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
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from asya_agents.errors import (
    JobConflict,
    JobNotFound,
    MessageTooLarge,
    TransportError,
    UnknownActorError,
)
from asya_agents.gateway.auth import client_of, error_body, send_json
from asya_agents.gateway.jobs import STATUSES
from asya_agents.gateway.service import Gateway

__all__ = ["ERRORS", "ERROR_KINDS", "MAX_KEY", "ErrorAnswer", "ErrorBody", "JobCreated",
           "JobRequest", "JobView", "SubmitFast", "cancel_job", "error_answer", "get_job",
           "healthz", "install_errors", "invalid_body", "job_events", "metrics", "router",
           "submit", "submit_job"]

router = APIRouter()
#: The longest ``Idempotency-Key`` taken.
MAX_KEY = 200


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


class ErrorBody(BaseModel):
    """What every error answers: its status, the field it names (if any), a message."""

    status: int
    field: str | None = Field(description="the body field or header at fault")
    message: str


class ErrorAnswer(BaseModel):
    error: ErrorBody


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The error answers of a route, for the OpenAPI document (``422`` in place of
    FastAPI's own shape, which the gateway never answers)."""
    return {code: {"model": ErrorAnswer} for code in sorted({401, 422, *codes})}


def _gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


def _job_request(raw: bytes) -> JobRequest:
    """The body as JSON whatever its Content-Type says (``curl -d`` says a form)."""
    try:
        return JobRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from exc


async def submit_job(gateway: Gateway, raw: bytes, *, client: str,
                     key: str | None) -> tuple[int, dict[str, Any]]:
    """Submit the job of body ``raw``: ``(201 or 200 for a repeat, {"id", "status"})``;
    the errors of :data:`ERRORS` (and :class:`RequestValidationError`) otherwise."""
    if key is not None and len(key) > MAX_KEY:
        raise RequestValidationError([{"loc": ("header", "Idempotency-Key"),
                                       "msg": f"at most {MAX_KEY} characters"}])
    body = _job_request(raw)
    done = await gateway.jobs.submit(body.payload, route=body.route, client=client,
                                     key=key)
    if gateway.metrics is not None and not done.repeat:
        gateway.metrics.job(client, "http")
    return 200 if done.repeat else 201, {"id": done.id, "status": done.status}


_BODY = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": JobRequest.model_json_schema()}}}}


@router.post("/v1/jobs", status_code=201, response_model=JobCreated, openapi_extra=_BODY,
             responses={200: {"model": JobCreated, "description": "a repeat"},
                        **_errors(409, 413, 422, 503)})
async def submit(request: Request,
                 idempotency_key: Annotated[str | None, Header(
                     alias="Idempotency-Key", max_length=MAX_KEY,
                     description="a repeat with the same key returns the same job")] = None,
                 ) -> Any:
    """Submit a job; an ``Idempotency-Key`` makes a repeat return the same job. (Served
    by :class:`SubmitFast` in front of the app; this route declares it, and serves it
    in an app without that path.)"""
    status, body = await submit_job(_gateway(request), await request.body(),
                                    client=client_of(request.scope), key=idempotency_key)
    return JSONResponse(body, status_code=status)


class SubmitFast:
    """``POST /v1/jobs``, the one request a busy client sends by the thousand, served
    before the framework's routing, dependency solving and telemetry (which cost twice
    what the submission itself does); every other request goes on to the app. Same
    core (:func:`submit_job`), same answers and errors as the route."""

    def __init__(self, app: ASGIApp, *, gateway: Gateway, route: Any) -> None:
        self.app, self.gateway, self.route = app, gateway, route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or \
                scope["path"] != "/v1/jobs":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # what the request metrics are labelled by
        raw = await _read_body(receive)
        key = Headers(scope=scope).get("idempotency-key")
        try:
            status, body = await submit_job(self.gateway, raw, client=client_of(scope),
                                            key=key)
        except RequestValidationError as exc:
            status, body = 422, invalid_body(exc)
        except ERROR_KINDS as exc:
            status, body = error_answer(exc)
        await send_json(send, status, body)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


@router.get("/v1/jobs/{job_id}", response_model=JobView, responses=_errors(404))
async def get_job(job_id: str, request: Request) -> Any:
    """The job's status for the whole root, and its ended records."""
    return (await _gateway(request).jobs.get(job_id)).to_json()


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobView,
             responses=_errors(404, 409))
async def cancel_job(job_id: str, request: Request) -> Any:
    """Cancel a job that waits for a person (its waiting pieces are rejected)."""
    gateway = _gateway(request)
    return (await gateway.jobs.cancel(job_id, client=client_of(request.scope))).to_json()


@router.get("/v1/jobs/{job_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}}, **_errors(404, 422)})
async def job_events(job_id: str, request: Request,
                     last_event_id: Annotated[str | None, Header(
                         alias="Last-Event-ID",
                         description="resume after this event's id")] = None) -> Any:
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


@router.get("/healthz", responses={503: {"description": "the gateway is stopping"}})
async def healthz(request: Request) -> JSONResponse:
    """Liveness and readiness (no credentials): ``503`` once the gateway is stopping, so
    that a load balancer sends new clients elsewhere while open streams finish."""
    gateway = _gateway(request)
    stopping = gateway.stopping.is_set()
    return JSONResponse({"status": "stopping" if stopping else "ok", "mesh": gateway.name},
                        status_code=503 if stopping else 200)


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


#: What each error of the core answers, and the field it names.
ERRORS: tuple[tuple[type[Exception], int, str | None], ...] = (
    (UnknownActorError, 422, "route"), (MessageTooLarge, 413, "payload"),
    (JobNotFound, 404, "id"), (JobConflict, 409, None), (TransportError, 503, None))
ERROR_KINDS = tuple(kind for kind, _, _ in ERRORS)


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and JSON of ``exc``, one of :data:`ERRORS`."""
    status, field = next((s, f) for k, s, f in ERRORS if isinstance(exc, k))
    if isinstance(exc, JobConflict) and "Idempotency-Key" in str(exc):
        field = "Idempotency-Key"
    return status, error_body(status, str(exc), field)


def invalid_body(exc: RequestValidationError) -> dict[str, Any]:
    """The ``422`` JSON of a validation error: its first field, and how many more."""
    errors = list(exc.errors())
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _field(first.get("loc", ()))
    message = f"{field}: {first.get('msg', 'invalid')}" + (
        f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
    return error_body(422, message, field)


def install_errors(app: FastAPI) -> None:
    """Every error as JSON naming the field."""

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(invalid_body(exc), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # unknown paths and methods: the same JSON as every other error
        return JSONResponse(error_body(exc.status_code, str(exc.detail)),
                            status_code=exc.status_code, headers=exc.headers)

    async def known(_: Request, exc: Exception) -> JSONResponse:
        status, body = error_answer(exc)
        return JSONResponse(body, status_code=status)

    for kind in ERROR_KINDS:
        app.add_exception_handler(kind, known)

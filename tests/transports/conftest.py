"""Fixtures for the transport conformance suite: one harness per backend.

The same tests run on ``embedded`` (a SQLite file, with an injected clock), ``rabbitmq``
(the broker on 127.0.0.1:5672) and ``sqs`` (a moto server this session starts on a free
port of 127.0.0.1 and stops at the end). Broker queues get a prefix unique to this test
run and a mesh name unique to the test, and are deleted after it.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asya_agents.transports.base import Transport
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import FakeClock, require_service

RUN_PREFIX = f"t{uuid.uuid4().hex[:8]}"
RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"


@dataclass
class Harness:
    """A backend under test: how to open another consumer on the same queues, how to
    let time pass, and what the backend can report."""

    kind: str
    open: Callable[..., Awaitable[Any]]
    clock: FakeClock | None = None
    opened: list[Any] = field(default_factory=list)
    #: Seconds a test may wait for a message that is due now (network, long poll).
    patience: float = 5.0
    #: Whether a leased message is never handed to a second consumer at once. SQS
    #: standard queues promise at-least-once only ("occasionally more than one copy of
    #: a message is delivered", AWS's SQS developer guide), and moto's ReceiveMessage
    #: shows the same under concurrent receives; happy-end's dedup is what absorbs it.
    exclusive_leases: bool = True

    async def transport(self, **options: Any) -> Any:
        t = await self.open(**options)
        self.opened.append(t)
        return t

    async def pass_time(self, seconds: float) -> None:
        """On the embedded transport move its clock; brokers have their own, so the
        test's next receive waits for them instead (with ``patience``)."""
        if self.clock is not None:
            self.clock.now += seconds


def _sqs_opener(url: str, mesh: str) -> Callable[..., Awaitable[Any]]:
    async def open_(**options: Any) -> Any:
        from asya_agents.transports.sqs import SQSTransport

        return SQSTransport(mesh=mesh, prefix=RUN_PREFIX, endpoint_url=url, region="us-east-1",
                            access_key_id="test", secret_access_key="test", **options)

    return open_


def _rabbit_opener(mesh: str, *, frame_reader: bool) -> Callable[..., Awaitable[Any]]:
    async def open_(**options: Any) -> Any:
        from asya_agents.transports.rabbitmq import RabbitMQTransport

        return RabbitMQTransport(RABBIT_URL, mesh=mesh, prefix=RUN_PREFIX,
                                 management_url=None, frame_reader=frame_reader, **options)

    return open_


def _embedded_opener(path: Path, clock: FakeClock) -> Callable[..., Awaitable[Any]]:
    async def open_(**options: Any) -> Any:
        return EmbeddedTransport(path, clock=clock, **options)

    return open_


QUEUES = ["work", "other", "error-end"]


@pytest.fixture(params=["embedded", "rabbitmq", "rabbitmq-aiormq", "sqs"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """``rabbitmq`` runs the transport as on ``amqp://`` (hot frames in its own
    FrameReader), ``rabbitmq-aiormq`` with every frame left to aiormq (``amqps://``)."""
    kind: str = request.param.split("-")[0]
    mesh = f"m{uuid.uuid4().hex[:8]}"
    if kind == "embedded":
        clock = FakeClock()
        h = Harness(kind, _embedded_opener(tmp_path / "queues.db", clock), clock=clock)
    elif kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
        h = Harness(kind, _rabbit_opener(mesh, frame_reader=request.param == "rabbitmq"))
    else:
        h = Harness(kind, _sqs_opener(request.getfixturevalue("moto_url"), mesh),
                    exclusive_leases=False)
    admin: Transport = await h.open()
    await admin.ensure_queues(QUEUES)
    try:
        yield h
    finally:
        try:
            for t in h.opened:
                await t.close()
        finally:
            try:
                if kind != "embedded":
                    await admin.delete_queues(QUEUES)  # type: ignore[attr-defined]
            finally:
                await admin.close()


@contextlib.asynccontextmanager
async def rabbit_work_queue(mesh_prefix: str, **options: Any) -> AsyncIterator[Any]:
    """A RabbitMQ transport on a fresh mesh with one queue, ``work``, deleted after."""
    require_service("RabbitMQ", port=5672)
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    t = RabbitMQTransport(RABBIT_URL, mesh=f"{mesh_prefix}{uuid.uuid4().hex[:8]}",
                          prefix=RUN_PREFIX, management_url=None, **options)
    await t.ensure_queues(["work"])
    try:
        yield t
    finally:
        await t.delete_queues(["work"])
        await t.close()

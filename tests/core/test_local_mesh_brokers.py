"""The test helper runs the same user test on every transport: the embedded one, and a
real RabbitMQ and SQS (moto server), as a user's own test would with one argument."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asya_agents.errors import TransportError
from asya_agents.settings import Settings, SQSSettings
from asya_agents.testing import LocalMesh
from tests.conftest import require_service


def _settings(kind: str, request: pytest.FixtureRequest) -> Settings:
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
        return Settings()
    if kind == "sqs":
        url = request.getfixturevalue("moto_url")
        return Settings(sqs=SQSSettings(endpoint_url=url, region="us-east-1",
                                        access_key_id="test", secret_access_key="test"))
    return Settings()


@pytest.mark.parametrize("kind", ["embedded", "rabbitmq", "sqs"])
def test_the_readme_test_passes_on_every_transport(
        kind: str, example_mesh: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    # Given the example mesh run by the helper on this transport
    with LocalMesh(example_mesh, transport=kind, state_dir=tmp_path,
                   settings=_settings(kind, request)) as mesh:
        # When a question and a statement are sent
        question = mesh.send({"text": "Is it on?"})
        both = mesh.send({"text": "Hi there. Why?"})
        mesh.join(timeout=60)
        status = mesh.status()
        [piece] = mesh.children(question)
        pieces = mesh.children(both)
    # Then the question took the extra hop and the fan-out ended in two pieces
    assert piece.payload["answer"] == "42"
    assert piece.route["prev"] == ["split", "triage", "answer", "format"]
    assert sorted(p.id for p in pieces) == [f"{both}.0", f"{both}.1"]
    assert status["transport"] == kind and status["totals"]["succeeded"] == 3


def test_a_broker_mesh_gets_queues_of_its_own_and_removes_them(
        example_mesh: Path, tmp_path: Path) -> None:
    # Given two helpers on the same RabbitMQ at once
    require_service("RabbitMQ", port=5672)
    with LocalMesh(example_mesh, transport="rabbitmq", state_dir=tmp_path / "a") as one, \
            LocalMesh(example_mesh, transport="rabbitmq", state_dir=tmp_path / "b") as two:
        # When each is sent one envelope
        first = one.send({"text": "One."})
        second = two.send({"text": "Two."})
        one.join(timeout=30)
        two.join(timeout=30)
        # Then each mesh saw only its own
        assert [r.root_id for r in one.results()] == [first]
        assert [r.root_id for r in two.results()] == [second]
        prefix = one.ctx.settings.rabbitmq.queue_prefix
        assert prefix != two.ctx.settings.rabbitmq.queue_prefix
    # and once it stopped, its queues are gone from the broker
    assert asyncio.run(_queue_exists(prefix, "split")) is False


async def _queue_exists(prefix: str, actor: str) -> bool:
    from asya_agents.transports.rabbitmq import RabbitMQTransport

    transport = RabbitMQTransport("amqp://guest:guest@127.0.0.1:5672/", mesh="example",
                                  prefix=prefix, management_url=None)
    try:
        await transport.stats(actor)
    except TransportError:
        return False
    finally:
        await transport.close()
    return True

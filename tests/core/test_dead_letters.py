"""What a broker dead-lettered is in the result store, and can be replayed.

A broker's own delivery counter (RabbitMQ's quorum ``x-delivery-limit``, SQS's redrive
``maxReceiveCount``) stays a backstop above the actors' ``maxDeliveries``. Whatever
still lands in an actor's dead-letter queue (here: put there directly, as the broker
would) is swept by error-end into the result store as failed with reason
``delivery-limit`` (poison when it is not an envelope), so that ``asya results`` lists
it, and ``replay_failed`` (``asya replay``) sends it back to its actor.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from asya_agents.crew import replay_failed
from asya_agents.envelope import Envelope
from asya_agents.settings import MeshSettings, Settings, SQSSettings
from asya_agents.testing import LocalMesh
from tests.conftest import require_service

pytestmark = pytest.mark.timeout(90)

POISON = Path(__file__).parent / "meshes" / "poison"


def _settings(kind: str, request: pytest.FixtureRequest) -> Settings:
    sweep = MeshSettings(dlq_sweep_interval=0.2)
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
        return Settings(mesh=sweep)
    url = request.getfixturevalue("moto_url")
    return Settings(mesh=sweep, sqs=SQSSettings(endpoint_url=url, region="us-east-1",
                                                access_key_id="test",
                                                secret_access_key="test"))


@pytest.mark.parametrize("kind", ["rabbitmq", "sqs"])
def test_a_dead_lettered_envelope_is_failed_in_the_store_and_replays(
        kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with LocalMesh(POISON, transport=kind, state_dir=tmp_path,
                   settings=_settings(kind, request)) as mesh:
        # Given an envelope and a non-envelope in the dead-letter queue of `check`
        envelope = Envelope.create({"do": "ok"}, ["check", "finish"])
        mesh.send_raw("check-dlq", envelope.encode())
        mesh.send_raw("check-dlq", b"\xff not an envelope")
        # When error-end has swept it
        mesh.join([envelope.id], timeout=30,
                  settle=lambda: mesh.store.totals().failed == 2)
        failed = mesh.result(envelope.id)
        [poison] = [r for r in mesh.results("failed") if r.id != envelope.id]
        # Then both are failed records: the envelope with reason delivery-limit, where
        # it was; the other as poison
        assert failed.status == "failed" and failed.error is not None
        assert failed.error["reason"] == "delivery-limit"
        assert failed.error["actor"] == "check" and failed.route["curr"] == "check"
        assert "'check-dlq'" in failed.error["message"]
        assert poison.error is not None and poison.error["reason"] == "invalid-envelope"
        # When it is replayed, Then it runs its route to the end
        async def replay() -> Envelope:
            async with mesh.ctx.connected() as transport:
                return await replay_failed(mesh.store, transport, envelope.id)

        assert asyncio.run(replay()).route.curr == "check"
        mesh.join([envelope.id], timeout=30)
        done = mesh.result(envelope.id)
        assert done.status == "succeeded" and done.payload == {"do": "ok", "finished": True}
        assert mesh.queue_stats("check-dlq").total == 0

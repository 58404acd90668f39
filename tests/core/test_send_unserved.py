"""`asya send` to a mesh that nothing runs: the envelopes are kept, a warning says so and
how to start one, and `--wait` does not wait for an end that cannot come."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from asya_agents.cli import main
from asya_agents.context import MeshContext
from asya_agents.settings import RabbitMQSettings, Settings
from asya_agents.status import write_supervisor
from asya_agents.testing import LocalMesh
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mesh_copy(tmp_path: Path) -> Path:
    target = tmp_path / "example"
    shutil.copytree(ROOT / "mesh" / "example", target, ignore=shutil.ignore_patterns(".asya"))
    return target


def send(mesh: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["send", str(mesh), "--payload", '{"text": "Hi."}', *args],
                              env=env)


def depth(state: Path, queue: str) -> int:
    async def read() -> int:
        transport = EmbeddedTransport(state / "queues.db")
        try:
            return (await transport.stats(queue)).depth
        finally:
            await transport.close()

    return asyncio.run(read())


def test_sending_to_a_mesh_nothing_runs_keeps_the_envelopes_and_says_how_to_start_it(
        mesh_copy: Path) -> None:
    # Given the example mesh with no `asya up` running
    # When two envelopes are sent
    result = send(mesh_copy, "--count", "2")
    # Then they are sent and kept, and a warning says nothing runs and how to start it
    assert result.exit_code == 0
    assert "sent 2 envelope(s) to split" in result.stdout
    assert result.stderr.strip() == (
        f"warning: no supervisor is running for mesh example (state: {mesh_copy / '.asya'}): "
        f"the 2 envelope(s) wait in the queue; start one with: asya up {mesh_copy}")
    assert depth(mesh_copy / ".asya", "split") == 2


def test_wait_without_a_timeout_does_not_wait_for_an_end_that_cannot_come(
        mesh_copy: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    started = time.monotonic()
    result = send(mesh_copy, "--wait", "--state-dir", str(state))
    assert result.exit_code == 4
    assert time.monotonic() - started < 10
    assert f"start one with: asya up {mesh_copy} --state-dir {state}" in result.stderr
    assert "not waiting: nothing would end them" in result.stderr
    assert depth(state, "split") == 1


def test_wait_with_a_timeout_waits_as_asked_after_the_warning(mesh_copy: Path) -> None:
    result = send(mesh_copy, "--wait", "--timeout", "0.3")
    assert result.exit_code == 3
    assert "no supervisor is running" in result.stderr
    assert "timed out: 1 envelope(s) still running" in result.stderr


def test_no_warning_while_a_supervisor_runs_the_mesh(mesh_copy: Path) -> None:
    # Given a fresh status.json, as a running `asya up` rewrites it every turn
    write_supervisor(mesh_copy / ".asya", {"mesh": "example", "updated": time.time(),
                                           "actors": {}})
    result = send(mesh_copy)
    assert result.exit_code == 0 and result.stderr == ""


async def _delete_queues(mesh: Path, prefix: str) -> None:
    settings = Settings(rabbitmq=RabbitMQSettings(queue_prefix=prefix))
    ctx = MeshContext.open(mesh, transport="rabbitmq", settings=settings)
    async with ctx.connected() as transport:
        await transport.delete_queues(ctx.actors)


def _rabbit_env(tmp_path: Path, prefix: str) -> dict[str, str]:
    return {"ASYA_RABBITMQ_QUEUE_PREFIX": prefix, "ASYA_STATE_DIR": str(tmp_path / "state")}


@pytest.mark.timeout(60)
def test_on_rabbitmq_a_queue_nobody_consumes_is_named(mesh_copy: Path, tmp_path: Path) -> None:
    require_service("RabbitMQ", port=5672)
    prefix = f"asya-test-{uuid.uuid4().hex[:8]}"
    try:
        result = send(mesh_copy, "--transport", "rabbitmq", env=_rabbit_env(tmp_path, prefix))
    finally:
        asyncio.run(_delete_queues(mesh_copy, prefix))
    assert result.exit_code == 0, result.output
    assert "and nothing consumes queue split on rabbitmq" in result.stderr
    assert f"start one with: asya up {mesh_copy} --transport rabbitmq" in result.stderr


@pytest.mark.timeout(60)
def test_on_rabbitmq_consumers_elsewhere_count_as_running(mesh_copy: Path,
                                                           tmp_path: Path) -> None:
    require_service("RabbitMQ", port=5672)
    # Given the mesh running on RabbitMQ somewhere else (no local supervisor file)
    with LocalMesh(mesh_copy, transport="rabbitmq", state_dir=tmp_path / "elsewhere",
                   settings=Settings()) as mesh:
        prefix = mesh.ctx.settings.rabbitmq.queue_prefix
        deadline = time.monotonic() + 20
        while not mesh.queue_stats("split").consumers:
            assert time.monotonic() < deadline, "the mesh never consumed"
            time.sleep(0.05)
        # When an envelope is sent to it
        result = send(mesh_copy, "--transport", "rabbitmq", env=_rabbit_env(tmp_path, prefix))
        # Then no warning
        assert result.exit_code == 0, result.output
        assert result.stderr == ""

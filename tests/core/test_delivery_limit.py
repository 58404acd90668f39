"""``spec.resiliency.maxDeliveries``: a message whose replica dies on every delivery ends
at error-end with reason ``delivery-limit`` instead of starving its actor.

On the embedded transport (a SQLite file, its clock injected) a replica that died
holding a message is a lease that ran out: a consumer leases it and the test moves the
clock past the lease. The declared field, the crew's exemption, the batch path and the
refusal of a limit the broker would undercut are checked here; every transport runs
the same in ``tests/transports/test_transport_conformance_deliveries.py``, and a real
``os._exit`` under ``asya up`` in ``tests/core/test_e2e_delivery_limit.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.crew import ErrorEndRuntime
from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope, ErrorInfo
from asya_agents.errors import ConfigError, ManifestError
from asya_agents.handlers import Handler
from asya_agents.manifest import load_mesh, parse_actor
from asya_agents.replica import build_runtime, check_delivery_limits
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.seams import Admission
from asya_agents.settings import Settings
from asya_agents.supervisor import Supervisor
from asya_agents.transports.base import Delivery, Outgoing
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import FakeClock

pytestmark = pytest.mark.timeout(30)

POISON = Path(__file__).parent / "meshes" / "poison"
ACTORS = {"work", "next", ERROR_END}


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedTransport, FakeClock]]:
    clock = FakeClock()
    t = EmbeddedTransport(tmp_path / "queues.db", clock=clock, poll_interval=0.005)
    try:
        yield t, clock
    finally:
        await t.close()


async def died_holding(t: EmbeddedTransport, clock: FakeClock, times: int) -> None:
    """``times`` replicas each lease the head of ``work`` and die (the lease runs out)."""
    for _ in range(times):
        assert await t.receive("work", max_messages=1, wait=1.0, visibility=5.0)
        clock.advance(6.0)


async def serve_until(runtime: Runtime, t: EmbeddedTransport,
                      wanted: dict[str, int]) -> dict[str, list[Envelope]]:
    """Run ``runtime`` until each queue of ``wanted`` holds that many; what they hold."""
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    got: dict[str, list[Delivery]] = {q: [] for q in wanted}
    try:
        for _ in range(400):
            for q, n in wanted.items():
                if len(got[q]) < n:
                    got[q] += await t.receive(q, max_messages=n, wait=0.01, visibility=60)
            if all(len(got[q]) >= n for q, n in wanted.items()):
                break
    finally:
        stop.set()
        await task
    return {q: [Envelope.decode(d.body) for d in ds] for q, ds in got.items()}


def test_max_deliveries_defaults_to_10_and_a_bad_one_fails_at_load(tmp_path: Path) -> None:
    doc: dict[str, Any] = {"apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor",
                           "metadata": {"name": "a"}, "spec": {"handler": "m.f"}}
    assert parse_actor(doc, tmp_path / "a.yaml").spec.resiliency.maxDeliveries == 10
    doc["spec"]["resiliency"] = {"maxDeliveries": 0}
    with pytest.raises(ManifestError, match=r"a\.yaml.*spec\.resiliency\.maxDeliveries"):
        parse_actor(doc, tmp_path / "a.yaml")


async def test_the_last_known_error_is_named_and_the_brakes_are_not_told(
    queue: tuple[EmbeddedTransport, FakeClock],
) -> None:
    # Given a retry copy (its first attempt raised) that then killed two replicas
    t, clock = queue
    env = Envelope.create({"n": 1}, ["work", "next"])
    env.meta.attempt = 2
    env.meta.error = ErrorInfo(type="builtins.ValueError", message="boom", actor="work",
                               attempt=1)
    await t.send([Outgoing("work", env.encode())])
    await died_holding(t, clock, 2)

    outcomes: list[BaseException | None] = []

    class Told(Admission):
        def outcome(self, exc: BaseException | None) -> None:
            outcomes.append(exc)

    cfg = RuntimeConfig(actor="work", actors=ACTORS, receive_wait=0.05, max_deliveries=2,
                        admission=Told())
    runtime = Runtime(cfg, transport=t, handler=Handler("never", lambda p: 1 / 0))
    # When the actor's runtime gets its third delivery
    got = await serve_until(runtime, t, {ERROR_END: 1})
    # Then it is refused with the count and the earlier error, and no outcome is counted
    [dead] = got[ERROR_END]
    assert dead.meta.error is not None and dead.meta.error.reason == "delivery-limit"
    assert "delivered 3 times (maxDeliveries 2)" in dead.meta.error.message
    assert "last known error (at work, attempt 1): builtins.ValueError: boom" \
        in dead.meta.error.message
    assert dead.meta.attempt == 2, "not retried: the attempt stays"
    assert outcomes == []


async def test_in_a_batch_only_the_one_past_the_limit_is_refused(
    queue: tuple[EmbeddedTransport, FakeClock],
) -> None:
    # Given a message that killed two replicas, and two fresh ones behind it
    t, clock = queue
    killer = Envelope.create({"n": 0}, ["work", "next"])
    await t.send([Outgoing("work", killer.encode())])
    await died_holding(t, clock, 2)
    await t.send([Outgoing("work", Envelope.create({"n": n}, ["work", "next"]).encode())
                  for n in (1, 2)])
    batches: list[list[int]] = []

    def handle(payloads: list[dict[str, int]]) -> list[dict[str, int]]:
        batches.append([p["n"] for p in payloads])
        return payloads

    cfg = RuntimeConfig(actor="work", actors=ACTORS, receive_wait=0.05, batch_size=8,
                        batch_wait=0.2, max_deliveries=2)
    runtime = Runtime(cfg, transport=t, handler=Handler("batch", handle))
    # When a batch actor with maxDeliveries 2 takes all three at once
    got = await serve_until(runtime, t, {ERROR_END: 1, "next": 2})
    # Then the batch held only the two fresh ones, and the killer went to error-end
    assert batches == [[1, 2]]
    assert [e.id for e in got[ERROR_END]] == [killer.id]
    assert sorted(e.payload["n"] for e in got["next"]) == [1, 2]


async def test_error_end_records_whatever_its_count(
    queue: tuple[EmbeddedTransport, FakeClock], tmp_path: Path,
) -> None:
    # Given a failed envelope whose error-end replicas died 12 times
    t, clock = queue
    env = Envelope.create({"n": 1}, ["work"])
    await t.send([Outgoing(ERROR_END, env.encode())])
    for _ in range(12):
        assert await t.receive(ERROR_END, max_messages=1, wait=1.0, visibility=5.0)
        clock.advance(6.0)
    loaded = load_mesh(POISON)
    runtime = build_runtime(loaded, ERROR_END, t, settings=Settings(), state_dir=tmp_path)
    runtime.cfg.receive_wait = 0.05
    # When error-end's runtime (built as a replica builds it) gets it
    stop = asyncio.Event()
    task = asyncio.create_task(runtime.run(stop))
    from asya_agents.stores import SQLiteResultStore

    store = SQLiteResultStore(tmp_path / "results.db")
    try:
        for _ in range(400):
            if store.get(env.id) is not None:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    # Then it is recorded as it came: the crew has no limit of its own (and no sweep on
    # a transport without dead-letter queues)
    record = store.get(env.id)
    store.close()
    assert record is not None and record.status == "failed" and record.error is None
    assert isinstance(runtime, ErrorEndRuntime) and runtime.sweep is None
    assert runtime.cfg.max_deliveries is None


def test_replicas_take_the_limit_from_the_spec(tmp_path: Path) -> None:
    loaded = load_mesh(POISON)
    loaded.actors["finish"].spec.resiliency.maxDeliveries = 3
    t = EmbeddedTransport(tmp_path / "queues.db")
    finish = build_runtime(loaded, "finish", t, settings=Settings(), state_dir=tmp_path)
    happy = build_runtime(loaded, HAPPY_END, t, settings=Settings(), state_dir=tmp_path)
    assert finish.cfg.max_deliveries == 3
    assert happy.cfg.max_deliveries is None
    asyncio.run(t.close())


def _broker(kind: str, limit: int) -> Any:
    url = "amqp://guest:guest@127.0.0.1:1/"  # never reached: the check comes first
    if kind == "rabbitmq":
        from asya_agents.transports.rabbitmq import RabbitMQTransport

        return RabbitMQTransport(url, mesh="poison", delivery_limit=limit)
    from asya_agents.transports.sqs import SQSTransport

    return SQSTransport(mesh="poison", endpoint_url="http://127.0.0.1:1",
                        max_receive_count=limit)


@pytest.mark.parametrize(("kind", "setting"), [
    ("rabbitmq", "ASYA_RABBITMQ_DELIVERY_LIMIT"), ("sqs", "ASYA_SQS_MAX_RECEIVE_COUNT")])
def test_a_limit_the_broker_would_undercut_is_refused_naming_both(
    kind: str, setting: str, tmp_path: Path,
) -> None:
    # Given an actor that allows 20 deliveries on a broker that dead-letters after 20
    loaded = load_mesh(POISON)
    loaded.actors["finish"].spec.resiliency.maxDeliveries = 20
    broker = _broker(kind, 20)
    # Then neither its replica nor the supervisor starts, and the error names both
    with pytest.raises(ConfigError, match=rf"actors\.yaml: actor 'finish': "
                       rf"spec\.resiliency\.maxDeliveries is 20, not below the {kind} "
                       rf"broker's own delivery limit of 20 \({setting}"):
        build_runtime(loaded, "finish", broker, settings=Settings(), state_dir=tmp_path)
    supervisor = Supervisor(loaded, broker, transport_kind=kind, state_dir=tmp_path)
    with pytest.raises(ConfigError, match="maxDeliveries is 20"):
        asyncio.run(supervisor.run(asyncio.Event()))
    # and one below the broker's limit passes, as does any on the embedded transport
    loaded.actors["finish"].spec.resiliency.maxDeliveries = 19
    check_delivery_limits(loaded, broker)
    loaded.actors["finish"].spec.resiliency.maxDeliveries = 500
    check_delivery_limits(loaded, EmbeddedTransport(tmp_path / "q.db"))

"""Every way a fan-out child ends at a failure reaches its gather, once: a child past
``maxDeliveries`` (the worker's delivery limit, on the real embedded transport), one a
broker moved to a dead-letter queue (error-end's sweep, on RabbitMQ and an SQS
emulator), one past the mesh's hop limit. A default group fails with the child's
reason; ``partial: true`` lists it and gathers the rest; nothing of the group ends at
error-end twice. Also: ``asya status`` (table and ``--json``) shows open groups with
their age, and ``asya_fanin_groups_total{actor,outcome}`` counts what the gather did."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from asya_agents.envelope import ERROR_END, HAPPY_END, Envelope, ErrorInfo
from asya_agents.manifest import load_mesh
from asya_agents.replica import build_runtime
from asya_agents.seams import Clock
from asya_agents.settings import MeshSettings, Settings, SQSSettings
from asya_agents.testing import LocalMesh
from asya_agents.transports.base import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import FakeClock, require_service

pytestmark = pytest.mark.timeout(120)

MESH = Path(__file__).parent / "meshes" / "fanin"


@pytest.fixture
def steps() -> Iterator[Any]:
    sys.path.insert(0, str(MESH))
    import fanin_steps

    fanin_steps.CALLS.clear()
    yield fanin_steps
    fanin_steps.CALLS.clear()


def _kids(route: list[str], n: int) -> tuple[Envelope, list[Envelope]]:
    """A parent on ``route`` and its ``n`` children as its first actor (a split) sends
    them on: at ``route[1]``."""
    parent = Envelope.create({"n": n}, route)
    kids = [k.advanced() for k in parent.fan_out([{"i": i, "fail": False}
                                                  for i in range(n)])]
    return parent, kids


def _failed_of(record: Any) -> list[tuple[str, int, str, str]]:
    return [(f["id"], f["index"], f["error"]["reason"], f["error"]["actor"])
            for f in record.envelope["meta"]["fanin"]["failed"]]


# -- the worker's delivery limit -------------------------------------------------------


async def _die_holding(state: Path, clock: FakeClock, kid: Envelope, times: int) -> None:
    """Put ``kid`` on its queue, then let ``times`` replicas lease it and die (on the
    embedded transport a replica that died is a lease that ran out)."""
    t = EmbeddedTransport(state / "queues.db", clock=clock, poll_interval=0.005)
    try:
        await t.ensure_queues([kid.route.curr])
        await t.send([Outgoing(kid.route.curr, kid.encode())])
        for _ in range(times):
            got = await t.receive(kid.route.curr, max_messages=1, wait=1.0, visibility=5.0)
            assert [Envelope.decode(d.body).id for d in got] == [kid.id]
            clock.advance(6.0)
    finally:
        await t.close()


@pytest.mark.parametrize("gather", ["gather", "gather-partial"])
def test_a_child_past_max_deliveries_ends_its_group_with_reason_delivery_limit(
        gather: str, steps: Any, tmp_path: Path) -> None:
    # Given a group of 4 whose child 2 killed every replica of `work` that took it, as
    # often as work's maxDeliveries (10)
    clock = FakeClock()
    parent, kids = _kids(["split", "work", gather, "finish"], 4)
    asyncio.run(_die_holding(tmp_path, clock, kids[2], times=10))
    mesh = LocalMesh(MESH, state_dir=tmp_path, clock=clock)
    with mesh:
        # When the mesh runs it and its siblings
        for i in (0, 1, 3):
            mesh.send_raw("work", kids[i].encode())
        mesh._sent.append(parent.id)
        mesh.join(timeout=60)
        records = mesh.results()
    # Then the group ended once, under the parent's id: nothing of it reached
    # error-end on its own
    assert [r.id for r in records] == [parent.id]
    [record] = records
    assert record.duplicates == 0
    if gather == "gather":
        # a default group failed with the child's reason
        assert record.status == "failed" and record.error is not None
        assert record.error["reason"] == "fan-in-child-failed"
        assert f"{kids[2].id} (#2) failed at work (delivery-limit)" in record.error["message"]
        assert "delivered 11 times (maxDeliveries 10)" in record.error["message"]
        assert steps.CALLS == []
    else:
        # partial: the handler got the other three, the child is listed with its reason
        assert record.status == "succeeded"
        assert [p["i"] for p in record.payload["done"]["items"]] == [0, 1, 3]
        assert _failed_of(record) == [(kids[2].id, 2, "delivery-limit", "work")]
        assert record.envelope["meta"]["fanin"]["ending"] == "complete"


# -- a broker's dead-letter queue ------------------------------------------------------


def _broker(kind: str, request: pytest.FixtureRequest) -> Settings:
    sweep = MeshSettings(dlq_sweep_interval=0.2)
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
        return Settings(mesh=sweep)
    url = request.getfixturevalue("moto_url")
    return Settings(mesh=sweep, sqs=SQSSettings(endpoint_url=url, region="us-east-1",
                                                access_key_id="test",
                                                secret_access_key="test"))


@pytest.mark.parametrize("kind", ["rabbitmq", "sqs"])
def test_a_dead_lettered_child_ends_its_group_once(
        kind: str, steps: Any, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    with LocalMesh(MESH, transport=kind, state_dir=tmp_path,
                   settings=_broker(kind, request)) as mesh:
        # Given a group at `gather` whose child 2 the broker dead-lettered from `work`,
        # and a group at `gather-partial` whose child 1 it dead-lettered from the
        # gather's own queue
        first, kids = _kids(["split", "work", "gather", "finish"], 3)
        for kid in kids[:2]:
            mesh.send_raw("work", kid.encode())
        mesh.send_raw("work-dlq", kids[2].encode())
        second, at_gather = _kids(["split", "gather-partial", "finish"], 3)
        for kid in (at_gather[0], at_gather[2]):
            mesh.send_raw("gather-partial", kid.encode())
        mesh.send_raw("gather-partial-dlq", at_gather[1].encode())
        mesh._sent += [first.id, second.id]
        # When error-end has swept them and the gathers ended the groups
        mesh.join(timeout=60)
        records = {r.id: r for r in mesh.results()}
        left = mesh.queue_stats("work-dlq").total + mesh.queue_stats(
            "gather-partial-dlq").total
    # Then each group ended once, under its parent's id, and no child on its own
    assert sorted(records) == sorted([first.id, second.id])
    assert all(r.duplicates == 0 for r in records.values())
    assert left == 0
    # the first failed, naming the child and the broker's queue
    failed = records[first.id]
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["reason"] == "fan-in-child-failed"
    assert f"{kids[2].id} (#2) failed at work (delivery-limit)" in failed.error["message"]
    assert "'work-dlq'" in failed.error["message"]
    # the second gathered the others and lists the dead-lettered one
    done = records[second.id]
    assert done.status == "succeeded"
    assert [p["i"] for p in done.payload["done"]["items"]] == [0, 2]
    assert _failed_of(done) == [(at_gather[1].id, 1, "delivery-limit", "gather-partial")]
    assert steps.CALLS == [[{"i": 0, "fail": False}, {"i": 2, "fail": False}]]


def test_the_sweep_sends_a_dead_lettered_child_to_its_gather_and_the_rest_to_error_end(
) -> None:
    from asya_agents.hop import Router

    actors = frozenset({"split", "work", "gather", "finish", ERROR_END, HAPPY_END})
    work = Router("work", actors, gathers=frozenset({"gather"}))
    gather = Router("gather", actors, gathers=frozenset({"gather"}))
    _, kids = _kids(["split", "work", "gather", "finish"], 2)
    alone = Envelope.create({"x": 1}, ["work", "finish"])
    # A child dead-lettered from work goes on to the gather, failed
    out = work.dead_lettered("work-dlq", kids[0].encode(), broker_limit=20)
    moved = Envelope.decode(out.body)
    assert out.queue == "gather" and moved.route.curr == "gather"
    assert moved.route.prev == ["split", "work"] and moved.route.next == ["finish"]
    assert moved.meta.error is not None and moved.meta.error.reason == "delivery-limit"
    # one from the gather's own queue goes back to it, failed
    at_gather = kids[1].advanced()
    out = gather.dead_lettered("gather-dlq", at_gather.encode(), broker_limit=20)
    back = Envelope.decode(out.body)
    assert out.queue == "gather" and back.route == at_gather.route
    assert back.meta.error is not None and back.meta.error.actor == "gather"
    # an envelope of no fan-out, and a child whose route has no gather, to error-end
    for envelope in (alone, kids[0].model_copy(update={"route": alone.route})):
        out = work.dead_lettered("work-dlq", envelope.encode(), broker_limit=20)
        assert out.queue == ERROR_END
        assert Envelope.decode(out.body).route.curr == "work"


def test_a_failed_child_too_large_to_send_with_its_error_goes_without_its_payload(
) -> None:
    from asya_agents.hop import Router
    from asya_agents.seams import Decision

    actors = frozenset({"split", "work", "gather", "finish", ERROR_END, HAPPY_END})
    router = Router("work", actors, max_bytes=20_000, gathers=frozenset({"gather"}))
    parent = Envelope.create({"n": 1}, ["split", "work", "gather", "finish"])
    [kid] = [k.advanced() for k in parent.fan_out([{"blob": "x" * 15_000}])]
    from asya_agents.envelope import Hop

    try:
        raise ValueError("e" * 3000)
    except ValueError as exc:
        out = router.failure(kid, exc, Decision("route", target=ERROR_END, reason="boom"),
                             hop=Hop(actor="work", started=0.0, ended=0.0),
                             traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01")
    # Then it still reaches its gather, with its error, within the size limit
    slim = Envelope.decode(out.body)
    assert out.queue == "gather" and len(out.body) <= 20_000
    assert slim.payload is None and slim.meta.error is not None
    assert slim.meta.error.reason == "boom" and slim.meta.error.traceback is None
    assert slim.meta.error.message == "e" * 3000


# -- the hop limit ---------------------------------------------------------------------


def test_a_child_past_the_hop_limit_fails_its_group(steps: Any, tmp_path: Path) -> None:
    # Given a mesh with hopLimit 3 and a route that passes `twice` three times
    loaded = load_mesh(MESH)
    loaded.mesh.spec.hopLimit = 3
    with LocalMesh(loaded, state_dir=tmp_path) as mesh:
        root = mesh.send({"n": 2}, route=["split", "twice", "twice", "twice", "gather",
                                          "finish"])
        mesh.join(timeout=30)
        records = mesh.results()
    # Then the group failed once, with the children's reason
    assert [r.id for r in records] == [root]
    [record] = records
    assert record.status == "failed" and record.error is not None
    assert record.error["reason"] == "fan-in-child-failed"
    assert "failed at twice (hop-limit)" in record.error["message"]


# -- what a person and a scraper see ---------------------------------------------------


def test_asya_status_shows_open_groups_and_their_age(steps: Any, tmp_path: Path) -> None:
    from asya_agents.cli import main

    # Given a group of 3 at `gather` whose child 2 goes straight to finish, so it stays
    # open (two children in, a share of 2/3)
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        sent_at = time.time()
        root = mesh.send({"n": 3, "skip": [2]}, route=["fork", "work", "gather", "finish"])
        deadline = time.monotonic() + 30
        while _members(mesh, root) < 2:
            assert time.monotonic() < deadline, mesh.status()
            time.sleep(0.02)
        # When `asya status` is run on the state folder, as JSON and as the table
        runner = CliRunner()
        args = ["status", str(MESH), "--transport", "embedded", "--state-dir",
                str(tmp_path)]
        as_json = runner.invoke(main, [*args, "--json"])
        table = runner.invoke(main, args, env={"COLUMNS": "250"})
        read_at = time.time()
    # Then both show the open group: its parent's id, children in, share and age
    assert as_json.exit_code == 0, as_json.output
    fan_in = json.loads(as_json.output)["fan_in"]
    assert list(fan_in) == ["gather"]
    [group] = fan_in["gather"]["groups"]
    assert fan_in["gather"]["open"] == 1
    assert (group["group"], group["members"], group["received"], group["state"]) == (
        root, 2, "2/3", "open")
    assert 0 <= group["age"] <= read_at - sent_at
    assert fan_in["gather"]["oldest_age"] == group["age"]
    assert table.exit_code == 0, table.output
    line = next(ln for ln in table.output.splitlines() if ln.startswith("gather:"))
    assert line.startswith("gather: 1 open group(s), oldest ")
    assert f"{root} (2 in, 2/3, " in line


def _members(mesh: LocalMesh, root: str) -> int:
    groups = mesh.status().get("fan_in", {}).get("gather", {}).get("groups", [])
    return next((g["members"] for g in groups if g["group"] == root), 0)


def test_the_groups_counter_counts_opened_gathered_failed_and_timed_out(
        steps: Any, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from asya_agents.observe.metrics import MetricsObserver, serve_metrics

    loaded = load_mesh(MESH)
    clock = FakeClock()
    failed_kid = ErrorInfo(type="ValueError", message="no", actor="work", reason="boom")
    whole, whole_kids = _kids(["split", "gather", "finish"], 3)
    bad, bad_kids = _kids(["split", "gather", "finish"], 2)
    late, late_kids = _kids(["split", "gather", "finish"], 3)
    bad_kids[1].meta.error = failed_kid

    async def go() -> tuple[Any, dict[str, list[Envelope]]]:
        t = EmbeddedTransport(tmp_path / "queues.db", clock=clock, poll_interval=0.005)
        runtime = build_runtime(loaded, "gather", t, settings=Settings(),
                                state_dir=tmp_path, clock=Clock.of(clock))
        runtime.cfg.receive_wait = 0.05
        await t.ensure_queues(sorted(loaded.actor_names))
        # Given a whole group, a copy of one of its children, a group with a failed
        # child, and a group that never gets its third child
        await t.send([Outgoing("gather", k.encode()) for k in
                      [*whole_kids, whole_kids[0], *bad_kids, *late_kids[:2]]])
        stop = asyncio.Event()
        task = asyncio.create_task(runtime.run(stop))
        ended: dict[str, list[Envelope]] = {"finish": [], ERROR_END: []}
        try:
            for step in range(2000):
                for q in ended:
                    for d in await t.receive(q, max_messages=10, wait=0.01,
                                             visibility=60):
                        ended[q].append(Envelope.decode(d.body))
                        await t.ack(d)  # or the fake clock's jump gives it back
                if len(ended["finish"]) + len(ended[ERROR_END]) == 2 and step > 50:
                    clock.advance(601)  # When the third group's fanIn.timeout passes
                if len(ended["finish"]) + len(ended[ERROR_END]) == 3:
                    break
        finally:
            stop.set()
            await task
            await t.close()
        return runtime, ended

    runtime, ended = asyncio.run(go())
    # Then one group went on, two failed (one of a child, one of its timeout)
    assert [e.id for e in ended["finish"]] == [whole.id]
    reasons = {e.id: e.meta.error.reason for e in ended[ERROR_END] if e.meta.error}
    assert reasons == {bad.id: "fan-in-child-failed", late.id: "fan-in-timeout"}
    # and the counter, read from the registry and scraped over HTTP, says so
    registry = CollectorRegistry()
    MetricsObserver(registry=registry).watch(runtime)
    counts = {o: registry.get_sample_value("asya_fanin_groups_total",
                                           {"actor": "gather", "outcome": o})
              for o in ("opened", "gathered", "failed", "timeout")}
    assert counts == {"opened": 3.0, "gathered": 1.0, "failed": 1.0, "timeout": 1.0}
    server = serve_metrics(registry, port=0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
    finally:
        server.close()
    for outcome, value in counts.items():
        assert (f'asya_fanin_groups_total{{actor="gather",outcome="{outcome}"}} '
                f"{value}") in text

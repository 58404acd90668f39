"""Fan-in (``spec.fanIn``) through the test helper: a group is gathered once, in fan-out
order, and goes on with the parent's id; failures, ``partial``, ``timeout``, nesting,
per-child routes, duplicates and the errors a gather reports. The core cases run on the
embedded transport and on RabbitMQ, with the groups in SQLite and in PostgreSQL."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope
from asya_agents.settings import Settings, StoreSettings
from asya_agents.testing import LocalMesh
from tests.conftest import FakeClock, require_service

MESH = Path(__file__).parent / "meshes" / "fanin"


@pytest.fixture
def steps() -> Iterator[Any]:
    sys.path.insert(0, str(MESH))
    import fanin_steps

    fanin_steps.CALLS.clear()
    fanin_steps.MADE.clear()
    yield fanin_steps
    fanin_steps.CALLS.clear()


def _settings(kind: str, store: str, request: pytest.FixtureRequest) -> Settings:
    if kind == "rabbitmq":
        require_service("RabbitMQ", port=5672)
    if store == "postgres":
        url = request.getfixturevalue("pg_url")
        return Settings(store=StoreSettings(groups_url=url))
    return Settings()


def _items(record: Any) -> list[Any]:
    return list(record.payload["done"]["items"])


@pytest.mark.parametrize(("kind", "store"), [("embedded", "sqlite"), ("embedded", "postgres"),
                                             ("rabbitmq", "sqlite"), ("rabbitmq", "postgres")])
def test_a_group_is_gathered_once_in_fan_out_order_and_goes_on_as_its_parent(
        kind: str, store: str, steps: Any, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    # Given the mesh split -> work -> gather -> finish, on this transport and store
    with LocalMesh(MESH, transport=kind, state_dir=tmp_path,
                   settings=_settings(kind, store, request)) as mesh:
        # When a parent is fanned out into 7 children, and another into 3
        seven = mesh.send({"n": 7})
        three = mesh.send({"n": 3})
        mesh.join(timeout=60)
        records = {r.id: r for r in mesh.results()}
    # Then each group ended once, under its parent's id, with the children in order,
    # and went on along the route after the gather
    assert sorted(records) == sorted([seven, three])
    assert [p["i"] for p in _items(records[seven])] == list(range(7))
    assert [p["sq"] for p in _items(records[three])] == [0, 1, 4]
    gathered = records[seven]
    assert gathered.route["prev"] == ["split", "work", "gather", "finish"]
    meta = gathered.envelope["meta"]
    assert meta["weight"] == "1" and meta["fanout"] == [] and meta["parent_id"] is None
    assert meta["fanin"] == {"children": 7, "failed": [], "missing": "0",
                             "ending": "complete"}
    assert sorted(len(call) for call in steps.CALLS) == [3, 7]


def test_a_failing_child_fails_its_group_with_its_reason(steps: Any, tmp_path: Path) -> None:
    # Given a fan-out of 4 whose child 2 raises in `work`
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        root = mesh.send({"n": 4, "fail": [2]})
        mesh.join(timeout=30)
        record = mesh.result(root)
        results = mesh.results()
    # Then the group ended at error-end under the parent's id, naming the child and why
    assert record.status == "failed" and record.error is not None
    assert record.error["reason"] == "fan-in-child-failed"
    assert f"{root}.2" in record.error["message"]
    assert "child 2 was asked to fail" in record.error["message"]
    # and nothing else ended: the failed child went to the gather, not to error-end
    assert [r.id for r in results] == [root]
    assert steps.CALLS == []


def test_partial_gives_the_handler_the_successes_and_lists_the_failures(
        steps: Any, tmp_path: Path) -> None:
    # Given a partial gather and children 1 and 2 that fail
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        root = mesh.send({"n": 4, "fail": [1, 2]},
                         route=["split", "work", "gather-partial", "finish"])
        mesh.join(timeout=30)
        record = mesh.result(root)
    # Then the handler got 0 and 3, and the gathered envelope lists 1 and 2 with reasons
    assert record.status == "succeeded"
    assert [p["i"] for p in _items(record)] == [0, 3]
    failed = record.envelope["meta"]["fanin"]["failed"]
    assert [(f["id"], f["index"]) for f in failed] == [(f"{root}.1", 1), (f"{root}.2", 2)]
    assert {f["error"]["reason"] for f in failed} == {"handler-error"}
    assert all(f["error"]["actor"] == "work" for f in failed)


def test_a_group_that_waits_past_its_timeout_fails(steps: Any, tmp_path: Path) -> None:
    # Given a group whose child 2 goes straight to finish, so it never reaches the gather
    clock = FakeClock()
    with LocalMesh(MESH, state_dir=tmp_path, clock=clock) as mesh:
        root = mesh.send({"n": 3, "skip": [2]}, route=["fork", "work", "gather", "finish"])
        _wait(lambda: _open(mesh) == [root])
        status = mesh.status()
        # When the clock passes fanIn.timeout (10m) from the first child
        clock.advance(601)
        mesh.join(timeout=30)
        record = mesh.result(root)
    # Then the open group showed in the status, and it ended failed with the reason
    assert status["fan_in"]["gather"]["open"] == 1
    assert status["fan_in"]["gather"]["oldest_age"] >= 0
    assert record.status == "failed" and record.error is not None
    assert record.error["reason"] == "fan-in-timeout"
    assert "share of 1/3 never did" in record.error["message"]


def test_partial_timeout_gathers_what_came(steps: Any, tmp_path: Path) -> None:
    clock = FakeClock()
    with LocalMesh(MESH, state_dir=tmp_path, clock=clock) as mesh:
        # Given a partial group whose child 1 never comes
        root = mesh.send({"n": 3, "skip": [1]},
                         route=["fork", "work", "gather-partial", "finish"])
        _wait(lambda: _open(mesh, "gather-partial") == [root])
        # When its timeout passes
        clock.advance(601)
        mesh.join(timeout=30)
        record = mesh.result(root)
    # Then the handler got 0 and 2, and the envelope says a third was missing
    assert [p["i"] for p in _items(record)] == [0, 2]
    info = record.envelope["meta"]["fanin"]
    assert (info["ending"], info["missing"], info["children"]) == ("timeout", "1/3", 2)


def test_fan_outs_nest_the_inner_gather_gathers_the_inner_group(
        steps: Any, tmp_path: Path) -> None:
    # Given split twice, then two gathers
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        root = mesh.send({"n": 3, "inner": 2},
                         route=["split", "split", "work", "gather", "gather", "finish"])
        mesh.join(timeout=30)
        record = mesh.result(root)
    # Then each inner group was gathered, then the outer group of the three
    outer = record.payload["done"]["items"]
    assert [[(p["outer"], p["i"]) for p in inner["items"]] for inner in outer] == [
        [(o, 0), (o, 1)] for o in range(3)]
    assert record.id == root and record.envelope["meta"]["weight"] == "1"
    assert len(steps.CALLS) == 4


def test_children_may_take_different_routes_and_a_generator_fans_out(
        steps: Any, tmp_path: Path) -> None:
    # Given odd children routed through `twice` (envelope mode, a next per child), and a
    # generator of 200 children
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        forked = mesh.send({"n": 4, "via": True}, route=["fork", "work", "gather", "finish"])
        streamed = mesh.send({"n": 200}, route=["stream", "work", "gather", "finish"])
        mesh.join(timeout=60)
        forked_items = _items(mesh.result(forked))
        streamed_items = _items(mesh.result(streamed))
    # Then both gathered in order, the odd ones having passed `twice`
    assert [(p["i"], p.get("twice", False)) for p in forked_items] == [
        (0, False), (1, True), (2, False), (3, True)]
    assert [p["i"] for p in streamed_items] == list(range(200))


def test_envelope_mode_gather_gets_envelopes_and_may_set_the_route(
        steps: Any, tmp_path: Path) -> None:
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        root = mesh.send({"n": 3}, route=["split", "gather-envelopes"])
        mesh.join(timeout=30)
        record = mesh.result(root)
    assert record.payload == {"done": {"ids": [f"{root}.{i}" for i in range(3)],
                                       "twice": True}}
    assert record.route["prev"] == ["split", "gather-envelopes", "twice", "finish"]


def test_a_redelivered_or_late_child_is_absorbed(steps: Any, tmp_path: Path) -> None:
    # Given three children of one parent sent to the gather by hand, child 0 twice
    parent = Envelope.create({"n": 3}, ["split", "gather", "finish"])
    kids = [k.advanced() for k in parent.fan_out([{"i": 0}, {"i": 1}, {"i": 2}])]
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        for kid in [kids[0], kids[0], kids[2], kids[1]]:
            mesh.send_raw("gather", kid.encode())
        mesh._sent.append(parent.id)
        mesh.join(timeout=30)
        # When a copy of child 1 comes after the group was gathered
        mesh.send_raw("gather", kids[1].encode())
        _wait(lambda: mesh.queue_stats("gather").total == 0)
        mesh.join(timeout=30)
        records = mesh.results()
    # Then the group was gathered once, each child once, in order
    assert [r.id for r in records] == [parent.id] and records[0].duplicates == 0
    assert steps.CALLS == [[{"i": 0}, {"i": 1}, {"i": 2}]]


def test_two_gather_replicas_emit_each_group_once(steps: Any, tmp_path: Path) -> None:
    # Given two replicas of every actor, the gather's included
    with LocalMesh(MESH, state_dir=tmp_path, replicas=2) as mesh:
        roots = [mesh.send({"n": 20}) for _ in range(10)]
        mesh.join(timeout=60)
        records = mesh.results()
    # Then every group ended once, whole, and its handler ran once
    assert sorted(r.id for r in records) == sorted(roots)
    assert all(r.duplicates == 0 and len(_items(r)) == 20 for r in records)
    assert len(steps.CALLS) == 10


@pytest.mark.parametrize(("route", "payload", "reason"), [
    (["split", "gather-bad", "finish"], {"n": 3}, "fan-in-result"),
    (["fork", "work", "gather", "finish"], {"n": 3, "after": {"1": ["twice", "finish"]}},
     "fan-in-route-conflict"),
    (["twice", "gather"], {"n": 3}, "fan-in-no-group"),
])
def test_what_a_gather_cannot_gather_ends_with_a_reason(
        route: list[str], payload: dict[str, Any], reason: str, steps: Any,
        tmp_path: Path) -> None:
    with LocalMesh(MESH, state_dir=tmp_path) as mesh:
        root = mesh.send(payload, route=route)
        mesh.join(timeout=30)
        record = mesh.result(root)
    assert record.status == "failed" and record.error is not None
    assert record.error["reason"] == reason
    assert record.error["actor"] in ("gather", "gather-bad")


def _open(mesh: LocalMesh, actor: str = "gather") -> list[str]:
    groups = mesh.status().get("fan_in", {}).get(actor, {}).get("groups", [])
    return [g["group"] for g in groups]


def _wait(cond: Any, timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.02)


def test_a_gather_renders_with_the_store_secret_required_and_one_replica_up() -> None:
    from asya_agents.k8s.render import RenderOptions, render_mesh
    from asya_agents.manifest import load_mesh
    from tests.conftest import ROOT

    # Given the fan-in test mesh rendered for a cluster
    objs = render_mesh(load_mesh(MESH), RenderOptions(transport="rabbitmq",
                                                      project_root=ROOT)).objects()
    deployments = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}
    scaled = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ScaledObject"}

    def store_ref(name: str) -> dict[str, Any]:
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        [env] = [e for e in container["env"] if e["name"] == "ASYA_STORE_URL"]
        return dict(env["valueFrom"]["secretKeyRef"])

    # Then the gather's pods must get the store URL, a plain actor's may; and KEDA
    # keeps one gather replica up to sweep timeouts
    assert store_ref("gather") == {"name": "asya-store", "key": "url", "optional": False}
    assert store_ref("work")["optional"] is True
    assert scaled["gather"]["spec"]["minReplicaCount"] == 1
    assert scaled["work"]["spec"]["minReplicaCount"] == 0


@pytest.mark.parametrize(("route", "extra", "field"), [
    (["gather", "finish"], "", "spec.route[0]"),
    (["split", "gather"], "  batch: {maxSize: 4}\n", "spec.batch"),
])
def test_a_gather_nothing_can_feed_or_that_batches_is_refused_at_load(
        route: list[str], extra: str, field: str, tmp_path: Path) -> None:
    from asya_agents.errors import ManifestError
    from asya_agents.manifest import load_mesh

    # Given a mesh whose fanIn actor is first on its route, or batches
    (tmp_path / "mesh.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: Mesh\nmetadata: {name: bad}\n"
        f"spec: {{route: [{', '.join(route)}]}}\n")
    (tmp_path / "actors.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: split}\n"
        "spec: {handler: steps.split}\n---\n"
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: gather}\n"
        f"spec:\n  handler: steps.merge\n  fanIn: {{timeout: 1m}}\n{extra}---\n"
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: finish}\n"
        "spec: {handler: steps.finish}\n")
    # Then loading it names the file and the field
    with pytest.raises(ManifestError) as caught:
        load_mesh(tmp_path)
    assert caught.value.field == field and "fanIn" in str(caught.value)

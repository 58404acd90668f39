"""A route that loops ends at the mesh's hop limit, in error-end with reason hop-limit,
once, never retried, while the mesh goes on serving everything else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from asya_agents.envelope import DEFAULT_HOP_LIMIT, HAPPY_END, Envelope, Hop, Route
from asya_agents.errors import HopLimitExceeded
from asya_agents.handlers import Result
from asya_agents.hop import Router
from asya_agents.manifest import load_mesh
from asya_agents.replica import build_runtime
from asya_agents.seams import reason_of
from asya_agents.settings import Settings
from asya_agents.testing import LocalMesh
from asya_agents.transports.embedded import EmbeddedTransport

ROOT = Path(__file__).resolve().parents[2]
LOOP = Path(__file__).parent / "meshes" / "loop"  # hopLimit: 12


def test_an_actor_that_puts_itself_back_forever_ends_once_at_the_hop_limit(
        tmp_path: Path) -> None:
    # Given `again`, an envelope-mode actor that appends itself to next on every call
    # (with a retry policy that would retry a handler error twice)
    with LocalMesh(LOOP, state_dir=tmp_path) as mesh:
        looping = mesh.send({"n": 1})
        # When it runs until it ends
        mesh.join([looping], timeout=30)
        # Then exactly one record: failed with reason hop-limit, on its first attempt
        [record] = mesh.results()
        assert record.id == looping and record.status == "failed"
        assert record.error is not None
        assert record.error["reason"] == "hop-limit"
        assert record.error["type"] == "asya_agents.errors.HopLimitExceeded"
        assert record.error["attempt"] == 1
        assert "spec.hopLimit: 12" in record.error["message"]
        assert "last actors: again -> again" in record.error["message"]
        # the 12th actor did not get to send it on: 11 behind it, the 12th is curr
        assert record.route["prev"] == ["again"] * 11 and record.route["curr"] == "again"
        assert record.payload == {"n": 1, "rounds": 11}
        # And the mesh keeps serving: a second loop ends the same way, an echo succeeds
        again, echo = mesh.send({"n": 2}), mesh.send({"n": 3}, route=["echo"])
        mesh.join([again, echo], timeout=30)
        assert mesh.result(again).error["reason"] == "hop-limit"  # type: ignore[index]
        assert mesh.result(echo).status == "succeeded"
        assert mesh.result(echo).payload == {"n": 3, "echoed": True}
        assert len(mesh.results()) == 3


def envelope_with_history(hops: int, *, next_: list[str]) -> Envelope:
    env = Envelope.create({"x": 1}, ["a"])
    return env.model_copy(update={"route": Route(prev=["a"] * hops, curr="a", next=next_)})


ROUTER = Router("a", frozenset({"a", "b", HAPPY_END, "error-end"}))
HOP = Hop(actor="a", started=1.0, ended=2.0)


def test_the_default_limit_lets_an_envelope_pass_100_actors_and_no_more() -> None:
    assert ROUTER.hop_limit == DEFAULT_HOP_LIMIT == 100
    # Given an envelope at its 99th actor: it may go on to a 100th
    [out] = ROUTER.route(envelope_with_history(98, next_=["b"]), Result([{"y": 1}], False),
                         hop=HOP, traceparent="")
    assert out.queue == "b"
    # Given one at its 100th actor: going on to a 101st fails with hop-limit
    with pytest.raises(HopLimitExceeded) as err:
        ROUTER.route(envelope_with_history(99, next_=["b"]), Result([{"y": 1}], False),
                     hop=HOP, traceparent="")
    assert reason_of(err.value) == "hop-limit"
    assert "would go on to 'b'" in str(err.value)
    # but it may still end: happy-end is not one more actor
    [done] = ROUTER.route(envelope_with_history(99, next_=[]), Result([{"y": 1}], False),
                          hop=HOP, traceparent="")
    assert done.queue == HAPPY_END


def test_fan_out_children_count_their_parents_history() -> None:
    # Given an envelope at the limit that fans out into two children
    router = Router("a", ROUTER.actors, hop_limit=5)
    with pytest.raises(HopLimitExceeded):
        router.route(envelope_with_history(4, next_=["b"]), Result([{"i": 0}, {"i": 1}], True),
                     hop=HOP, traceparent="")
    # one hop earlier both children go on
    outs = router.route(envelope_with_history(3, next_=["b"]),
                        Result([{"i": 0}, {"i": 1}], True), hop=HOP, traceparent="")
    assert [o.queue for o in outs] == ["b", "b"]


@pytest.mark.asyncio
async def test_the_runtime_takes_the_limit_from_mesh_yaml_or_the_default(
        tmp_path: Path) -> None:
    transport = EmbeddedTransport(tmp_path / "queues.db")
    try:
        loop = build_runtime(load_mesh(LOOP), "again", transport, settings=Settings(),
                             state_dir=tmp_path)
        example = build_runtime(load_mesh(ROOT / "mesh" / "example"), "split", transport,
                                settings=Settings(), state_dir=tmp_path)
        assert loop.cfg.hop_limit == loop.worker.router.hop_limit == 12
        assert example.cfg.hop_limit == example.worker.router.hop_limit == DEFAULT_HOP_LIMIT
    finally:
        await transport.close()


def test_a_mesh_s_own_hop_limit_travels_to_the_cluster_and_the_default_stays_implicit(
        tmp_path: Path) -> None:
    from asya_agents.k8s.render import RenderOptions, render_mesh

    def mounted(folder: Path) -> dict[str, str]:
        objects = render_mesh(load_mesh(folder), RenderOptions(project_root=ROOT)).objects()
        [cm] = [o for o in objects if o["kind"] == "ConfigMap"
                and o["metadata"]["name"].startswith("asya-mesh-")]
        data: dict[str, str] = cm["data"]
        return data

    # Given the loop mesh (hopLimit: 12), When it is rendered
    for name, text in mounted(LOOP).items():
        (tmp_path / name).write_text(text)
    # Then the mesh folder its replicas mount says 12
    assert load_mesh(tmp_path).mesh.spec.hopLimit == 12
    # and the example mesh keeps the default, written nowhere (its render is unchanged)
    example: dict[str, Any] = yaml.safe_load(mounted(ROOT / "mesh" / "example")["mesh.yaml"])
    assert "hopLimit" not in example["spec"]

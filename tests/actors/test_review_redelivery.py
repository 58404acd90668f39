"""Ended records only move forward: a copy of the review hop delivered again after the
decision (at-least-once delivery) is counted as a duplicate, never turns the resumed
envelope's record back to ``paused`` and never parks the decided item again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.review import ReviewService, open_review_store
from asya_agents.testing import LocalMesh
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import ROOT

STEPS = ROOT / "tests" / "core" / "meshes" / "poison"


def relay_mesh(folder: Path) -> Path:
    """check -> review -> finish, the review actor being the built-in parking one."""
    folder.mkdir(parents=True)
    (folder / "mesh.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: Mesh\nmetadata: {name: relay}\n"
        f"spec:\n  route: [check, review, finish]\n  pythonPath: ['{STEPS}']\n")
    (folder / "actors.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: check}\n"
        "spec: {handler: poison_steps.check, handlerMode: envelope}\n---\n"
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: review}\n"
        "spec: {handler: asya_agents.review.park}\n---\n"
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: finish}\n"
        "spec: {handler: poison_steps.finish}\n")
    return folder


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[LocalMesh, ReviewService]]:
    state = tmp_path / "state"
    with LocalMesh(relay_mesh(tmp_path / "relay"), state_dir=state) as mesh:
        service = ReviewService(open_review_store(None, state_dir=state),
                                EmbeddedTransport(state / "queues.db"), mesh.store,
                                mesh="relay")
        yield mesh, service
        service._run(service.transport.close())
        service.close()
        service.store.close()


def status_of(mesh: LocalMesh, env_id: str) -> str | None:
    record = mesh.store.get(env_id)
    return record.status if record is not None else None


@pytest.mark.timeout(60)
def test_a_redelivered_review_hop_never_regresses_a_succeeded_record(
        relay: tuple[LocalMesh, ReviewService]) -> None:
    mesh, service = relay
    # Given an envelope parked in review, approved, and then succeeded
    env_id = mesh.send({"do": "ok"})
    mesh.join(settle=lambda: len(service.store.pending()) == 1)
    item = service.store.get(env_id)
    assert item is not None and status_of(mesh, env_id) == "paused"
    assert service.decide(env_id, decision="approve", reviewer="ana").won
    mesh.join([env_id], settle=lambda: status_of(mesh, env_id) == "succeeded")
    # When the parked hop is delivered to the review actor once more
    mesh.send_envelope(Envelope.from_dict(item.envelope))
    # Then the copy is counted as a duplicate of the record, which stays succeeded
    mesh.join([env_id], timeout=10,
              settle=lambda: getattr(mesh.store.get(env_id), "duplicates", 0) == 1)
    record = mesh.result(env_id)
    assert record.status == "succeeded"
    assert record.route["prev"] == ["check", "review", "finish"]
    assert mesh.store.totals().paused == 0 and mesh.store.totals().succeeded == 1
    # and the decided item is not parked again as a new pending one
    again = service.store.get(env_id)
    assert again is not None and (again.status, again.decision) == ("decided", "approve")
    assert service.store.pending() == []

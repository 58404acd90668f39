"""Two meshes whose stores share one PostgreSQL database (one ``ASYA_STORE_URL``): each
console, review service and result reader sees its own mesh's items and records only,
and one mesh's review sweep never resumes, expires or counts the other's."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.review import ReviewConfig
from tests.ui.conftest import MESH
from ui.console import Console, ConsoleConfig

pytestmark = pytest.mark.timeout(60)


def named_copy(tmp_path: Path, name: str) -> Path:
    """The console's test mesh under another mesh name."""
    folder = tmp_path / name
    shutil.copytree(MESH, folder, ignore=shutil.ignore_patterns("__pycache__", ".asya"))
    mesh_yaml = folder / "mesh.yaml"
    mesh_yaml.write_text(mesh_yaml.read_text().replace("name: review-ui", f"name: {name}"))
    return folder


@pytest.fixture
def consoles(tmp_path: Path, pg_url: str) -> Iterator[tuple[Console, Console]]:
    opened = [Console(ConsoleConfig(named_copy(tmp_path, name), state_dir=tmp_path / name /
                                    ".asya", store_url=pg_url)) for name in ("alpha", "beta")]
    yield opened[0], opened[1]
    for console in opened:
        console.close()


def park(console: Console, env_id: str, *, deadline: float | None = None) -> None:
    """What the review actor of ``console``'s mesh does with an envelope."""
    env = Envelope.create({"dish": env_id}, ["enhance", "judge", "review", "upload"],
                          id=env_id).advanced().advanced().to_dict()
    console.results.record("paused", env)
    console.reviews.park(env, actor="review", mesh=console.mesh, deadline=deadline,
                         options=ReviewConfig().options())


def test_each_mesh_sees_only_its_own_items_and_records(
        consoles: tuple[Console, Console]) -> None:
    alpha, beta = consoles
    # Given one item parked by each mesh in the shared database
    park(alpha, "a1")
    park(beta, "b1")
    # Then each console's queue, counts and results show its own only
    assert [i.id for i in alpha.pending()] == ["a1"]
    assert [i.id for i in beta.pending()] == ["b1"]
    assert alpha.counts()["pending"] == beta.counts()["pending"] == 1
    assert [r.id for r in alpha.results.results()] == ["a1"]
    assert alpha.results.totals().paused == beta.results.totals().paused == 1
    assert alpha.results.get("b1") is None
    assert beta.results.ended_weight(["a1", "b1"]) == {"a1": 0.0, "b1": 1.0}


def test_one_meshs_sweep_never_resumes_or_expires_the_others(
        consoles: tuple[Console, Console]) -> None:
    alpha, beta = consoles
    # Given a decision taken in alpha that no publisher has sent yet, and an overdue
    # item in beta
    park(alpha, "a1")
    park(beta, "b1", deadline=1.0)
    assert alpha.reviews.decide("a1", decision="approve", reviewer="ana").won
    # When beta's review sweep runs
    assert beta.service.publish_pending() == 0
    assert [r.item.id for r in alpha.service.expire_due(now=10.0)] == []
    # Then alpha's decision is still alpha's to resume, beta's deadline beta's to apply
    assert alpha.reviews.get("a1").published is False  # type: ignore[union-attr]
    assert alpha.service.publish_pending() == 1
    assert [r.item.id for r in beta.service.expire_due(now=10.0)] == ["b1"]
    # and each history holds its own decisions
    assert [(h.id, h.reviewer) for h in alpha.history()] == [("a1", "ana")]
    assert [h.id for h in beta.history()] == ["b1"]

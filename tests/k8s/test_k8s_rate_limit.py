"""`asya render` and actor-wide rate limits: on a cluster the bucket must live where every
replica reaches it, so an actor whose limit would use a Redis on the pod itself or a
SQLite file in the pod is refused, naming the actor and what to set; ``--redis-url``
fills in the Redis for actors that name none, and meshes without a rate limit render
the same bytes either way."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from asya_agents.cli import main
from asya_agents.k8s.render import RenderOptions, render_mesh
from asya_agents.manifest import load_mesh
from tests.conftest import ROOT

MESH = ("apiVersion: asya.sh/v1alpha1\nkind: Mesh\nmetadata: {name: llm}\n"
        "spec: {route: [judge]}\n")


def limited_mesh(root: Path, rate_limit: str) -> Path:
    (root / "mesh.yaml").write_text(MESH)
    (root / "actors.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: judge}\n"
        f"spec:\n  handler: m.f\n  resiliency:\n    rateLimit: {rate_limit}\n")
    return root


def render(mesh: Path, *extra: str) -> tuple[int, str, Path]:
    out = mesh / "out"
    result = CliRunner().invoke(main, ["render", str(mesh), "-o", str(out),
                                       "--project-root", str(mesh), *extra])
    return result.exit_code, result.output, out


def mounted_judge(out: Path) -> dict[str, object]:
    """The judge's rate limit as its replicas read it from the mesh ConfigMap."""
    [config_map] = list(yaml.safe_load_all((out / "mesh-configmap.yaml").read_text()))
    [actor] = list(yaml.safe_load_all(config_map["data"]["actors.yaml"]))
    limit: dict[str, object] = actor["spec"]["resiliency"]["rateLimit"]
    return limit


def test_a_shared_limit_without_a_reachable_redis_is_refused_saying_what_to_set(
        tmp_path: Path) -> None:
    mesh = limited_mesh(tmp_path, "{perSecond: 5}")
    code, output, _ = render(mesh)
    assert code == 2
    assert f"{mesh / 'actors.yaml'}: spec.resiliency.rateLimit.redisUrl:" in output
    assert "actor 'judge'" in output and "store auto on rabbitmq" in output
    assert "--redis-url" in output and "redis://127.0.0.1:6379/0 is the pod itself" in output


def test_redis_url_fills_in_the_redis_of_actors_that_name_none(tmp_path: Path) -> None:
    mesh = limited_mesh(tmp_path, "{perSecond: 5}")
    code, _, out = render(mesh, "--redis-url", "redis://asya-redis.infra:6379/0")
    assert code == 0
    assert mounted_judge(out)["redisUrl"] == "redis://asya-redis.infra:6379/0"


def test_an_actor_that_names_its_redis_keeps_it(tmp_path: Path) -> None:
    mesh = limited_mesh(tmp_path, "{perSecond: 5, redisUrl: 'redis://limits.infra:6379/2'}")
    code, _, out = render(mesh, "--redis-url", "redis://asya-redis.infra:6379/0")
    assert code == 0 and mounted_judge(out)["redisUrl"] == "redis://limits.infra:6379/2"
    assert render(mesh)[0] == 0  # it needs no --redis-url


@pytest.mark.parametrize(("rate_limit", "extra", "field", "needle"), [
    ("{perSecond: 5, store: sqlite}", [], "spec.resiliency.rateLimit.store",
     "every replica would get the whole limit"),
    ("{perSecond: 5}", ["--redis-url", "redis://:s3cret@cache:6379/0"], "--redis-url",
     "carries a password"),
    ("{perSecond: 5, redisUrl: 'redis://u:pw@cache:6379'}", [],
     "spec.resiliency.rateLimit.redisUrl", "carries a password"),
])
def test_what_cannot_hold_a_shared_limit_on_a_cluster_is_refused(
        tmp_path: Path, rate_limit: str, extra: list[str], field: str, needle: str) -> None:
    code, output, _ = render(limited_mesh(tmp_path, rate_limit), *extra)
    assert code == 2 and f": {field}:" in output and needle in output
    assert "s3cret" not in output and ":pw@" not in output  # no password is printed


def test_a_limit_per_replica_renders_as_declared(tmp_path: Path) -> None:
    code, _, out = render(limited_mesh(tmp_path, "{perSecond: 5, store: local}"))
    assert code == 0 and mounted_judge(out) == {"perSecond": 5.0, "store": "local"}


def test_meshes_without_a_rate_limit_render_the_same_bytes_with_redis_url() -> None:
    loaded = load_mesh(ROOT / "mesh" / "example")
    plain = render_mesh(loaded, RenderOptions(project_root=ROOT))
    with_redis = render_mesh(loaded, RenderOptions(project_root=ROOT,
                                                   redis_url="redis://cache:6379/0"))
    assert plain.files == with_redis.files

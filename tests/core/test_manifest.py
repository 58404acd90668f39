"""Manifests: AsyncActor, Flavor and Mesh load strictly, flavors merge under the actor."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.errors import ManifestError
from asya_agents.manifest import load_mesh, merge_specs

MESH = """\
apiVersion: asya.sh/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {route: [judge]}
"""

# The manifest of DESIGN.md, verbatim apart from the handler module.
DESIGN_ACTOR = """\
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata:
  name: judge
spec:
  image: asya-actors:latest            # Kubernetes only
  handler: steps.Judge.judge
  handlerMode: envelope
  config: {model: openai/gpt-4o-mini, accept: 0.8, reject: 0.5}
  concurrency: 8                       # messages in flight per replica
  scaling: {minReplicaCount: 0, maxReplicaCount: 3, queueLength: 5}
  resiliency:
    actorTimeout: 300s
    policies:
      default: {maxAttempts: 5, backoff: exponential, initialInterval: 1s, maxInterval: 60s}
  flavors: [llm-resilient]
"""

FLAVOR = """\
apiVersion: asya.sh/v1alpha1
kind: Flavor
metadata: {name: llm-resilient}
spec:
  concurrency: 2
  scaling: {maxReplicaCount: 10, cooldownPeriod: 5m}
  resiliency: {actorTimeout: 1m}
"""


def write_mesh(root: Path, actor: str = DESIGN_ACTOR, flavor: str | None = FLAVOR) -> Path:
    mesh = root / "m"
    mesh.mkdir()
    (mesh / "mesh.yaml").write_text(MESH)
    (mesh / "judge.yaml").write_text(actor)
    if flavor is not None:
        (root / "flavors").mkdir()
        (root / "flavors" / "llm.yaml").write_text(flavor)
    return mesh


def test_design_manifest_loads_with_its_flavor_merged_under_it(tmp_path: Path) -> None:
    # Given the manifest from DESIGN.md and a shared flavor in ../flavors
    loaded = load_mesh(write_mesh(tmp_path))
    spec = loaded.actors["judge"].spec
    # Then the actor's own fields win, the flavor fills what the actor left out
    assert spec.concurrency == 8
    assert spec.resiliency.actorTimeout == 300.0
    assert spec.scaling.maxReplicaCount == 3
    assert spec.scaling.cooldownPeriod == 300.0
    assert spec.resiliency.policies["default"].maxAttempts == 5
    assert spec.resiliency.policies["default"].maxInterval == 60.0
    assert loaded.route == ["judge"]
    assert loaded.actor_names == {"judge", "happy-end", "error-end"}


def test_later_flavors_override_earlier_ones_and_the_actor_overrides_all() -> None:
    merged: dict[str, object] = {}
    for flavor in ({"a": 1, "s": {"x": 1, "y": 1}}, {"a": 2, "s": {"y": 2}}):
        merged = merge_specs(merged, flavor)
    merged = merge_specs(merged, {"s": {"x": 9}})
    assert merged == {"a": 2, "s": {"x": 9, "y": 2}}


@pytest.mark.parametrize(
    ("old", "new", "field", "message"),
    [
        ("concurrency: 8", "concurency: 8", "spec.concurency", "unknown field"),
        ("queueLength: 5", "queueLength: 5, maxReplicas: 2", "spec.scaling.maxReplicas",
         "unknown field"),
        ("actorTimeout: 300s", "actorTimeout: soon", "spec.resiliency.actorTimeout",
         "not a duration"),
        ("maxAttempts: 5", "maxAttempts: 0", "spec.resiliency.policies.default.maxAttempts",
         "greater than or equal to 1"),
        ("handlerMode: envelope", "handlerMode: batch", "spec.handlerMode", "payload"),
        ("name: judge", "name: Judge_1", "metadata.name", "pattern"),
        ("flavors: [llm-resilient]", "flavors: [gpu]", "spec.flavors[0]", "unknown flavor"),
    ],
)
def test_bad_fields_are_named_with_file_and_path(
    tmp_path: Path, old: str, new: str, field: str, message: str
) -> None:
    mesh = write_mesh(tmp_path, DESIGN_ACTOR.replace(old, new))
    with pytest.raises(ManifestError) as err:
        load_mesh(mesh)
    assert err.value.field == field
    assert err.value.file is not None and err.value.file.endswith("judge.yaml")
    assert message in str(err.value)


def test_a_bad_flavor_is_reported_in_the_flavor_file(tmp_path: Path) -> None:
    mesh = write_mesh(tmp_path, flavor=FLAVOR.replace("concurrency: 2", "concurrenc: 2"))
    with pytest.raises(ManifestError) as err:
        load_mesh(mesh)
    assert err.value.file is not None and err.value.file.endswith("llm.yaml")
    assert err.value.field == "spec.concurrenc"


def test_missing_handler_route_to_unknown_actor_and_duplicates_are_errors(
    tmp_path: Path,
) -> None:
    mesh = write_mesh(tmp_path, DESIGN_ACTOR.replace("  handler: steps.Judge.judge\n", ""))
    with pytest.raises(ManifestError, match=r"spec\.handler"):
        load_mesh(mesh)
    (mesh / "judge.yaml").write_text(DESIGN_ACTOR)
    (mesh / "mesh.yaml").write_text(MESH.replace("[judge]", "[judge, nobody]"))
    with pytest.raises(ManifestError, match=r"spec.route\[1\].*unknown actor 'nobody'"):
        load_mesh(mesh)
    (mesh / "mesh.yaml").write_text(MESH)
    (mesh / "again.yaml").write_text(DESIGN_ACTOR)
    with pytest.raises(ManifestError, match="also defined in"):
        load_mesh(mesh)


def test_invalid_yaml_and_unknown_kinds_name_the_file(tmp_path: Path) -> None:
    mesh = write_mesh(tmp_path)
    (mesh / "broken.yaml").write_text("kind: [unclosed\n")
    with pytest.raises(ManifestError, match=r"broken\.yaml: not valid YAML"):
        load_mesh(mesh)
    (mesh / "broken.yaml").write_text("apiVersion: v1\nkind: ConfigMap\n")
    with pytest.raises(ManifestError, match=r"broken\.yaml: kind: unknown kind 'ConfigMap'"):
        load_mesh(mesh)


def test_a_folder_without_mesh_yaml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"needs a mesh\.yaml"):
        load_mesh(tmp_path)


@pytest.mark.parametrize(("text", "seconds"),
                         [("300s", 300), ("1m", 60), ("1h30m", 5400), ("250ms", 0.25), (7, 7)])
def test_durations(text: object, seconds: float) -> None:
    from asya_agents.durations import parse_duration

    assert parse_duration(text) == seconds


def test_the_example_mesh_loads() -> None:
    root = Path(__file__).resolve().parents[2]
    loaded = load_mesh(root / "mesh" / "example")
    assert set(loaded.actors) == {"split", "triage", "answer", "format"}
    assert loaded.actors["triage"].spec.handlerMode == "envelope"


def test_storage_composes_the_mesh_the_settings_and_the_actor(tmp_path: Path) -> None:
    from asya_agents.settings import BlobSettings

    # Given storage in mesh.yaml (relative to the mesh) and in the actor's spec
    mesh = write_mesh(tmp_path, DESIGN_ACTOR.replace(
        "  flavors: [llm-resilient]\n",
        "  flavors: [llm-resilient]\n  storage: {roots: [/srv/judge], buckets: [scores]}\n"))
    (mesh / "mesh.yaml").write_text(MESH.replace(
        "spec: {route: [judge]}",
        "spec: {route: [judge], storage: {roots: [photos], buckets: [in]}}"))
    loaded = load_mesh(mesh)
    settings = BlobSettings(roots=(tmp_path / "extra",), buckets=("shared",), max_bytes=9)
    # When the policies of the actor and of the mesh are made
    actor = loaded.storage_policy("judge", settings, tmp_path / "state")
    whole = loaded.storage_policy(None, settings, tmp_path / "state")
    # Then the actor gets the settings', the mesh's defaults, mesh.yaml's and its own
    assert actor.roots == (tmp_path / "extra", mesh / "data", tmp_path / "state" / "output",
                           mesh / "photos", Path("/srv/judge"))
    assert actor.buckets == {"shared", "in", "scores"} and actor.max_bytes == 9
    # and the mesh as a whole (the console) all but the actor's own
    assert whole.roots == actor.roots[:-1] and whole.buckets == {"shared", "in"}


def test_an_unknown_storage_field_is_named(tmp_path: Path) -> None:
    mesh = write_mesh(tmp_path, DESIGN_ACTOR.replace(
        "  flavors: [llm-resilient]\n", "  flavors: [llm-resilient]\n  storage: {root: [/]}\n"))
    with pytest.raises(ManifestError) as err:
        load_mesh(mesh)
    assert err.value.field == "spec.storage.root" and "unknown field" in str(err.value)

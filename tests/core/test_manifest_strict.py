"""Every field of a manifest is read strictly, nested parts too, and an unknown one comes
with the nearest known name: pod settings, a built-in actor's config, flavors, the mesh."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from asya_agents.errors import ManifestError
from asya_agents.manifest import ActorSpec, AsyncActor, load_mesh, parse_actor
from asya_agents.suggest import did_you_mean, field_names, format_loc

MESH = """\
apiVersion: asya.sh/v1alpha1
kind: Mesh
metadata: {name: m}
spec: {route: [a]}
"""


def actor(spec: str, handler: str = "steps.f") -> str:
    return ("apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: a}\n"
            f"spec:\n  handler: {handler}\n{spec}")


def mesh_with(tmp_path: Path, actors: str, mesh: str = MESH) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "mesh.yaml").write_text(mesh)
    (folder / "actors.yaml").write_text(actors)
    return folder


def load_error(folder: Path) -> ManifestError:
    with pytest.raises(ManifestError) as err:
        load_mesh(folder)
    return err.value


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ("  tolerations: [{key: nvidia.com/gpu, efect: NoSchedule}]\n",
         "spec.tolerations[0].efect", "unknown field (did you mean 'effect'?)"),
        ("  tolerations: [{key: a}, {key: b, operator: Exist}]\n",
         "spec.tolerations[1].operator", "'Exists' or 'Equal'"),
        ("  resources: {limts: {cpu: 1}}\n",
         "spec.resources.limts", "unknown field (did you mean 'limits'?)"),
        ("  resources: {limits: {memory: lots}}\n",
         "spec.resources.limits.memory", "not a quantity: 'lots'"),
        ("  resources: {requests: {cpu: true}}\n",
         "spec.resources.requests.cpu", "not a quantity: True"),
        ("  concurency: 3\n", "spec.concurency", "unknown field (did you mean 'concurrency'?)"),
        ("  scaling: {maxReplicas: 3}\n",
         "spec.scaling.maxReplicas", "unknown field (did you mean 'maxReplicaCount'?)"),
        ("  resiliency: {policies: {default: {maxAtempts: 3}}}\n",
         "spec.resiliency.policies.default.maxAtempts",
         "unknown field (did you mean 'maxAttempts'?)"),
        ("  batch: {maxSize: 4, maxWiat: 1s}\n",
         "spec.batch.maxWiat", "unknown field (did you mean 'maxWait'?)"),
    ],
)
def test_a_nested_mistake_fails_at_load_naming_file_path_and_nearest_field(
        tmp_path: Path, spec: str, field: str, message: str) -> None:
    # Given an actor with a mistake deep inside its spec
    folder = mesh_with(tmp_path, actor(spec))
    # When the mesh loads
    err = load_error(folder)
    # Then the error names the file, the full path of the field and what is wrong
    assert err.file == str(folder / "actors.yaml")
    assert err.field == field
    assert message in str(err)
    assert str(err).startswith(f"{folder / 'actors.yaml'}: {field}: ")


def test_a_built_in_review_actors_config_is_checked_by_its_own_model(tmp_path: Path) -> None:
    # Given a review actor whose config misspells `deadline`
    folder = mesh_with(tmp_path, actor("  config: {deadine: 1h}\n",
                                       handler="asya_agents.review.park"))
    # When the mesh loads, Then it fails there, not when the review replica starts
    err = load_error(folder)
    assert err.field == "spec.config.deadine"
    assert "unknown field (did you mean 'deadline'?)" in str(err)


def test_a_review_config_with_a_bad_value_fails_and_a_good_one_loads(tmp_path: Path) -> None:
    folder = mesh_with(tmp_path, actor("  config: {deadline_action: shrug}\n",
                                       handler="asya_agents.review.park"))
    assert load_error(folder).field == "spec.config.deadline_action"
    (folder / "actors.yaml").write_text(actor("  config: {deadline: 1h}\n",
                                              handler="asya_agents.review.park"))
    assert load_mesh(folder).actors["a"].spec.config == {"deadline": "1h"}


def test_a_user_handlers_config_stays_free_form(tmp_path: Path) -> None:
    # Given a user class's config: its keys are the class's business (see preflight)
    folder = mesh_with(tmp_path, actor("  config: {deadine: 1h, anything: [1, 2]}\n"))
    assert load_mesh(folder).actors["a"].spec.config["anything"] == [1, 2]


def test_a_mistake_in_a_flavors_nested_part_is_reported_in_the_flavor_file(
        tmp_path: Path) -> None:
    # Given a flavor whose toleration misspells `operator`
    folder = mesh_with(tmp_path, actor("  flavors: [gpu]\n"))
    (folder / "gpu.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: Flavor\nmetadata: {name: gpu}\n"
        "spec:\n  tolerations: [{key: nvidia.com/gpu, operater: Exists}]\n")
    # When the mesh loads, Then the flavor's file and field are named
    err = load_error(folder)
    assert err.file == str(folder / "gpu.yaml")
    assert err.field == "spec.tolerations[0].operater"
    assert "did you mean 'operator'?" in str(err)


def test_a_mistake_in_mesh_yaml_gets_a_suggestion_too(tmp_path: Path) -> None:
    folder = mesh_with(tmp_path, actor(""), MESH.replace("[a]}", "[a], hoplimit: 5}"))
    err = load_error(folder)
    assert err.file == str(folder / "mesh.yaml")
    assert str(err).endswith("spec.hoplimit: unknown field (did you mean 'hopLimit'?)")


def test_a_field_far_from_any_other_gets_no_guess(tmp_path: Path) -> None:
    err = load_error(mesh_with(tmp_path, actor("  zzzqqq: 1\n")))
    assert str(err).endswith("spec.zzzqqq: unknown field")


def test_pod_settings_keep_their_values_and_their_written_order(tmp_path: Path) -> None:
    # Given resources written limits first and a toleration in its own key order
    folder = mesh_with(tmp_path, actor(
        "  resources: {limits: {nvidia.com/gpu: 1, cpu: '2'}, requests: {memory: 0.5}}\n"
        "  tolerations: [{effect: NoSchedule, operator: Exists, key: gpu}]\n"))
    spec = load_mesh(folder).actors["a"].spec
    # When they are dumped (what asya render writes), Then they come out as written
    resources = spec.resources.model_dump(exclude_unset=True)
    assert list(resources) == ["limits", "requests"]
    assert resources["limits"] == {"nvidia.com/gpu": 1, "cpu": "2"}
    assert resources["requests"] == {"memory": 0.5}
    assert spec.tolerations[0].model_dump(exclude_unset=True) == \
        {"effect": "NoSchedule", "operator": "Exists", "key": "gpu"}
    assert list(spec.tolerations[0].model_dump(exclude_unset=True)) == \
        ["effect", "operator", "key"]


def test_parse_actor_checks_the_same_for_the_operator(tmp_path: Path) -> None:
    # Given an AsyncActor as the API server hands it to the operator
    doc = {"apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor", "metadata": {"name": "a"},
           "spec": {"handler": "steps.f", "resources": {"requests": {"cpu": "1"},
                                                          "limts": {"cpu": "2"}}}}
    with pytest.raises(ManifestError, match=r"spec\.resources\.limts: unknown field "
                                            r"\(did you mean 'limits'\?\)"):
        parse_actor(doc, tmp_path / "a.yaml")


class _Leaf(BaseModel):
    effect: str = ""


class _Root(BaseModel):
    items: list[_Leaf] = []
    named: dict[str, _Leaf] = {}
    maybe: _Leaf | None = None
    free: dict[str, int] = {}


def test_field_names_follow_lists_mappings_and_optionals() -> None:
    assert field_names(_Root, ("items", 3)) == ["effect"]
    assert field_names(_Root, ("named", "x")) == ["effect"]
    assert field_names(_Root, ("maybe",)) == ["effect"]
    assert field_names(_Root, ("free", "x")) == []
    assert field_names(_Root, ("nowhere",)) == []
    assert "tolerations" in field_names(AsyncActor, ("spec",))
    assert field_names(ActorSpec, ("tolerations", 0)) == [
        "key", "operator", "value", "effect", "tolerationSeconds"]


def test_did_you_mean_and_format_loc() -> None:
    assert did_you_mean("concurency", ["concurrency", "config"]) == \
        " (did you mean 'concurrency'?)"
    assert did_you_mean("HOPLIMIT", ["hopLimit"]) == " (did you mean 'hopLimit'?)"
    assert did_you_mean("zzz", ["concurrency"]) == ""
    assert format_loc(("spec", "tolerations", 0, "efect")) == "spec.tolerations[0].efect"
    assert format_loc(()) == ""

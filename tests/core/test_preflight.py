"""The preflight of `asya up`: every handler imported and its config bound to the class's
constructor, without building the class, each mistake one line naming file, actor and
handler; and `asya up` refuses to start on one, before any replica runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asya_agents.errors import HandlerError
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.preflight import check_handler, check_mesh
from asya_agents.replica import add_python_paths

CRASHLOOP = Path(__file__).parent / "meshes" / "crashloop"


@pytest.fixture
def loaded() -> LoadedMesh:
    mesh = load_mesh(CRASHLOOP)
    add_python_paths(mesh)
    return mesh


def with_handler(loaded: LoadedMesh, actor: str, handler: str,
                 config: dict[str, object]) -> LoadedMesh:
    spec = loaded.actors[actor].spec.model_copy(update={"handler": handler, "config": config})
    changed = loaded.actors[actor].model_copy(update={"spec": spec})
    return LoadedMesh(loaded.path, loaded.mesh, {**loaded.actors, actor: changed},
                      loaded.flavors, loaded.sources)


def test_a_class_whose_init_would_fail_passes_because_it_is_not_built(
        loaded: LoadedMesh) -> None:
    # Given `heavy`, whose __init__ raises (a model that is not there)
    # When the mesh is checked, Then nothing fails: the class was bound, never built
    check_mesh(loaded)


@pytest.mark.parametrize(
    ("handler", "config", "why"),
    [
        ("crash_missing.run", {}, "no module of 'crash_missing.run' could be imported"),
        ("crash_steps.Nope.run", {}, "'crash_steps' has no attribute 'Nope'"),
        ("crash_steps.Heavy.runn", {"model": "m"}, "'crash_steps.Heavy' has no attribute 'runn'"),
        ("crash_steps.Heavy.run", {"modle": "m"},
         "spec.config.modle: Heavy() takes no such argument (did you mean 'model'?)"),
        ("crash_steps.Heavy.run", {"zzz": 1},
         "spec.config.zzz: Heavy() takes no such argument (it takes: model, steps)"),
        ("crash_steps.Heavy.run", {"steps": 3}, "missing a required argument: 'model'"),
        ("crash_steps.plain", {"model": "m"}, "is a function but spec.config is set (model)"),
        ("crash_steps.Fine", {"greeting": "x"}, "is a class; name a method: Fine.<method>"),
        ("crash_steps.NOT_CALLABLE", {}, "is not callable (int)"),
        ("crash_steps.Fine.two", {"greeting": "x"}, "must take exactly one argument"),
    ],
)
def test_each_mistake_is_one_line_naming_file_actor_and_handler(
        loaded: LoadedMesh, handler: str, config: dict[str, object], why: str) -> None:
    # Given an actor whose handler or config is wrong
    broken = with_handler(loaded, "heavy", handler, config)
    # When the mesh is checked
    with pytest.raises(HandlerError) as err:
        check_mesh(broken)
    # Then one line names the file, the actor, the handler and why
    message = str(err.value)
    assert message.startswith(f"{CRASHLOOP / 'actors.yaml'}: actor heavy: handler {handler}: ")
    assert why in message
    assert "\n" not in message


def test_a_module_that_raises_on_import_is_named_with_its_error(
        loaded: LoadedMesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "crash_raising.py").write_text("raise ImportError('needs torch: pip install x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(HandlerError, match=r"importing 'crash_raising' raised ImportError: "
                                           r"needs torch"):
        check_mesh(with_handler(loaded, "fine", "crash_raising.run", {}))


def test_methods_static_methods_functions_and_injected_parameters_pass(
        loaded: LoadedMesh) -> None:
    check_handler("crash_steps.Fine.run", config={"greeting": "x"})
    check_handler("crash_steps.Fine.alone", config={"greeting": "x"})
    check_handler("crash_steps.plain")
    # `storage` is filled by the runtime when the config does not set it
    check_handler("crash_steps.Injected.run", config={"size": 2})


def test_every_failing_actor_is_counted_in_the_one_line(loaded: LoadedMesh) -> None:
    broken = with_handler(with_handler(loaded, "heavy", "crash_steps.Heavy.run", {}),
                          "fine", "crash_steps.plain", {"x": 1})
    with pytest.raises(HandlerError, match=r"actor fine: .*\(and 1 more\)$"):
        check_mesh(broken)


@pytest.mark.timeout(60)
def test_asya_up_refuses_to_start_with_one_line_and_exit_code_2(tmp_path: Path) -> None:
    # Given the crashloop mesh with a misspelled config key for `heavy`
    mesh = tmp_path / "crashloop"
    shutil.copytree(CRASHLOOP, mesh, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    actors = mesh / "actors.yaml"
    actors.write_text(actors.read_text().replace("{model: /nowhere", "{modle: /nowhere"))
    state = tmp_path / "state"
    # When `asya up` runs
    done = subprocess.run(
        [sys.executable, "-m", "asya_agents", "up", str(mesh), "--state-dir", str(state)],
        capture_output=True, text=True, timeout=50, env={**os.environ, "ASYA_LOG_LEVEL": "WARNING"})
    # Then it exits 2 with one line, and no replica ever started
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: {actors}: actor heavy: handler crash_steps.Heavy.run: spec.config.modle: "
        "Heavy() takes no such argument (did you mean 'model'?)"]
    assert not (state / "status.json").exists()
    assert not (state / "replicas").exists()

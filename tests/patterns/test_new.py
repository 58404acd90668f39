"""``asya new``: what it writes passes its own test at once (run by pytest in a
subprocess, as a user would), and bad input is refused before anything is written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asya_agents.cli import main
from asya_agents.cli.new import ACTOR_TEMPLATES, mesh_patterns

CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("PYTEST_", "ASYA_LLM_")) and k != "OPENAI_API_KEY"}


def asya(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def pytest_in(folder: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *targets], cwd=folder, env=CLEAN_ENV, capture_output=True,
                          text=True, timeout=280)


def test_list_names_every_pattern_and_template() -> None:
    code, out = asya("new", "--list")
    assert code == 0
    for name in [*mesh_patterns(), *ACTOR_TEMPLATES]:
        assert f"  {name} " in out
    assert {"chain", "routing", "parallel", "voting", "orchestrator", "evaluator",
            "swarm"} <= set(mesh_patterns())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_actor_template_writes_a_folder_whose_test_passes(tmp_path: Path) -> None:
    # Given one actor of each template
    for template in ACTOR_TEMPLATES:
        code, out = asya("new", "actor", f"my-{template}", "--template", template,
                         "--dir", str(tmp_path))
        assert code == 0, out
        folder = tmp_path / f"my_{template}"
        assert {"actor.yaml", "README.md", f"test_my_{template}.py"} <= {
            p.name for p in folder.iterdir()}
    # When their tests run, as the user would run them
    run = pytest_in(tmp_path, *[f"my_{t}" for t in ACTOR_TEMPLATES])
    # Then they pass, every one of them having run
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "failed" not in run.stdout and " passed" in run.stdout
    assert int(run.stdout.split(" passed")[0].split()[-1]) >= len(ACTOR_TEMPLATES)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_pattern_writes_a_mesh_whose_test_passes(tmp_path: Path) -> None:
    names = []
    for pattern in mesh_patterns():
        code, out = asya("new", "mesh", f"my-{pattern}", "--from", pattern,
                         "--dir", str(tmp_path))
        assert code == 0, out
        target = tmp_path / f"my-{pattern}"
        assert "name: my-" + pattern in (target / "mesh.yaml").read_text()
        assert (target / "flavors" / "llm-resilient.yaml").is_file()
        names.append(target.name)
    run = pytest_in(tmp_path, *names)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert f"{len(names)} passed" in run.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["new", "mesh", "Bad_Name", "--from", "chain"], "bad name 'Bad_Name'"),
    (["new", "mesh", "ok", "--from", "nosuch"], "unknown pattern 'nosuch': choose one of"),
    (["new", "actor", "ok", "--template", "nosuch"], "unknown template 'nosuch'"),
    (["new", "actor", "class"], "'class' is reserved"),
    (["new", "actor", "9lives"], "bad name '9lives'"),
    (["new", "actor", "json"], "'json' is already importable"),
])
def test_bad_input_is_refused_and_nothing_is_written(tmp_path: Path, args: list[str],
                                                     message: str) -> None:
    code, out = asya(*args, "--dir", str(tmp_path))
    assert code != 0 and message in out, out
    assert list(tmp_path.iterdir()) == []


def test_an_existing_target_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("mine")
    code, out = asya("new", "mesh", "mine", "--from", "chain", "--dir", str(tmp_path))
    assert code == 2 and "already exists" in out
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["keep.txt"]

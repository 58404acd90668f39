"""The `asya` command line: help, send, status, results, replay, and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from asya_agents.cli import main
from asya_agents.testing import LocalMesh

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mesh_copy(tmp_path: Path) -> Path:
    target = tmp_path / "example"
    shutil.copytree(ROOT / "mesh" / "example", target, ignore=shutil.ignore_patterns(".asya"))
    return target


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", ["up", "send", "status", "results", "replay"])
def test_every_command_explains_itself(command: str) -> None:
    code, out = run(command, "--help")
    assert code == 0
    assert "MESH" in out and "Usage" in out


def test_top_level_help_lists_the_commands() -> None:
    code, out = run("--help")
    assert code == 0
    for command in ("up", "send", "status", "results"):
        assert command in out


def test_send_then_results_and_status_as_json(mesh_copy: Path) -> None:
    # Given two envelopes sent through the CLI and a mesh that handles them
    code, out = run("send", str(mesh_copy), "--payload", '{"text": "One. Two?"}',
                    "--count", "2")
    assert code == 0 and "sent 2 envelope(s) to split" in out
    # (the first line: a warning that no supervisor runs follows on stderr)
    roots = out.splitlines()[0].split(": ", 1)[1].split(", ")
    with LocalMesh(mesh_copy, state_dir=mesh_copy / ".asya") as mesh:
        mesh.join(roots, timeout=20)
    # When the results and the status are read as JSON
    code, out = run("results", str(mesh_copy), "--json")
    records = json.loads(out)
    code2, out2 = run("status", str(mesh_copy), "--json")
    status = json.loads(out2)
    # Then they follow the documented shape
    assert code == 0 and code2 == 0
    assert len(records) == 4
    for rec in records:
        assert {"id", "status", "payload", "route", "error"} <= set(rec)
        assert rec["status"] == "succeeded"
    assert status["totals"]["succeeded"] == 4
    for actor in ("split", "triage", "answer", "format", "happy-end", "error-end"):
        assert {"depth", "in_flight", "replicas", "metrics"} <= set(status["actors"][actor])


def test_failed_envelope_can_be_replayed(tmp_path: Path) -> None:
    poison = ROOT / "tests" / "core" / "meshes" / "poison"
    mesh_dir = tmp_path / "poison"
    shutil.copytree(poison, mesh_dir, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    with LocalMesh(mesh_dir, state_dir=mesh_dir / ".asya") as mesh:
        bad = mesh.send({"do": "raise"})
        mesh.join([bad], timeout=20)
    code, out = run("results", str(mesh_dir), "--status", "failed", "--json")
    [record] = json.loads(out)
    assert record["error"]["type"] == "builtins.ValueError"
    code, out = run("replay", str(mesh_dir), bad)
    assert code == 0 and f"replayed {bad} to check" in out
    # While the replayed envelope runs it is no ended record: not listed, not replayable
    code, out = run("results", str(mesh_dir), "--json")
    assert json.loads(out) == []
    code, out = run("replay", str(mesh_dir), bad)
    assert code == 2 and f"no failed envelope {bad!r}" in out
    # and there is no replay left unsent
    code, out = run("replay", str(mesh_dir), "--unfinished")
    assert code == 0 and "sent 0 unfinished replay(s)" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--payload", "{oops"], "not valid JSON"),
        (["--payload", "{}", "--route", "split,nobody"], "unknown actor(s) nobody"),
    ],
)
def test_bad_send_arguments_are_refused_clearly(mesh_copy: Path, args: list[str],
                                                needle: str) -> None:
    result = CliRunner().invoke(main, ["send", str(mesh_copy), *args])
    assert result.exit_code == 2
    assert needle in result.output


def test_a_broken_manifest_is_one_clear_line_naming_file_and_field(mesh_copy: Path) -> None:
    actors = mesh_copy / "actors.yaml"
    actors.write_text(actors.read_text().replace("concurrency: 4", "concurency: 4", 1))
    result = CliRunner().invoke(main, ["status", str(mesh_copy)])
    assert result.exit_code == 2
    assert "actors.yaml: spec.concurency: unknown field" in result.output

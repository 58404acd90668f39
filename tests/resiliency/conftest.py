"""Helpers of the resiliency tests: a clock the test moves, meshes written per test."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import FakeClock

HERE = Path(__file__).resolve().parent


@pytest.fixture
def clock() -> FakeClock:
    """Epoch-like: Retry-After HTTP dates are read against it."""
    return FakeClock(1_700_000_000.0)


def write_mesh(folder: Path, actors: str, *, route: list[str]) -> Path:
    """A mesh folder with ``actors`` (YAML) whose handlers come from ``res_steps``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: Mesh\nmetadata: {name: res}\n"
        f"spec:\n  route: [{', '.join(route)}]\n  pythonPath: ['{HERE}']\n"
        f"  flavorPaths: ['{HERE.parents[1] / 'mesh' / 'flavors'}']\n"
    )
    (folder / "actors.yaml").write_text(actors)
    return folder


def eventually(check: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait for the mesh's threads to get somewhere (not for time to pass: the
    clock is fake, so nothing here depends on how long this takes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)

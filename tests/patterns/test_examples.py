"""Every pattern mesh runs its example with no API key: the offline stand-in model,
through litellm, to the route its example.json promises (the same check a mesh made by
``asya new mesh --from PATTERN`` ships with)."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.testing import LocalMesh
from tests.patterns.conftest import example, folders

pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


@pytest.mark.parametrize("folder", folders(), ids=lambda p: p.name)
def test_the_example_takes_its_route_offline(folder: Path, tmp_path: Path) -> None:
    # Given the pattern's own example, and no key in the environment (conftest)
    wanted = example(folder.name)
    with LocalMesh(folder, state_dir=tmp_path) as mesh:
        # When it is sent
        env_id = mesh.send(wanted["payload"])
        mesh.join(timeout=90)
        record = mesh.result(env_id)
    # Then it ends as promised, along the promised route, having called the model
    assert (record.status, record.route["prev"]) == (wanted["expect"]["status"],
                                                     wanted["expect"]["prev"])
    assert record.payload["usage"]["calls"] >= 1


def test_every_pattern_has_a_readme_with_a_route_picture_and_an_example() -> None:
    for folder in folders():
        readme = (folder / "README.md").read_text()
        assert "```text" in readme, f"{folder.name}/README.md draws no route"
        assert f"asya up mesh/patterns/{folder.name}" in readme, folder.name
        assert (folder / "example.json").is_file(), folder.name

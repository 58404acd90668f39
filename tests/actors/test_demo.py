"""``asya demo`` end to end: bundled photographs through the real food-image mesh, the
table, the report, the photos left for review; and the LLM judge when a key is set."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from PIL import Image

from asya_agents.cli import main
from asya_agents.errors import ConfigError
from asya_agents.fakes import FakeLLMProvider
from asya_agents.review import open_review_store
from asya_agents.settings import LLMSettings, Settings
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "mesh" / "food-image"))
from food_demo import prepare_mesh, run_demo

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

NO_KEY = Settings(llm=LLMSettings(api_key=None))


@pytest.mark.slow
def test_the_demo_accepts_loops_and_leaves_photos_for_review(tmp_path: Path) -> None:
    lines: list[str] = []
    rows = {r.name: r for r in run_demo(out=tmp_path, settings=NO_KEY, candidates=1,
                                        echo=lines.append)}
    # the fixable photos are accepted and land in accepted/
    for name in ("coffee", "coffee-dark", "coffee-cold", "coffee-flat"):
        assert rows[name].outcome == "accepted", (name, rows[name].reasons)
        assert (tmp_path / "accepted" / f"{name}.enhanced.png").is_file()
    # a blurred photo is rejected, looped max_loops times, then left for a person
    blurred = rows["coffee-blurred"]
    assert (blurred.outcome, blurred.loops, len(blurred.history)) == ("review", 2, 3)
    reviews = open_review_store(None, state_dir=tmp_path / ".asya")
    waiting = sorted(i.payload["photo"] for i in reviews.pending())
    reviews.close()
    assert waiting == sorted(n for n, r in rows.items() if r.outcome == "review")
    # the report shows every photo before and after
    page = (tmp_path / "report.html").read_text()
    assert all(f"photos/{name}.enhanced.png" in page for name in rows)
    with Image.open(tmp_path / "contact-sheet.png") as sheet:
        assert sheet.height > 100 * len(rows)
    assert any(line.startswith("report: ") for line in lines)
    assert any("wait for a person" in line for line in lines)


@pytest.mark.slow
def test_with_a_key_the_demo_asks_the_llm(tmp_path: Path) -> None:
    answer = {"score": 0.9, "verdict": "accept", "reasons": ["tasty"]}
    photos = tmp_path / "mine"
    photos.mkdir()
    from skimage import data

    Image.fromarray(data.coffee()).save(photos / "espresso.jpg")
    with FakeLLMProvider(responder=lambda req: json.dumps(answer)) as llm:
        settings = Settings(llm=LLMSettings(api_key="test-key", model="openai/fake",
                                            api_base=llm.base_url))
        [row] = run_demo(out=tmp_path / "out", photos=photos, settings=settings,
                         candidates=1, echo=lambda line: None)
        assert len(llm.requests) == 1
    assert (row.name, row.outcome, row.score) == ("espresso", "accepted", 0.9)


def test_the_judge_backend_follows_the_key(tmp_path: Path) -> None:
    mesh = ROOT / "mesh" / "food-image"
    loaded, described = prepare_mesh(mesh, out=tmp_path, settings=NO_KEY)
    assert loaded.actors["judge"].spec.config["backend"] == "heuristic"
    assert "heuristic" in described
    keyed = Settings(llm=LLMSettings(api_key="k", model="openai/gpt-4o-mini"))
    loaded, described = prepare_mesh(mesh, out=tmp_path, settings=keyed)
    config: dict[str, Any] = loaded.actors["judge"].spec.config
    assert (config["backend"], config["api_key"]) == ("llm", "k")
    assert loaded.actors["upload"].spec.config["output"] == (tmp_path / "accepted").as_uri()


def test_an_empty_photo_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no photos"):
        run_demo(out=tmp_path / "out", photos=tmp_path / "empty", settings=NO_KEY)
    result = CliRunner().invoke(main, ["demo", "--photos", str(tmp_path / "empty"),
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "no photos" in result.output

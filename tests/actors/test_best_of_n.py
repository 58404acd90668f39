"""Best-of-N food photos: a photo fans out into N candidates (strength or seed), each is
enhanced and scored, a ``fanIn`` actor keeps the best, and the judge's routing half
sends it on (upload), back (one more pass) or to review when even the best is unsure."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from actors.enhance.handler import Enhancer
from actors.judge.handler import Judge
from asya_agents.errors import ConfigError
from asya_agents.manifest import load_mesh
from asya_agents.settings import LLMSettings, Settings
from asya_agents.storage import StoragePolicy
from asya_agents.testing import LocalMesh
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "mesh" / "food-image"))
from food_demo import BEST_OF_ROUTE, degraded_variants, prepare_mesh, run_demo
from food_glue import Candidates, pick_best

MESH = ROOT / "mesh" / "food-image"

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

NO_KEY = Settings(llm=LLMSettings(api_key=None))


def write_photos(folder: Path, *names: str) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    found = {}
    for name, _, image in degraded_variants():
        if name in names:
            found[name] = folder / f"{name}.png"
            image.save(found[name])
    return found


def scored(index: int, score: float, *, strength: float = 1.0,
           defects: list[str] | None = None) -> dict[str, Any]:
    """A candidate as it reaches the gather: enhanced and scored."""
    return {"image_url": "file:///p/dish.png", "candidate": {"index": index, "of": 3},
            "enhanced_url": f"file:///p/dish.c{index}.enhanced.png",
            "enhance_settings": {"sharpen": 140.0},
            "enhancement": {"settings": {"strength": strength, "seed": index, "sharpen": 140.0}},
            "verdict": {"score": score, "verdict": "uncertain", "defects": defects or [],
                        "reasons": [f"reason {index}"]}}


# -- the fan-out ------------------------------------------------------------------------


def test_candidates_differ_in_strength_and_seed_and_the_payload_may_ask_for_n() -> None:
    spread = Candidates(n=3, strength_scales=[1.0, 0.5], seed_step=7).spread
    out = spread({"image_url": "file:///p/dish.png", "photo": "dish"})
    assert [c["candidate"] for c in out] == [
        {"index": 0, "of": 3, "strength_scale": 1.0, "seed_offset": 0},
        {"index": 1, "of": 3, "strength_scale": 0.5, "seed_offset": 7},
        {"index": 2, "of": 3, "strength_scale": 1.0, "seed_offset": 14}]
    assert all(c["photo"] == "dish" for c in out)
    assert len(spread({"image_url": "x", "candidates": 5})) == 5


@pytest.mark.parametrize("n", [0, 17, "3", True, 2.5])
def test_a_bad_count_is_an_error_naming_it(n: Any) -> None:
    with pytest.raises(ConfigError, match="config n"):
        Candidates(n=n)
    with pytest.raises(ValueError, match=r"payload\['candidates'\]"):
        Candidates().spread({"image_url": "x", "candidates": n})
    with pytest.raises(ConfigError, match="strength_scales"):
        Candidates(strength_scales=[1.0, 0])


# -- the enhancer applies a candidate --------------------------------------------------------


def test_the_enhancer_applies_a_candidate_and_names_its_output(tmp_path: Path) -> None:
    photo = write_photos(tmp_path, "coffee-dark")["coffee-dark"]
    enhancer = Enhancer(storage=StoragePolicy(roots=(tmp_path,)), seed=10)
    try:
        plain = enhancer.enhance({"image_url": photo.as_uri()})
        cand = enhancer.enhance({"image_url": photo.as_uri(), "enhance_settings":
                                 {"strength": 0.8}, "candidate": {
                                     "index": 2, "of": 3, "strength_scale": 0.5,
                                     "seed_offset": 4}})
        with pytest.raises(ValueError, match=r"unknown key\(s\) \['scale'\]"):
            enhancer.enhance({"image_url": photo.as_uri(),
                              "candidate": {"index": 0, "of": 1, "scale": 2}})
        with pytest.raises(ValueError, match="index < of"):
            enhancer.enhance({"image_url": photo.as_uri(), "candidate": {"index": 3, "of": 3}})
    finally:
        enhancer.close()
    assert plain["enhanced_url"].endswith("/coffee-dark.enhanced.png")
    assert cand["enhanced_url"].endswith("/coffee-dark.c2.enhanced.png")
    used = cand["enhancement"]["settings"]
    assert (used["strength"], used["seed"]) == (0.4, 14)
    with Image.open(plain["enhanced_url"][7:]) as a, Image.open(cand["enhanced_url"][7:]) as b:
        gentler = np.abs(np.asarray(b, np.int16) - np.asarray(Image.open(photo), np.int16))
        stronger = np.abs(np.asarray(a, np.int16) - np.asarray(Image.open(photo), np.int16))
        assert gentler.mean() < stronger.mean()  # strength 0.4 changes less than 1.0


# -- the gather --------------------------------------------------------------------------------


def test_the_gather_keeps_the_highest_score_and_says_why() -> None:
    best = pick_best([scored(0, 0.61), scored(1, 0.83, strength=0.6),
                      scored(2, 0.70, strength=1.6, defects=["blurry"])])
    assert best["enhanced_url"].endswith("dish.c1.enhanced.png")
    assert best["verdict"]["score"] == 0.83 and "candidate" not in best
    # a loop back through enhance repeats the winning pass, not a candidate's
    assert best["enhance_settings"] == {"sharpen": 140.0, "strength": 0.6, "seed": 1}
    info = best["best_of"]
    assert (info["n"], info["winner"]) == (3, 1)
    assert [c["score"] for c in info["candidates"]] == [0.61, 0.83, 0.70]
    assert info["why"] == ("candidate 1 (strength 0.6) scored 0.83, best of 3; next "
                           "candidate 2 0.70 (blurry)")


def test_equal_scores_keep_the_first_and_missing_candidates_are_said() -> None:
    best = pick_best([scored(0, 0.9), scored(2, 0.9)])
    assert best["best_of"]["winner"] == 0
    assert best["best_of"]["why"].endswith("next candidate 2 0.90, as good: the first is kept")
    assert "best of 2 that came back of 3" in best["best_of"]["why"]
    with pytest.raises(ValueError, match="no candidate"):
        pick_best([])
    with pytest.raises(ValueError, match="candidate 0 has no scored verdict"):
        pick_best([{"image_url": "x"}])


# -- the judge's routing half ---------------------------------------------------------------


def envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {"id": "e1", "route": {"prev": ["best"], "curr": "decide", "next": ["upload"]},
            "headers": {}, "payload": payload}


@pytest.mark.parametrize(("score", "loops", "route"), [
    (0.9, 0, ["upload"]),
    (0.6, 0, ["review", "upload"]),
    (0.3, 0, ["enhance", "judge", "upload"]),
    (0.3, 2, ["review", "upload"]),
])
def test_decide_routes_on_the_best_candidates_verdict(score: float, loops: int,
                                                      route: list[str]) -> None:
    judge = Judge(backend="heuristic", retry_route=["enhance", "judge"])
    label = judge.label(score)
    payload = {**scored(0, score, defects=["blurry"]), "judge_loops": loops}
    payload["verdict"]["verdict"] = label
    out = judge.decide(envelope(payload))
    assert out["route"]["next"] == route
    assert out["payload"]["judge_history"] == [{"score": score, "verdict": label}]
    if route[0] == "enhance":  # the winner's sharpening, one step more
        assert out["payload"]["enhance_settings"]["sharpen"] == 200.0
        assert out["payload"]["judge_loops"] == 1


def test_decide_without_a_verdict_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"payload\['verdict'\]"):
        Judge(backend="heuristic").decide(envelope({"image_url": "x"}))


# -- the mesh --------------------------------------------------------------------------------


def best_of_mesh(tmp_path: Path) -> Any:
    loaded, _ = prepare_mesh(MESH, out=tmp_path, settings=NO_KEY, candidates=3)
    return loaded


@pytest.mark.slow
def test_the_mesh_keeps_the_best_of_three_and_reviews_only_an_uncertain_best(
        tmp_path: Path) -> None:
    photos = write_photos(tmp_path / "photos", "coffee-flat", "coffee-soft")
    with LocalMesh(best_of_mesh(tmp_path), state_dir=tmp_path / ".asya") as mesh:
        ids = {name: mesh.send({"image_url": p.as_uri(), "photo": name},
                               route=BEST_OF_ROUTE) for name, p in photos.items()}
        mesh.join(timeout=240)
        flat, soft = mesh.result(ids["coffee-flat"]), mesh.result(ids["coffee-soft"])
        # one ended record per photo, with the id it was sent with
        assert sorted(r.id for r in mesh.results()) == sorted(ids.values())
    for record in (flat, soft):
        info = record.payload["best_of"]
        scores = [c["score"] for c in info["candidates"]]
        assert info["n"] == 3 and len(scores) == 3 and len(set(
            c["enhanced_url"] for c in info["candidates"])) == 3
        assert scores[info["winner"]] == max(scores)
        assert record.payload["judge_history"][0]["score"] == max(scores)
    # a fixable photo: its best is accepted and uploaded
    assert flat.status == "succeeded"
    uploaded = Path(flat.payload["uploaded_url"][7:])
    assert uploaded.parent == tmp_path / "accepted" and uploaded.is_file()
    assert uploaded.name == f"coffee-flat.c{flat.payload['best_of']['winner']}.enhanced.png"
    # a soft photo: even the best is unsure (after a pass with more sharpening): review
    assert soft.status == "paused"
    assert soft.payload["verdict"]["verdict"] in ("uncertain", "reject")
    assert soft.route["prev"][:5] == ["candidates", "enhance", "score", "best", "decide"]


@pytest.mark.slow
def test_the_demo_shows_which_candidate_won_and_why(tmp_path: Path) -> None:
    write_photos(tmp_path / "mine", "coffee-cold", "coffee-soft")
    lines: list[str] = []
    rows = {r.name: r for r in run_demo(out=tmp_path / "out", photos=tmp_path / "mine",
                                        settings=NO_KEY, candidates=3, echo=lines.append)}
    assert "best of 3" in lines[0]
    for row in rows.values():
        assert row.best_of is not None and row.best_of["n"] == 3
        assert f"candidate {row.best_of['winner']}" in row.best_of["why"]
        assert row.best_line().count("*") == 1
    assert rows["coffee-cold"].outcome == "accepted"
    assert rows["coffee-soft"].outcome == "review"
    page = (tmp_path / "out" / "report.html").read_text()
    assert page.count("kept: candidate ") == 2


def test_best_of_n_needs_its_actors_and_one_candidate_needs_none(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(MESH.parent / "flavors", tmp_path / "flavors")
    folder = tmp_path / "food-image"
    folder.mkdir()
    (folder / "mesh.yaml").write_text((MESH / "mesh.yaml").read_text())
    text = (MESH / "actors.yaml").read_text()
    (folder / "actors.yaml").write_text(text[:text.index("# Best-of-N")].rstrip("-\n"))
    (folder / "food_glue.py").write_text((MESH / "food_glue.py").read_text())
    assert "best" not in load_mesh(folder).actors
    prepare_mesh(folder, out=tmp_path, settings=NO_KEY, candidates=1)
    with pytest.raises(ConfigError, match=r"'candidates'.*--candidates 1"):
        prepare_mesh(folder, out=tmp_path, settings=NO_KEY, candidates=3)


# -- one GPU call for a photo's seeds -----------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from actors.enhance.random_sdxl import save_random_sdxl

    torch.set_num_threads(1)
    return save_random_sdxl(tmp_path_factory.mktemp("tiny-sdxl"), "tiny")


class CountingPipe:
    """Forwards to the real pipeline and counts its calls (a spy, not a stand-in)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.calls = pipe, []  # type: list[int]

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(int(kwargs["image"].shape[0]))
        return self.pipe(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_seed_candidates_of_a_photo_run_as_one_pipeline_call(tiny_sdxl: Path,
                                                             tmp_path: Path) -> None:
    photo = write_photos(tmp_path, "coffee")["coffee"].as_uri()
    enhancer = Enhancer(storage=StoragePolicy(roots=(tmp_path,)), model=str(tiny_sdxl),
                        backend="sdxl", device="cpu", size=64, steps=2, strength=0.5,
                        max_batch=4)
    spy = CountingPipe(enhancer.backend.pipe)
    enhancer.backend.pipe = spy
    try:
        batch = enhancer.enhance_batch(Candidates(n=3, strength_scales=[1.0]).spread(
            {"image_url": photo}))
        pixels = [np.asarray(Image.open(r["enhanced_url"][7:]), np.int16) for r in batch]
        assert spy.calls == [3]
        alone = enhancer.enhance(Candidates(n=3, strength_scales=[1.0]).spread(
            {"image_url": photo})[2])
        assert spy.calls == [3, 1]
    finally:
        enhancer.backend.pipe = spy.pipe
        enhancer.close()
    assert [r["enhancement"]["settings"]["seed"] for r in batch] == [0, 1, 2]
    assert np.abs(pixels[0] - pixels[1]).max() > 2  # another seed, another picture
    one = np.asarray(Image.open(alone["enhanced_url"][7:]), np.int16)
    assert np.abs(pixels[2] - one).max() <= 2  # its own seed, batched or not

"""The food-image mesh end to end (LocalMesh: the real runtime on the embedded queue):
the pillow enhancer, the judge against the fake LLM provider over real HTTP, the review
actor, the upload glue; then decisions resume parked photos, and deadlines expire them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageEnhance

from actors.judge.heuristics import CAST_NOTICED
from asya_agents.fakes import FakeLLMProvider
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.review import DEADLINE_REVIEWER, ReviewService, open_review_store
from asya_agents.testing import LocalMesh
from asya_agents.transports.embedded import EmbeddedTransport
from tests.actors import spoiled
from tests.actors.conftest import Clock
from tests.conftest import ROOT

MESH = ROOT / "mesh" / "food-image"

# What the fake judge model answers, by the photo named in the request.
ANSWERS = {
    "good": {"score": 0.92, "verdict": "accept", "reasons": ["appetising"]},
    "meh": {"score": 0.65, "verdict": "uncertain", "reasons": ["a little flat"]},
    "bad": {"score": 0.2, "verdict": "reject", "reasons": ["far too dark"],
            "defects": ["underexposed"]},
}

# litellm keeps its HTTP clients in a module-level cache and never closes them; the
# sockets it leaves behind are collected in whichever test runs next.
pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]



def fake_judge(request: dict[str, Any]) -> str:
    texts = [part.get("text", "") for m in request["messages"] if isinstance(m["content"], list)
             for part in m["content"]]
    for name, answer in ANSWERS.items():
        if f"photo: {name}" in "\n".join(texts):
            return json.dumps(answer)
    return "no photo named in the request"


@pytest.fixture(scope="module")
def dull_photo() -> Image.Image:
    from skimage import data

    return ImageEnhance.Brightness(Image.fromarray(data.coffee())).enhance(0.5)


@pytest.fixture
def photo_urls(tmp_path: Path, dull_photo: Image.Image) -> dict[str, str]:
    folder = tmp_path / "in"
    folder.mkdir()
    urls = {}
    for name in ANSWERS:
        path = folder / f"{name}.png"
        dull_photo.save(path)
        urls[name] = path.as_uri()
    return urls


@pytest.fixture
def provider() -> Iterator[FakeLLMProvider]:
    with FakeLLMProvider(responder=fake_judge) as llm:
        yield llm


def food_mesh(tmp_path: Path, *, judge: dict[str, Any],
              review: dict[str, Any] | None = None,
              enhance: dict[str, Any] | None = None) -> LoadedMesh:
    loaded = load_mesh(MESH)
    loaded.mesh.spec.storage.roots.append(str(tmp_path))  # the photos and the output
    loaded.actors["upload"].spec.config["output"] = (tmp_path / "accepted").as_uri()
    loaded.actors["judge"].spec.config.update(judge)
    loaded.actors["review"].spec.config.update(review or {})
    loaded.actors["enhance"].spec.config.update(enhance or {})
    return loaded


def llm_config(provider: FakeLLMProvider) -> dict[str, Any]:
    return {"backend": "llm", "model": "openai/fake-judge", "api_base": provider.base_url,
            "api_key": "test-key", "max_loops": 2}


def service_for(state: Path, mesh: LocalMesh) -> ReviewService:
    """What the review console builds: its own connections to the mesh's state."""
    return ReviewService(open_review_store(None, state_dir=state),
                         EmbeddedTransport(state / "queues.db"), mesh.store, mesh="food-image")


def prompts_naming(provider: FakeLLMProvider, name: str) -> int:
    return sum(f"photo: {name}" in json.dumps(r["messages"]) for r in provider.requests)


@pytest.mark.slow
def test_accept_upload_review_and_bounded_loops_then_decisions(
        tmp_path: Path, photo_urls: dict[str, str], provider: FakeLLMProvider) -> None:
    state = tmp_path / "state"
    loaded = food_mesh(tmp_path, judge=llm_config(provider))
    with LocalMesh(loaded, state_dir=state) as mesh:
        service = service_for(state, mesh)
        ids = {name: mesh.send({"image_url": url, "photo": name})
               for name, url in photo_urls.items()}
        # "paused" is recorded just before the item is parked: wait for both
        mesh.join(timeout=90, settle=lambda: len(service.store.pending()) == 2)

        # accepted: enhanced, judged once, copied to the output
        good = mesh.result(ids["good"])
        assert good.status == "succeeded"
        assert good.route["prev"] == ["enhance", "judge", "upload"]
        uploaded = Path(good.payload["uploaded_url"].removeprefix("file://"))
        assert uploaded.parent == tmp_path / "accepted" and uploaded.is_file()
        # uncertain: waits in review, shown as paused
        meh = mesh.result(ids["meh"])
        assert (meh.status, meh.route["curr"]) == ("paused", "review")
        # rejected: looped max_loops times with brighter settings, then review
        bad = mesh.result(ids["bad"])
        assert bad.status == "paused"
        assert bad.route["prev"] == ["enhance", "judge"] * 3
        assert bad.payload["judge_loops"] == 2
        assert [h["verdict"] for h in bad.payload["judge_history"]] == ["reject"] * 3
        assert bad.payload["enhance_settings"]["exposure"] == pytest.approx(0.46 + 2 * 0.08)
        assert prompts_naming(provider, "bad") == 3
        assert not (tmp_path / "accepted" / "bad.enhanced.png").exists()

        assert [i.id for i in service.store.pending()] == [ids["meh"], ids["bad"]]

        # When a reviewer approves "meh" it goes on to upload, once
        assert service.decide(ids["meh"], decision="approve", reviewer="ana").won
        mesh.join([ids["meh"]], timeout=30)
        assert mesh.result(ids["meh"]).status == "succeeded"
        assert (tmp_path / "accepted" / "meh.enhanced.png").is_file()

        # When "bad" is sent back with notes, enhance reads them and it is judged again
        service.decide(ids["bad"], decision="send_back", reviewer="bo", notes="brighter")
        mesh.join([ids["bad"]], timeout=30, settle=lambda: getattr(
            service.store.get(ids["bad"]), "status", "") == "pending")
        again = mesh.result(ids["bad"])
        assert again.status == "paused"  # still rejected, loops spent: back in review
        assert again.payload["review_notes"] == "brighter"
        assert prompts_naming(provider, "bad") == 4
        item = service.store.get(ids["bad"])
        assert item is not None and item.status == "pending" and item.round == 9

        # When it is rejected, it ends in error-end with the reviewer's reason
        service.decide(ids["bad"], decision="reject", reviewer="bo", notes="unusable")
        mesh.join([ids["bad"]], timeout=30)
        final = mesh.result(ids["bad"])
        assert final.status == "failed"
        assert final.error is not None and final.error["message"] == \
               "rejected in review by bo: unusable"
        assert [(r.reviewer, r.decision) for r in service.store.history()] == \
               [("bo", "reject"), ("bo", "send_back"), ("ana", "approve")]
        service.close()


@pytest.mark.slow
def test_a_cast_is_fixed_and_uploaded_and_one_still_cast_waits_for_a_person(
        tmp_path: Path) -> None:
    # Given two cast photos, one the white balance can fix and one it cannot, and the
    # mesh as it runs with no API key: the pillow enhancer and the heuristic judge
    folder = tmp_path / "in"
    folder.mkdir()
    urls = {}
    for name, spoil in (("shade", spoiled.blue_cast), ("night", spoiled.strong_blue_cast)):
        spoil(spoiled.coffee()).save(folder / f"{name}.png")
        urls[name] = (folder / f"{name}.png").as_uri()
    state = tmp_path / "state"
    loaded = food_mesh(tmp_path, judge={"backend": "heuristic", "max_loops": 2})
    with LocalMesh(loaded, state_dir=state) as mesh:
        reviews = open_review_store(None, state_dir=state)
        ids = {name: mesh.send({"image_url": url, "photo": name}) for name, url in urls.items()}
        # When both have gone through ("paused" is recorded just before parking)
        mesh.join(timeout=90, settle=lambda: len(reviews.pending()) == 1)
        shade, night = mesh.result(ids["shade"]), mesh.result(ids["night"])
        parked = [i.id for i in reviews.pending()]
        reviews.close()
    # Then the fixable one was accepted at the first pass and uploaded
    assert shade.status == "succeeded", shade.payload["verdict"]
    assert shade.route["prev"] == ["enhance", "judge", "upload"]
    assert shade.payload["verdict"]["stats"]["cast"] < CAST_NOTICED
    assert (tmp_path / "accepted" / "shade.enhanced.png").is_file()
    # And the one still visibly cast went to review, with the cast named, never uploaded
    assert (night.status, night.route["curr"], parked) == ("paused", "review", [ids["night"]])
    verdict = night.payload["verdict"]
    assert "colour_cast" in verdict["defects"]
    assert any(r.startswith("colour cast (blue)") for r in verdict["reasons"]), verdict
    assert night.payload["enhance_settings"]["white_balance"] == pytest.approx(0.9)
    assert not (tmp_path / "accepted" / "night.enhanced.png").exists()


@pytest.mark.slow
def test_an_overdue_review_is_decided_by_its_deadline(
        tmp_path: Path, photo_urls: dict[str, str], provider: FakeLLMProvider) -> None:
    clock = Clock()
    state = tmp_path / "state"
    loaded = food_mesh(tmp_path, judge=llm_config(provider),
                       review={"deadline": "1h", "deadline_action": "approve",
                               "sweep_interval": 0.05})
    with LocalMesh(loaded, state_dir=state, clock=clock) as mesh:
        reviews = open_review_store(None, state_dir=state)
        env_id = mesh.send({"image_url": photo_urls["meh"], "photo": "meh"})
        mesh.join(timeout=60, settle=lambda: len(reviews.pending()) == 1)
        assert mesh.result(env_id).status == "paused"
        clock.advance(3601)
        mesh.join([env_id], timeout=30,
                  settle=lambda: getattr(mesh.store.get(env_id), "status", "") == "succeeded")
        record = mesh.result(env_id)
        assert record.payload["review"]["reviewer"] == DEADLINE_REVIEWER
        assert record.route["prev"] == ["enhance", "judge", "review", "upload"]
        assert reviews.pending() == []
        reviews.close()


@pytest.mark.slow
# diffusers' scheduler calls np.array on a tensor in the way numpy 2 deprecates.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_one_photo_through_the_mesh_with_a_tiny_sdxl_pipeline(
        tmp_path: Path, photo_urls: dict[str, str], provider: FakeLLMProvider) -> None:
    # A random-weight SDXL img2img pipeline saved in diffusers layout, loaded through the
    # real from_pretrained path by the enhance actor (no download, CPU).
    pytest.importorskip("diffusers")
    from actors.enhance.random_sdxl import save_random_sdxl

    model = save_random_sdxl(tmp_path / "tiny-sdxl", "tiny")
    loaded = food_mesh(tmp_path, judge=llm_config(provider), enhance={
        "backend": "sdxl", "model": str(model), "local_files_only": True, "device": "cpu",
        "size": 64, "steps": 2, "strength": 0.5, "max_batch": 4})
    with LocalMesh(loaded, state_dir=tmp_path / "state") as mesh:
        env_id = mesh.send({"image_url": photo_urls["good"], "photo": "good"})
        mesh.join(timeout=90)
        record = mesh.result(env_id)
    assert record.status == "succeeded", record.error
    assert record.payload["enhancement"]["backend"] == "sdxl"
    assert Path(record.payload["uploaded_url"].removeprefix("file://")).is_file()

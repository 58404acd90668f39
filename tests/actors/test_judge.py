"""The judge template: heuristics on real photographs, route rewrites, and the LLM
backend against the local OpenAI-compatible fake provider over real HTTP."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from actors.judge.handler import Judge, VerdictError
from actors.judge.heuristics import CAST_NOTICED, score_image, score_text
from asya_agents.fakes import FakeLLMProvider
from tests.actors import spoiled

# litellm keeps its HTTP clients in a module-level cache and never closes them; the
# sockets it leaves behind are collected in whichever test runs next.
pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]



def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())


def dark(img: Image.Image) -> Image.Image:
    return Image.fromarray((np.asarray(img) * 0.3).astype("uint8"))


def envelope(payload: dict[str, Any], nxt: list[str] | None = None) -> dict[str, Any]:
    return {"id": "e1", "route": {"prev": ["enhance"], "curr": "judge",
                                  "next": ["upload"] if nxt is None else nxt},
            "headers": {}, "payload": payload}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory, coffee: Image.Image) -> dict[str, str]:
    """file:// URLs of the original, a good enhancement, and poor ones."""
    tmp_path = tmp_path_factory.mktemp("photos")
    urls = {}
    for name, img in (("original", coffee), ("good", coffee.filter(ImageFilter.DETAIL)),
                      ("dark", dark(coffee)), ("blurred", coffee.filter(
                          ImageFilter.GaussianBlur(4)))):
        path = tmp_path / f"{name}.png"
        path.write_bytes(png(img))
        urls[name] = path.as_uri()
    return urls


@pytest.fixture(autouse=True)
def blob_roots(monkeypatch: pytest.MonkeyPatch,
               tmp_path_factory: pytest.TempPathFactory) -> None:
    """A judge built outside a mesh reads within ASYA_BLOB_ROOTS: pytest's folders."""
    monkeypatch.setenv("ASYA_BLOB_ROOTS", str(tmp_path_factory.getbasetemp()))


# -- heuristics ---------------------------------------------------------------------------


def test_heuristics_prefer_a_good_photo_and_name_the_defects(coffee: Image.Image) -> None:
    original = png(coffee)
    good = score_image(png(coffee.filter(ImageFilter.DETAIL)), original)
    too_dark = score_image(png(dark(coffee)), original)
    blurred = score_image(png(coffee.filter(ImageFilter.GaussianBlur(4))), original)
    assert good.score >= 0.8 and not good.defects
    assert too_dark.score < 0.6 and "underexposed" in too_dark.defects
    assert blurred.score < good.score and "blurry" in blurred.defects
    unchanged = score_image(original, original)
    assert "unchanged" in unchanged.defects


def test_text_heuristics_reward_a_full_answer_on_topic() -> None:
    question = "Why does bread dough rise before baking?"
    full = score_text(question, "Bread dough rise comes from yeast: it ferments sugars "
                                "and releases carbon dioxide, which the gluten network "
                                "traps, so the dough expands before baking sets it.")
    short = score_text(question, "Yeast.")
    assert full.score > 0.8 and not full.defects
    assert short.score < 0.5 and "too_short" in short.defects


# -- what a person sees: casts, clipping, saturation -----------------------------------------


@pytest.mark.parametrize(("spoil", "hue"), [(spoiled.blue_cast, "blue"),
                                            (spoiled.green_cast, "green"),
                                            (spoiled.magenta_cast, "magenta")])
def test_a_colour_cast_is_measured_named_and_scored_below_accept(
        coffee: Image.Image, spoil: Any, hue: str) -> None:
    # Given the coffee photo as shot, and with a cast over the whole plate
    shot, cast = score_image(png(coffee)), score_image(png(spoil(coffee)))
    # Then the as-shot cup reads neutral-warm, and the cast is measured on it
    assert shot.stats["cast"] == 0 and not shot.defects and shot.score >= 0.8
    assert cast.stats["cast"] > 2 * CAST_NOTICED
    # And it is named by its direction, with a score a person would give: not accepted
    assert "colour_cast" in cast.defects
    assert any(r.startswith(f"colour cast ({hue})") for r in cast.reasons), cast.reasons
    assert cast.score < 0.6


def test_food_may_look_warm_without_being_called_cast(coffee: Image.Image) -> None:
    scored = score_image(png(spoiled.warmer(coffee)))
    assert "colour_cast" not in scored.defects and scored.score >= 0.8


def test_a_desaturated_photo_is_dull_and_below_accept(coffee: Image.Image) -> None:
    scored = score_image(png(spoiled.desaturated(coffee)))
    assert scored.defects == ["dull_colours"]
    assert scored.reasons[0].startswith("desaturated / dull colours")
    assert scored.score < 0.8


def test_over_saturation_and_blown_highlights_are_both_seen(coffee: Image.Image) -> None:
    spoilt = spoiled.over_saturated_blown(coffee)
    scored = score_image(png(spoilt))
    assert {"over_saturated", "blown_highlights"} <= set(scored.defects)
    assert scored.stats["clipped"] > 0.5  # a channel at 250+ on most of the photo
    assert scored.score < 0.5
    # a tone curve that pulls the blown areas down to light gray brings no detail back
    dimmed = Image.fromarray((np.asarray(spoilt) * 0.88).astype("uint8"))
    assert "blown_highlights" in score_image(png(dimmed)).defects


# -- routing ------------------------------------------------------------------------------


def test_accept_keeps_the_route(photos: dict[str, str]) -> None:
    judge = Judge(backend="heuristic")
    out = judge.judge(envelope({"image_url": photos["original"],
                                "enhanced_url": photos["good"]}))
    assert out["route"]["next"] == ["upload"]
    assert out["payload"]["verdict"]["verdict"] == "accept"
    assert out["payload"]["verdict"]["backend"] == "heuristic"
    assert out["payload"]["judge_history"] == [
        {"score": out["payload"]["verdict"]["score"], "verdict": "accept"}]


def test_reject_loops_back_with_adjusted_settings_until_the_limit(
        photos: dict[str, str]) -> None:
    judge = Judge(backend="heuristic", max_loops=2)
    used = {"exposure": 0.46, "contrast": 1.12, "saturation": 1.25, "prompt": "food"}
    env = envelope({"image_url": photos["original"], "enhanced_url": photos["dark"],
                    "enhancement": {"settings": used}})
    first = judge.judge(env)
    assert first["route"]["next"] == ["enhance", "judge", "upload"]
    assert first["payload"]["judge_loops"] == 1
    # one step per defect, on what the enhancer used; nothing it did not report
    settings = first["payload"]["enhance_settings"]
    assert settings["exposure"] == pytest.approx(0.54)
    assert settings["contrast"] == pytest.approx(1.24)
    assert "sharpen" not in settings and "prompt" not in settings
    second = judge.judge(envelope(first["payload"]))
    assert second["payload"]["enhance_settings"]["exposure"] == pytest.approx(0.62)
    assert second["payload"]["judge_loops"] == 2
    # the loop limit is reached: a person decides
    third = judge.judge(envelope(second["payload"]))
    assert third["route"]["next"] == ["review", "upload"]
    assert third["payload"]["verdict"]["verdict"] == "reject"
    assert "2 loop(s)" in third["payload"]["verdict"]["reasons"][-1]
    assert len(third["payload"]["judge_history"]) == 3


def test_uncertain_goes_to_review_first(photos: dict[str, str]) -> None:
    # a photo two stops under scores about 0.17: between these thresholds
    judge = Judge(backend="heuristic", accept=0.8, reject=0.1)
    out = judge.judge(envelope({"image_url": photos["original"],
                                "enhanced_url": photos["dark"]}))
    assert 0.1 <= out["payload"]["verdict"]["score"] < 0.8
    assert out["route"]["next"] == ["review", "upload"]
    assert out["payload"]["verdict"]["verdict"] == "uncertain"


def test_a_heuristic_score_with_a_visible_defect_is_not_accepted(
        photos: dict[str, str], coffee: Image.Image,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    # Given a blue-cast photo, and thresholds so low that its score passes them
    path = tmp_path_factory.mktemp("cast") / "blue.png"
    path.write_bytes(png(spoiled.blue_cast(coffee)))
    judge = Judge(backend="heuristic", accept=0.3, reject=0.1)
    # When the heuristic judge scores it
    out = judge.judge(envelope({"image_url": photos["original"],
                                "enhanced_url": path.as_uri()}))
    # Then the cast it named keeps it from upload: a person decides
    verdict = out["payload"]["verdict"]
    assert verdict["score"] >= 0.3 and verdict["verdict"] == "uncertain"
    assert out["route"]["next"] == ["review", "upload"]
    assert "accepted by score, but colour_cast: a person decides" in verdict["reasons"]


def test_the_new_defects_adjust_the_enhancer_both_ways() -> None:
    used = {"exposure": 0.46, "saturation": 1.25, "white_balance": 0.5}
    settings = Judge(backend="heuristic").adjust(
        {"enhancement": {"settings": used}},
        ["over_saturated", "blown_highlights", "colour_cast"])
    assert settings == {"saturation": pytest.approx(1.05), "exposure": pytest.approx(0.40),
                        "white_balance": pytest.approx(0.7)}


def test_bad_config_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="reject <= accept"):
        Judge(backend="heuristic", accept=0.4, reject=0.6)
    with pytest.raises(ValueError, match="backend must be"):
        Judge(backend="gpt")
    with pytest.raises(ValueError, match="max_loops"):
        Judge(backend="heuristic", max_loops=-1)


def test_missing_image_url_names_the_key(photos: dict[str, str]) -> None:
    with pytest.raises(KeyError, match="enhanced_url"):
        Judge(backend="heuristic").judge(envelope({"image_url": photos["original"]}))


# -- the LLM backend over real HTTP ---------------------------------------------------------


def llm_judge(provider: FakeLLMProvider, **config: Any) -> Judge:
    return Judge(backend="llm", model="openai/fake-judge", api_base=provider.base_url,
                 api_key="test-key", **config)


def test_a_vision_model_sees_both_images_and_its_verdict_routes(
        photos: dict[str, str]) -> None:
    answer = {"score": 0.65, "verdict": "uncertain", "reasons": ["a little dark"],
              "defects": ["underexposed"]}
    with FakeLLMProvider(responder=lambda req: json.dumps(answer)) as provider:
        out = llm_judge(provider).judge(envelope({"image_url": photos["original"],
                                                  "enhanced_url": photos["dark"]}))
        [request] = provider.requests
    assert out["route"]["next"] == ["review", "upload"]
    verdict = out["payload"]["verdict"]
    assert (verdict["score"], verdict["backend"], verdict["model"]) == \
           (0.65, "llm", "openai/fake-judge")
    assert verdict["defects"] == ["underexposed"]
    images = [part["image_url"]["url"] for part in request["messages"][1]["content"]
              if part["type"] == "image_url"]
    assert len(images) == 2 and all(u.startswith("data:image/jpeg;base64,") for u in images)
    assert request["model"] == "fake-judge"
    assert request["messages"][0]["role"] == "system"


def test_a_text_only_model_gets_statistics_and_fenced_json_is_read(
        photos: dict[str, str]) -> None:
    reply = '```json\n{"score": 0.9, "verdict": "accept", "reasons": ["ok"]}\n```'
    with FakeLLMProvider(responder=lambda req: reply) as provider:
        out = llm_judge(provider, vision=False).judge(
            envelope({"image_url": photos["original"], "enhanced_url": photos["good"]}))
        [request] = provider.requests
    assert out["route"]["next"] == ["upload"]
    [part] = request["messages"][1]["content"]
    assert part["type"] == "text" and "sharpness" in part["text"]


@pytest.mark.parametrize(("reply", "problem"), [
    ("I think it looks great!", "without a JSON object"),
    ('{"score": 1.7, "verdict": "accept"}', "score: Input should be less than or equal to 1"),
    ('{"score": 0.5, "verdict": "maybe"}', "verdict: Input should be"),
    ('{"score": 0.5,,}', "invalid JSON"),
])
def test_an_answer_that_is_not_a_verdict_is_an_error(photos: dict[str, str], reply: str,
                                                     problem: str) -> None:
    with FakeLLMProvider(responder=lambda req: reply) as provider, \
            pytest.raises(VerdictError, match=problem) as info:
        llm_judge(provider).judge(envelope({"image_url": photos["original"],
                                            "enhanced_url": photos["good"]}))
    assert "openai/fake-judge" in str(info.value)


def test_a_rate_limit_is_raised_once_not_retried(photos: dict[str, str]) -> None:
    import litellm

    with FakeLLMProvider(rate=1, burst=1) as provider:
        judge = llm_judge(provider)
        env = envelope({"image_url": photos["original"], "enhanced_url": photos["good"]})
        judge.judge(env)
        with pytest.raises(litellm.RateLimitError) as info:
            judge.judge(env)
        assert provider.stats.requests == 2  # no hidden retry inside the handler
    assert info.value.status_code == 429


def test_text_mode_judges_an_answer_and_loops_to_the_answerer() -> None:
    with FakeLLMProvider(responder=lambda req: json.dumps(
            {"score": 0.2, "verdict": "reject", "reasons": ["wrong"],
             "defects": ["wrong"]})) as provider:
        judge = llm_judge(provider, mode="text")
        out = judge.judge(envelope({"question": "2+2?", "answer": "5"}, nxt=[]))
        [request] = provider.requests
    assert out["route"]["next"] == ["answer", "judge"]
    assert out["payload"]["judge_feedback"] == ["wrong", "defect: wrong"]
    assert "enhance_settings" not in out["payload"]
    assert "Answer: 5" in request["messages"][1]["content"][0]["text"]

"""The enhance actor with its CPU backend: a dull photo gets measurably better, a batch
equals its items one by one, and the payload says what was done."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from actors.enhance import pillow_backend
from actors.enhance.handler import Enhancer
from actors.enhance.settings import EnhanceSettings
from actors.judge import heuristics
from asya_agents.errors import BlobNotFound, ConfigError, HandlerError
from asya_agents.settings import BlobSettings
from asya_agents.storage import StoragePolicy
from asya_agents.testing import call_handler
from tests.actors import spoiled
from tests.enhance.conftest import degraded


def luminance(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    return rgb @ np.array([0.299, 0.587, 0.114])


def saturation(image: Image.Image) -> float:
    return float(np.asarray(image.convert("HSV"), dtype=np.float64)[..., 1].mean() / 255.0)


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian: higher is sharper."""
    g = luminance(image)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(lap.var())


def read(url: str) -> Image.Image:
    return Image.open(url.removeprefix("file://")).convert("RGB")


def test_a_dull_photo_gets_brighter_more_saturated_and_sharper(
        tmp_path: Path, storage: StoragePolicy) -> None:
    # Given a darkened, desaturated, blurred photo of a coffee cup
    source = tmp_path / "coffee.jpg"
    dull = degraded(Image.fromarray(data.coffee()))
    dull.save(source, quality=92)
    # When the pillow backend enhances it
    out = Enhancer(storage=storage).enhance({"image_url": source.as_uri(), "id_hint": 7})
    # Then the result lies beside the input and is better in each of the three ways
    assert out["enhanced_url"] == (tmp_path / "coffee.enhanced.png").as_uri()
    after, before = read(out["enhanced_url"]), read(source.as_uri())
    assert after.size == before.size
    assert luminance(after).mean() > luminance(before).mean() + 0.15
    assert saturation(after) > saturation(before) + 0.02
    assert sharpness(after) > 3 * sharpness(before)
    # And the payload keeps its fields and says what was done
    assert out["id_hint"] == 7
    e = out["enhancement"]
    assert e["backend"] == "pillow" and e["attempt"] == 1 and e["batch_size"] == 1
    assert e["settings"]["strength"] == 1.0
    # (no white balance: the photo has no cast; see the colour-cast tests below)
    assert [s.split()[0] for s in e["applied"]] == ["levels", "contrast", "saturation",
                                                   "unsharp"]


def test_a_batch_equals_its_items_one_by_one(photos: list[str],
                                             storage: StoragePolicy) -> None:
    enhancer = Enhancer(storage=storage)
    batch = enhancer.enhance_batch([{"image_url": u} for u in photos])
    batch_pixels = [np.asarray(read(r["enhanced_url"])) for r in batch]
    singles = [enhancer.enhance({"image_url": u}) for u in photos]
    assert [r["enhanced_url"] for r in batch] == [r["enhanced_url"] for r in singles]
    for pixels, single in zip(batch_pixels, singles, strict=True):
        assert np.array_equal(pixels, np.asarray(read(single["enhanced_url"])))
    assert [r["enhancement"]["batch_size"] for r in batch] == [3, 3, 3]


def test_judge_overrides_make_a_stronger_pass_and_count_attempts(
        photos: list[str], storage: StoragePolicy) -> None:
    # Given an image enhanced once with the defaults
    enhancer = Enhancer(storage=storage)
    first = enhancer.enhance({"image_url": photos[0]})
    mild = read(first["enhanced_url"])
    # When the judge sends it back asking for more strength
    again = enhancer.enhance({**first, "enhance_settings": {"strength": 1.6}})
    strong = read(again["enhanced_url"])
    original = np.asarray(read(photos[0]), dtype=np.float64)
    # Then it moved further from the original, and the attempt count went up
    change = [np.abs(np.asarray(im, dtype=np.float64) - original).mean() for im in (mild, strong)]
    assert change[1] > change[0] + 2
    assert saturation(strong) > saturation(mild) and sharpness(strong) > sharpness(mild)
    assert again["enhancement"]["settings"]["strength"] == 1.6
    assert again["enhancement"]["attempt"] == 2


def test_review_notes_adjust_the_settings(photos: list[str], storage: StoragePolicy) -> None:
    out = Enhancer(storage=storage).enhance({"image_url": photos[1],
                                             "review_notes": "Still too dark and a bit blurry."})
    e = out["enhancement"]
    assert e["settings"]["exposure"] == pytest.approx(0.54)
    assert e["settings"]["sharpen"] == 120.0
    assert "exposure 0.46 -> 0.54" in e["review_notes_applied"]


def test_bad_payloads_are_errors_that_say_what_is_wrong(photos: list[str],
                                                       tmp_path: Path,
                                                       storage: StoragePolicy) -> None:
    enhancer = Enhancer(storage=storage)
    with pytest.raises(ValueError, match="needs an 'image_url'"):
        enhancer.enhance({"url": photos[0]})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['strenght'\]"):
        enhancer.enhance({"image_url": photos[0], "enhance_settings": {"strenght": 2}})
    missing = (tmp_path / "gone.jpg").as_uri()
    with pytest.raises(BlobNotFound, match=re.escape(missing)):
        enhancer.enhance({"image_url": missing})
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(Exception, match="not a readable image"):
        enhancer.enhance({"image_url": text.as_uri()})


def test_bad_config_fails_at_startup_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="backend must be 'pillow' or 'sdxl'"):
        Enhancer(backend="gan")
    with pytest.raises(ConfigError, match=re.escape("output_suffix '.enhanced.gif'")):
        Enhancer(output_suffix=".enhanced.gif")
    with pytest.raises(HandlerError, match=re.escape("does not accept spec.config")):
        call_handler("actors.enhance.handler.Enhancer.enhance", {}, config={"colour": 1})


def test_s3_in_and_a_separate_output_location(s3_settings: BlobSettings, bucket: str,
                                              photos: list[str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              storage: StoragePolicy) -> None:
    # Given a photo in a bucket and an actor configured (by environment) for that S3
    for key, value in {"ENDPOINT_URL": s3_settings.endpoint_url, "ACCESS_KEY_ID": "testing",
                       "SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(f"ASYA_S3_{key}", str(value))
    from asya_agents import blob

    blob.copy(photos[0], f"s3://{bucket}/in/coffee.jpg", settings=s3_settings, policy=storage)
    enhancer = Enhancer(output_location=f"s3://{bucket}/enhanced", output_suffix=".e.jpg",
                        storage=storage)
    # When it is enhanced
    out = enhancer.enhance({"image_url": f"s3://{bucket}/in/coffee.jpg"})
    # Then the JPEG lands under the output prefix
    assert out["enhanced_url"] == f"s3://{bucket}/enhanced/coffee.e.jpg"
    data_ = blob.read_bytes(out["enhanced_url"], settings=s3_settings, policy=storage)
    assert data_[:3] == b"\xff\xd8\xff"
    enhancer.close()


# -- colour: white balance, saturation both ways, highlights --------------------------------

PILLOW = EnhanceSettings(strength=1.0)  # what the actor's pillow backend runs by default


def enhanced(image: Image.Image, settings: EnhanceSettings = PILLOW) -> tuple[Image.Image,
                                                                              list[str]]:
    return pillow_backend.enhance_image(image, settings)


def judged(image: Image.Image, original: Image.Image | None = None) -> heuristics.Scored:
    return heuristics.score_image(spoiled.png(image),
                                  None if original is None else spoiled.png(original))


def delta_e(one: Image.Image, other: Image.Image) -> float:
    """Mean CIELAB ΔE*ab between two photos, pixel by pixel."""
    lab = [heuristics.srgb_to_lab(np.asarray(im, dtype=np.float32) / 255) for im in (one, other)]
    return float(np.linalg.norm(lab[0] - lab[1], axis=-1).mean())


def test_the_enhancer_and_the_judge_agree_on_what_warm_is() -> None:
    assert pillow_backend.WARM_BOX == heuristics.WARM_BOX


def test_a_blue_cast_is_removed(coffee: Image.Image) -> None:
    # Given the coffee photo with a blue cast the judge measures
    cast = spoiled.blue_cast(coffee)
    assert judged(cast).stats["cast"] > heuristics.CAST_STRONG * 0.9
    # When the pillow backend enhances it
    fixed, steps = enhanced(cast)
    # Then the cast is gone as the judge measures it, and the photo is accepted
    after = judged(fixed, cast)
    assert after.stats["cast"] < heuristics.CAST_NOTICED
    assert not after.defects and after.score >= 0.8
    assert steps[0].startswith("white balance gains")
    # And, measured against the photo as shot, the colours came most of the way back
    shot, _ = enhanced(coffee)
    assert delta_e(fixed, shot) < 0.5 * delta_e(cast, coffee)


def test_a_cast_past_the_gain_limit_stays_visible(coffee: Image.Image) -> None:
    # Given a blue so strong that the blue channel clipped on the cup
    cast = spoiled.strong_blue_cast(coffee)
    # When it is enhanced: the gains are clamped, the implausible white half trusted
    fixed, steps = enhanced(cast)
    gains = [float(g) for g in re.findall(r"[\d.]+", steps[0].split("(")[0])]
    assert max(gains) <= pillow_backend.MAX_GAIN and min(gains) >= 1 / pillow_backend.MAX_GAIN
    # Then the judge still sees a blue cast: this one is for a person
    after = judged(fixed, cast)
    assert after.stats["cast"] > heuristics.CAST_STRONG
    assert any(r.startswith("colour cast (blue)") for r in after.reasons)


def test_a_warm_photo_is_kept_warm_unless_asked_for_neutral(coffee: Image.Image) -> None:
    # At the default white_balance (0.5) the as-shot, warm-lit cup is left alone ...
    _, steps = enhanced(coffee)
    assert not any(s.startswith("white balance") for s in steps)
    # ... and at 1.0 (where the judge's colour_cast steps lead) it goes neutral
    neutral, steps = enhanced(coffee, EnhanceSettings(strength=1.0, white_balance=1.0))
    assert steps[0].startswith("white balance gains")
    assert abs(judged(neutral).stats["cast_b"]) < 2 < judged(coffee).stats["cast_b"]


def test_saturation_is_raised_on_a_dull_photo(coffee: Image.Image) -> None:
    dull = spoiled.desaturated(coffee)
    fixed, steps = enhanced(dull)
    before, after = judged(dull), judged(fixed, dull)
    assert before.defects == ["dull_colours"] and before.score < 0.8
    assert after.stats["chroma"] > 2 * before.stats["chroma"]
    assert not after.defects and after.score >= 0.8
    assert any(s.startswith("saturation x2") for s in steps)


def test_saturation_is_lowered_and_highlights_compressed_when_overdone(
        coffee: Image.Image) -> None:
    # Given an over-saturated, overexposed photo
    loud = spoiled.over_saturated_blown(coffee)
    before = judged(loud)
    # When it is enhanced
    fixed, steps = enhanced(loud)
    after = judged(fixed, loud)
    # Then saturation went down, and no colour is clipped in a channel any more
    assert any(s.startswith("saturation x0.") for s in steps)
    assert "highlights compressed" in steps[0]
    assert after.stats["chroma"] < 0.75 * before.stats["chroma"]
    assert after.stats["clipped"] < 0.05 < 0.5 < before.stats["clipped"]
    assert "over_saturated" not in after.defects and after.score > before.score
    # But the detail the overexposure took is not invented: the judge still sees it
    assert after.defects == ["blown_highlights"] and after.score < 0.8


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return spoiled.coffee()


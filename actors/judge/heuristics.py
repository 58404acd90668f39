"""Scoring without a model: what a person sees in a food photo, measured.

Used when no LLM key is set (the demo, CI, a first deployment), and given to a text-only
LLM as evidence. Each measure becomes a 0..1 sub-score (1: nothing to see) and, when a
person would notice it, a named *defect* that the judge turns into adjusted enhancement
settings (and that keeps the photo from being accepted unseen):

- sharpness: variance of the Laplacian of the luminance, relative to the image's own
  contrast (so a dark but sharp photo is not called blurry) → ``blurry``;
- exposure: mean luminance → ``underexposed`` / ``overexposed``; contrast: its spread
  → ``low_contrast``;
- clipping: the share of pixels with a channel at 250 or more (reported), and *blown*
  regions: bright areas with no detail left in two channels or more (flat over a 5x5
  neighbourhood: a single specular glint does not count, and a blown area that a tone
  curve pulled down to light gray still does) → ``blown_highlights``; black ones
  likewise → ``crushed_shadows``;
- saturation: the mean and 95th-percentile CIELAB chroma C*, and the share of pixels
  whose colour is pinned at the gamut edge (one channel clipped in a saturated colour)
  → ``dull_colours`` / ``over_saturated``;
- colour cast: the chromaticity of the plate's neutral surfaces, measured as a white
  patch (the mean CIELAB a*, b* of the brightest 5% of the pixels: cups, plates, the
  cloth; gray world over a plate of food would measure the food), and its distance
  from :data:`WARM_BOX` (food may look warm) → ``colour_cast``, named by direction in
  the reason, e.g. "colour cast (blue)";
- change from the original: an enhancement that changed nothing (mean difference), or
  one that changed the dish itself (low correlation of the luminance: tone and colour
  corrections keep it high, a new picture does not).

The score is a product: each defect takes off up to its weight (blur 0.65, a cast 0.6,
…), so defects compound the way they do for a viewer, and a photo with one defect at
full strength lands below the template's ``accept: 0.8`` (and a named one never
passes as an accept: :data:`VISIBLE_DEFECTS`). Blur weighs most: it is the one defect
a classical enhancer cannot repair, so a badly blurred photo is rejected rather than
waved through on good colours.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["CAST_NOTICED", "CAST_STRONG", "VISIBLE_DEFECTS", "WARM_BOX", "ImageStats", "Scored",
           "cast_excess", "cast_name",
           "image_stats", "score_image", "score_text", "srgb_to_lab"]

MAX_SIDE = 384

#: The chromaticity (CIELAB a*, b*) of neutral surfaces that reads as *not cast*. Food
#: is shot warm and looks right warm: the as-shot coffee photo's white cup measures
#: a* +2, b* +9, and a photographer's "warm" white balance ends near b* +30. Warm light
#: is orange, so a little red comes with it (a* up to 3 + 0.35 b*); pink, cold and
#: green whites have no such licence: a few units past neutral. Distances outside the
#: box are the cast (in ΔE*ab units: about 2 is just noticeable side by side; in a
#: single photo, with nothing to compare, a tint of about 10 on the whites is what
#: people call a cast).
WARM_BOX = {"a_min": -3.0, "a_max": 3.0, "a_max_per_b": 0.35, "b_min": -3.0, "b_max": 30.0}
CAST_NOTICED, CAST_STRONG = 6.0, 16.0  # the cast sub-score falls from 1 to 0 between

#: Defects a person sees in the photo itself: a heuristic verdict with one of these is
#: never an accept (actors/judge/handler.py). ``unchanged`` is not one of them: an
#: as-shot photo that needed nothing is fine.
VISIBLE_DEFECTS = frozenset({
    "blurry", "underexposed", "overexposed", "low_contrast", "colour_cast",
    "blown_highlights", "crushed_shadows", "dull_colours", "over_saturated",
    "over_processed"})

_SRGB_TO_XYZ = ((0.4124, 0.3576, 0.1805), (0.2126, 0.7152, 0.0722),
                (0.0193, 0.1192, 0.9505))
_D65 = (0.95047, 1.0, 1.08883)


@dataclass
class ImageStats:
    sharpness: float
    brightness: float
    contrast: float
    chroma: float
    chroma_high: float
    cast: float
    cast_a: float
    cast_b: float
    cast_hue: str
    clipped: float
    colour_clipped: float
    blown: float
    crushed: float
    change: float | None = None
    structure: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


@dataclass
class Scored:
    score: float
    reasons: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


# -- colour science ------------------------------------------------------------------------


def srgb_to_lab(rgb: Any) -> Any:
    """CIELAB (D65) of sRGB values in 0..1, shape (..., 3) -> (..., 3)."""
    import numpy as np

    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ np.asarray(_SRGB_TO_XYZ, dtype=np.float32).T / np.asarray(_D65,
                                                                         dtype=np.float32)
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def cast_excess(a: float, b: float) -> tuple[float, float]:
    """How far a neutral surface's (a*, b*) lies outside :data:`WARM_BOX`, per axis."""
    box = WARM_BOX
    b_in = min(max(b, box["b_min"]), box["b_max"])
    a_max = box["a_max"] + box["a_max_per_b"] * max(b_in, 0.0)
    return a - min(max(a, box["a_min"]), a_max), b - b_in


#: The names of a cast by the CIELAB hue angle of the whites (degrees, from +a*).
_HUES = ((60, "red"), (110, "yellow"), (170, "green"), (230, "cyan"), (300, "blue"),
         (350, "magenta"), (360, "red"))


def cast_name(a: float, b: float) -> str:
    """The colour of tinted whites at (a*, b*), in the words a person uses."""
    angle = math.degrees(math.atan2(b, a)) % 360
    return next(name for end, name in _HUES if angle < end)


def _neutral_chromaticity(lab: Any) -> tuple[float, float]:
    """Mean (a*, b*) of the brightest 5% of the pixels (L* above 20): a white patch,
    clipped pixels included, because a viewer sees them too. Food carries its own
    colour; the cup, the plate and the cloth carry the light's."""
    import numpy as np

    lum = lab[..., 0]
    usable = lum > 20
    if usable.sum() < 200:
        return float(lab[..., 1].mean()), float(lab[..., 2].mean())
    bright = usable & (lum >= np.percentile(lum[usable], 95))
    return float(lab[..., 1][bright].mean()), float(lab[..., 2][bright].mean())


def _lost_detail(rgb: Any) -> tuple[Any, Any]:
    """Blown and crushed pixels: at least two channels bright (dark) and flat over a
    5x5 neighbourhood, i.e. no detail left in them. Flatness, not the level, so that
    a blown area pulled down to light gray by a tone curve is still seen as blown, and
    a single specular glint (smaller than the neighbourhood) is not."""
    import numpy as np
    from PIL import Image, ImageFilter

    img = Image.fromarray(np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8))
    spread = (np.asarray(img.filter(ImageFilter.MaxFilter(5)), dtype=np.int16)
              - np.asarray(img.filter(ImageFilter.MinFilter(5)), dtype=np.int16))
    flat = spread <= 1
    blown = (flat & (rgb >= 0.75)).sum(axis=-1) >= 2
    crushed = (flat & (rgb <= 0.04)).all(axis=-1)
    return blown, crushed


# -- statistics ----------------------------------------------------------------------------


def _load(data: bytes) -> Any:
    """An RGB float array in 0..1, at most MAX_SIDE pixels on its long side."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        rgb.thumbnail((MAX_SIDE, MAX_SIDE))
        return np.asarray(rgb, dtype=np.float32) / 255.0


def _laplacian_var(lum: Any) -> float:
    lap = (lum[:-2, 1:-1] + lum[2:, 1:-1] + lum[1:-1, :-2] + lum[1:-1, 2:]
           - 4 * lum[1:-1, 1:-1])
    return float(lap.var())


def image_stats(data: bytes, original: bytes | None = None) -> ImageStats:
    import numpy as np

    rgb = _load(data)
    lum = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    contrast = float(lum.std())
    lab = srgb_to_lab(rgb)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    cast_a, cast_b = _neutral_chromaticity(lab)
    da, db = cast_excess(cast_a, cast_b)
    top, low = rgb.max(axis=-1), rgb.min(axis=-1)
    blown, crushed = _lost_detail(rgb)
    stats = ImageStats(
        sharpness=_laplacian_var(lum) / (contrast ** 2 + 1e-4),
        brightness=float(lum.mean()), contrast=contrast,
        chroma=float(chroma.mean()), chroma_high=float(np.percentile(chroma, 95)),
        cast=math.hypot(da, db), cast_a=cast_a, cast_b=cast_b,
        cast_hue=cast_name(cast_a, cast_b),
        clipped=float((top >= 0.98).mean()),
        colour_clipped=float(((top >= 0.98) & (low < 0.6 * top)).mean()),
        blown=float(blown.mean()), crushed=float(crushed.mean()),
    )
    if original is not None:
        _compare(stats, _load(original), rgb, lum)
    return stats


def _compare(stats: ImageStats, before: Any, rgb: Any, lum: Any) -> None:
    import numpy as np

    if before.shape != rgb.shape:
        from PIL import Image

        img = Image.fromarray((before * 255).astype("uint8"))
        before = np.asarray(img.resize((rgb.shape[1], rgb.shape[0])),
                            dtype=np.float32) / 255.0
    stats.change = float(np.abs(before - rgb).mean())
    lum_before = before @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    stats.structure = float(np.corrcoef(lum_before.ravel(), lum.ravel())[0, 1])


# -- scores --------------------------------------------------------------------------------


def _ramp(value: float, low: float, high: float) -> float:
    """0 at ``low``, 1 at ``high`` (either order), clipped."""
    if high == low:
        return 1.0
    return min(1.0, max(0.0, (value - low) / (high - low)))


#: What each defect can take off the score at full strength.
WEIGHTS = {"blurry": 0.65, "exposure": 0.6, "low_contrast": 0.45, "colour_cast": 0.6,
           "blown_highlights": 0.5, "crushed_shadows": 0.4, "dull_colours": 0.5,
           "over_saturated": 0.5}
VISIBLE_BELOW = 0.5  # a sub-score under this is a defect a person notices


def _subscores(s: ImageStats) -> dict[str, float]:
    return {
        "blurry": _ramp(s.sharpness, 0.02, 0.12),
        "exposure": min(_ramp(s.brightness, 0.15, 0.38), _ramp(s.brightness, 0.85, 0.68)),
        "low_contrast": _ramp(s.contrast, 0.08, 0.2),
        "colour_cast": _ramp(s.cast, CAST_STRONG, CAST_NOTICED),
        "blown_highlights": _ramp(s.blown, 0.06, 0.01),
        "crushed_shadows": _ramp(s.crushed, 0.15, 0.04),
        "dull_colours": max(_ramp(s.chroma, 8.0, 20.0), _ramp(s.chroma_high, 20.0, 38.0)),
        "over_saturated": min(_ramp(s.chroma, 68.0, 55.0), _ramp(s.chroma_high, 100.0, 88.0),
                              _ramp(s.colour_clipped, 0.25, 0.06)),
    }


def _reason(name: str, s: ImageStats) -> tuple[str, str]:
    """The defect's name and what a person would say about it, with the measure."""
    if name == "exposure":
        if s.brightness > 0.6:
            return "overexposed", f"too bright (mean luminance {s.brightness:.2f})"
        return "underexposed", f"too dark (mean luminance {s.brightness:.2f})"
    text = {
        "blurry": f"the plate looks soft or blurred (sharpness {s.sharpness:.3f})",
        "low_contrast": f"flat, low contrast (spread {s.contrast:.2f})",
        "colour_cast": f"colour cast ({s.cast_hue}): neutral surfaces at a* "
                       f"{s.cast_a:+.0f}, b* {s.cast_b:+.0f}, {s.cast:.0f} past neutral",
        "blown_highlights": f"blown highlights: {s.blown:.0%} of the photo is white with "
                            f"no detail ({s.clipped:.0%} of pixels clipped)",
        "crushed_shadows": f"crushed shadows: {s.crushed:.0%} of the photo is black "
                           f"with no detail",
        "dull_colours": f"desaturated / dull colours (chroma {s.chroma:.0f}, "
                        f"95th percentile {s.chroma_high:.0f})",
        "over_saturated": f"over-saturated: {s.colour_clipped:.0%} of pixels clipped in "
                          f"one channel (chroma 95th percentile {s.chroma_high:.0f})",
    }[name]
    return name, text


def score_image(enhanced: bytes, original: bytes | None = None) -> Scored:
    """A 0..1 score of ``enhanced`` (compared with ``original`` when given)."""
    stats = image_stats(enhanced, original)
    subs = _subscores(stats)
    out = Scored(score=0.0, stats={**stats.as_dict(),
                                   "subscores": {k: round(v, 3) for k, v in subs.items()}})
    total = 1.0
    for name, value in subs.items():
        total *= 1.0 - WEIGHTS[name] * (1.0 - value)
        if value < VISIBLE_BELOW:
            defect, reason = _reason(name, stats)
            out.defects.append(defect)
            out.reasons.append(reason)
    if stats.change is not None and stats.change < 0.005:
        total *= 0.85
        out.defects.append("unchanged")
        out.reasons.append("the enhancement barely changed the photo")
    if stats.structure is not None and stats.structure < 0.7:
        total *= 0.6
        out.defects.append("over_processed")
        out.reasons.append(f"the picture itself changed (correlation {stats.structure:.2f})")
    if not out.defects:
        out.reasons.append("well exposed, sharp, true colours")
    out.score = round(min(1.0, max(0.0, total)), 4)
    return out


def score_text(question: str, answer: str) -> Scored:
    """A crude, model-free check of an answer: long enough, on topic, not evasive."""
    words = [w.strip(".,;:!?").lower() for w in answer.split()]
    topic = {w.strip(".,;:!?").lower() for w in question.split() if len(w) > 3}
    overlap = len(topic & set(words)) / max(len(topic), 1)
    length = _ramp(len(words), 3, 25)
    evasive = any(p in answer.lower() for p in ("i don't know", "cannot answer", "not sure"))
    score = 0.5 * length + 0.5 * _ramp(overlap, 0.0, 0.5)
    out = Scored(score=round(score * (0.4 if evasive else 1.0), 4),
                 stats={"words": len(words), "overlap": round(overlap, 3)})
    if length < 0.6:
        out.defects.append("too_short")
        out.reasons.append(f"the answer is short ({len(words)} words)")
    if overlap < 0.3:
        out.defects.append("off_topic")
        out.reasons.append("the answer barely mentions what was asked")
    if evasive:
        out.defects.append("evasive")
        out.reasons.append("the answer does not commit to one")
    if not out.defects:
        out.reasons.append("a full answer on the question's topic")
    return out

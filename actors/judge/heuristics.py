"""Scoring without a model: image statistics, and a crude text check.

Used when no LLM key is set (the demo, CI, a first deployment), and given to a text-only
LLM as evidence. Each statistic maps to a 0..1 sub-score and, when low, to a named
*defect* that the judge turns into adjusted enhancement settings:

- sharpness: variance of the Laplacian of the luminance, relative to the image's own
  contrast (so a dark but sharp photo is not called blurry);
- exposure: mean luminance and the share of crushed or blown pixels;
- contrast: spread of the luminance;
- colourfulness: Hasler and Süsstrunk's metric on the opponent channels;
- colour cast: a blue or green tint over the whole plate (food looks wrong cold);
- change from the original: an enhancement that changed nothing (mean difference), or
  one that changed the dish itself (low correlation of the luminance: tone and colour
  corrections keep it high, a new picture does not).

Blur weighs twice: it is the one defect a classical enhancer cannot repair, so a badly
blurred photo is rejected rather than waved through on good colours.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ImageStats", "image_stats", "score_image", "score_text"]

MAX_SIDE = 384


@dataclass
class ImageStats:
    sharpness: float
    brightness: float
    clipped: float
    contrast: float
    colourfulness: float
    cast: float
    change: float | None = None
    structure: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        return {k: (round(v, 4) if isinstance(v, float) else v)
                for k, v in self.__dict__.items()}


@dataclass
class Scored:
    score: float
    reasons: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


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
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    lum = 0.299 * r + 0.587 * g + 0.114 * b
    contrast = float(lum.std())
    rg, yb = (r - g) * 255, (0.5 * (r + g) - b) * 255
    colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
    mean = float(lum.mean()) + 1e-6
    cast = float((b.mean() - r.mean()) / mean)  # > 0: bluer than red, cold
    stats = ImageStats(
        sharpness=_laplacian_var(lum) / (contrast ** 2 + 1e-4),
        brightness=float(lum.mean()),
        clipped=float(((lum < 0.02) | (lum > 0.98)).mean()),
        contrast=contrast, colourfulness=colourful, cast=cast,
    )
    if original is not None:
        before = _load(original)
        if before.shape != rgb.shape:
            from PIL import Image

            img = Image.fromarray((before * 255).astype("uint8"))
            before = np.asarray(img.resize((rgb.shape[1], rgb.shape[0])),
                                dtype=np.float32) / 255.0
        stats.change = float(np.abs(before - rgb).mean())
        lum_before = before @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        stats.structure = float(np.corrcoef(lum_before.ravel(), lum.ravel())[0, 1])
    return stats


def _ramp(value: float, low: float, high: float) -> float:
    """0 at ``low``, 1 at ``high`` (either order), clipped."""
    if high == low:
        return 1.0
    return min(1.0, max(0.0, (value - low) / (high - low)))


# (name, weight, defect, reason when low)
_CHECKS = (
    ("sharpness", 0.25, "blurry", "the plate looks soft or blurred"),
    ("exposure", 0.25, "underexposed", "exposure is off"),
    ("contrast", 0.15, "low_contrast", "flat, low contrast"),
    ("colour", 0.20, "dull_colours", "colours look dull"),
    ("cast", 0.15, "colour_cast", "a cold colour cast"),
)


def _subscores(s: ImageStats) -> dict[str, float]:
    exposure = min(_ramp(s.brightness, 0.15, 0.38), _ramp(s.brightness, 0.85, 0.68))
    exposure *= 1.0 - _ramp(s.clipped, 0.05, 0.3)
    return {
        "sharpness": _ramp(s.sharpness, 0.02, 0.12),
        "exposure": exposure,
        "contrast": _ramp(s.contrast, 0.08, 0.2),
        "colour": _ramp(s.colourfulness, 15.0, 45.0),
        "cast": _ramp(s.cast, 0.25, 0.0),
    }


def score_image(enhanced: bytes, original: bytes | None = None) -> Scored:
    """A 0..1 score of ``enhanced`` (compared with ``original`` when given)."""
    stats = image_stats(enhanced, original)
    subs = _subscores(stats)
    out = Scored(score=0.0, stats={**stats.as_dict(), "subscores": subs})
    total = 0.0
    for name, weight, defect, reason in _CHECKS:
        value = subs[name]
        total += weight * value
        if value < 0.6:
            if name == "exposure" and stats.brightness > 0.6:
                defect, reason = "overexposed", "blown highlights or too bright"
            out.defects.append(defect)
            out.reasons.append(f"{reason} ({name} {value:.2f})")
    if stats.change is not None and stats.change < 0.005:
        total *= 0.85
        out.defects.append("unchanged")
        out.reasons.append("the enhancement barely changed the photo")
    if stats.structure is not None and stats.structure < 0.7:
        total *= 0.6
        out.defects.append("over_processed")
        out.reasons.append(f"the picture itself changed (correlation {stats.structure:.2f})")
    if not out.defects:
        out.reasons.append("well exposed, sharp and colourful")
    total *= 0.5 + 0.5 * subs["sharpness"]
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

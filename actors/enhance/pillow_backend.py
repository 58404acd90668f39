"""The classical backend: a photo made neutral, well exposed, punchier and sharper on a
CPU in milliseconds, with no model to download.

Five steps in a fixed order, each blended with the original by ``strength`` (0 leaves
the photo alone, 1 applies each step as configured, above 1 exaggerates the contrast,
saturation and sharpening; the white balance, a correction, is never exaggerated), so
that a judge asking for a stronger pass gets one:

1. white balance, von Kries in linear light: the light's colour is the mean of the
   brightest 5% of the unclipped pixels (a white patch: cups, plates, cloth carry the
   light; food carries its own colour), and per-channel gains move its CIELAB a*/b*
   into the food-friendly :data:`WARM_BOX` (``white_balance: 0.5``, the default: a
   cast goes, the warmth stays) or on toward neutral (1.0). Two guards keep a wrong
   guess from ruining a photo: the gains are clamped to :data:`MAX_GAIN`, and a white
   more colourful than :data:`PLAUSIBLE` light is trusted less (a plate of carrots is
   not a cast); a cast beyond them stays, for the judge to see. Clipped whites of the
   light's colour are made the corrected white instead of being tinted by the gains;
2. auto exposure: a levels stretch between luminance percentiles, then a gamma that
   moves the mean luminance to ``exposure``; when highlights are blown, the top is not
   stretched but compressed (a shoulder above 0.7), so what detail is left near white
   shows. Only luminance changes: each pixel's channels are scaled together and rolled
   off near 1 rather than clipped, so no colour is pushed out of the gamut;
3. contrast: the luminance spread around its mean, by ``contrast``, relit the same way;
4. saturation, both ways: ``saturation`` is the factor for a photo of ordinary
   colourfulness (mean CIELAB chroma :data:`CHROMA_REF`); a dull photo gets more
   (times ``(CHROMA_REF / chroma) ** 0.6``), an over-saturated one is brought back to
   about ``CHROMA_REF`` times the factor, within 0.5..2 in all; each pixel eases into
   the gamut's edge instead of clipping a channel;
5. unsharp mask: ``sharpen`` percent at a radius relative to the image size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["CHROMA_REF", "MAX_GAIN", "PLAUSIBLE", "WARM_BOX", "enhance_image", "illuminant"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_Y = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
_SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722],
                         [0.0193, 0.1192, 0.9505]], dtype=np.float32)
_D65 = np.array([0.95047, 1.0, 1.08883], dtype=np.float32)

#: Neutral surfaces whose CIELAB (a*, b*) lie in here are left alone at
#: ``white_balance: 0.5``: food is shot warm and looks right warm (b* up to +30, and
#: with it a little red: warm light is orange, not pink). The judge's
#: ``actors.judge.heuristics.WARM_BOX`` (a test keeps the two equal), so what the
#: enhancer corrects, the judge accepts.
WARM_BOX = {"a_min": -3.0, "a_max": 3.0, "a_max_per_b": 0.35, "b_min": -3.0, "b_max": 30.0}
#: The most one channel is amplified or attenuated by the white balance.
MAX_GAIN = 1.8
#: The chroma (C*) of an estimated white up to which it is trusted fully, and from which
#: on not at all: lights that strongly coloured are rare, plates of carrots are not.
PLAUSIBLE = (45.0, 70.0)
#: Mean CIELAB chroma of an ordinarily colourful food photo (the as-shot coffee: 43).
CHROMA_REF = 40.0


def enhance_image(image: Image.Image, s: Any) -> tuple[Image.Image, list[str]]:
    """Enhance ``image`` with settings ``s`` (an ``EnhanceSettings``); return the new
    image and the steps applied, in words."""
    k = float(s.strength)
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    steps: list[str] = []
    arr = _white_balance(arr, s.white_balance * min(k, 1.0), steps)  # a correction: capped
    arr = _exposure(arr, s.exposure, k, steps)
    arr = _contrast(arr, 1.0 + (s.contrast - 1.0) * k, steps)
    arr = _saturation(arr, s.saturation, k, steps)
    out = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8))
    percent = round(s.sharpen * k)
    if percent > 0:
        radius = max(1.0, max(out.size) / 500)
        out = out.filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=2))
        steps.append(f"unsharp mask {percent}% r{radius:.1f}")
    return out, steps


# -- colour ----------------------------------------------------------------------------------


def _linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def _encoded(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _lab_of_linear(lin: np.ndarray) -> np.ndarray:
    xyz = lin @ _SRGB_TO_XYZ.T / _D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]),
                     200 * (f[..., 1] - f[..., 2])], axis=-1)


def _lab(rgb: np.ndarray) -> np.ndarray:
    return _lab_of_linear(_linear(rgb))


def _linear_of_lab(lab: np.ndarray) -> np.ndarray:
    fy = (lab[0] + 16) / 116
    f = np.array([fy + lab[1] / 500, fy, fy - lab[2] / 200], dtype=np.float32)
    xyz = np.where(f > 6 / 29, f ** 3, 3 * (6 / 29) ** 2 * (f - 4 / 29)) * _D65
    return np.asarray(np.linalg.solve(_SRGB_TO_XYZ, xyz), dtype=np.float32)


def illuminant(rgb: np.ndarray) -> np.ndarray | None:
    """The scene's white, in linear RGB: the mean of the brightest 5% of the unclipped
    pixels (CIELAB L* above 20); ``None`` when a photo has too few of them."""
    lab = _lab(rgb)
    usable = (rgb.max(axis=-1) < 0.98) & (lab[..., 0] > 20)
    if usable.sum() < 200:
        return None
    bright = usable & (lab[..., 0] >= np.percentile(lab[..., 0][usable], 95))
    return np.asarray(_linear(rgb[bright]).mean(axis=0), dtype=np.float32)


def _into_box(a: float, b: float) -> tuple[float, float]:
    """The nearest point of :data:`WARM_BOX` (per axis) to a white's (a*, b*)."""
    box = WARM_BOX
    b_in = min(max(b, box["b_min"]), box["b_max"])
    a_max = box["a_max"] + box["a_max_per_b"] * max(b_in, 0.0)
    return min(max(a, box["a_min"]), a_max), b_in


def _target_ab(a: float, b: float, amount: float) -> tuple[float, float]:
    """Where the white's (a*, b*) goes: into the warm box by ``amount`` 0..0.5, then on
    toward neutral by 0.5..1."""
    edge = _into_box(a, b)
    into = min(amount, 0.5) * 2
    a, b = a + (edge[0] - a) * into, b + (edge[1] - b) * into
    onward = max(amount - 0.5, 0.0) * 2
    return a * (1 - onward), b * (1 - onward)


def _white_balance(arr: np.ndarray, amount: float, steps: list[str]) -> np.ndarray:
    if amount <= 0:
        return arr
    white = illuminant(arr[::2, ::2])
    if white is None:
        return arr
    lab = _lab_of_linear(white)
    # whites more colourful than any plausible light are the food's own colour
    trust = min(max((PLAUSIBLE[1] - math.hypot(lab[1], lab[2]))
                    / (PLAUSIBLE[1] - PLAUSIBLE[0]), 0.0), 1.0)
    a, b = _target_ab(float(lab[1]), float(lab[2]), min(amount, 1.0) * trust)
    target = _linear_of_lab(np.array([lab[0], a, b], dtype=np.float32))
    gains = target / np.maximum(white, 1e-4)
    gains = gains * float(white @ _Y) / float((white * gains) @ _Y)  # same brightness
    gains = np.clip(gains, 1 / MAX_GAIN, MAX_GAIN)
    if np.abs(gains - 1).max() < 0.01:
        return arr
    lin = _protect_highlights(arr, _linear(arr) * gains, gains, lab, target)
    steps.append(f"white balance gains {'/'.join(f'{g:.2f}' for g in gains)} "
                 f"(white a* {lab[1]:+.0f} b* {lab[2]:+.0f} -> {a:+.0f} {b:+.0f})")
    return np.asarray(_encoded(lin), dtype=np.float32)


def _protect_highlights(arr: np.ndarray, lin: np.ndarray, gains: np.ndarray,
                        white: np.ndarray, target: np.ndarray) -> np.ndarray:
    """A clipped channel that the gains turn down (the blue of a cup under a blue cast)
    comes out too low, and the white it belonged to turns yellow. Such pixels, when
    they are of about the light's colour, become the corrected white at their own
    brightness; clipped pixels of other colours (a tomato's red) keep the gains."""
    cut = gains < 0.98
    bright = (arr[..., cut] >= 0.94).any(axis=-1) if cut.any() else None
    if bright is None or not bright.any():
        return lin
    pixels = arr[bright]
    lab = _lab(pixels)
    near = np.hypot(lab[:, 1] - white[1], lab[:, 2] - white[2])
    weight = (np.clip((pixels[:, cut].max(axis=-1) - 0.94) / 0.05, 0, 1)
              * np.clip((45.0 - near) / 25.0, 0, 1))[:, None]
    tint = target / float(target @ _Y)
    relit = lin[bright]
    lin[bright] = relit * (1 - weight) + (relit @ _Y)[:, None] * tint * weight
    return lin


# -- tone and colour -------------------------------------------------------------------------


def _relight(arr: np.ndarray, lum: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Give each pixel the luminance ``new`` by scaling its channels together; a pixel
    whose brightest channel would pass 0.9 is rolled off toward 1 instead of clipped,
    so hue, saturation and the detail near white are kept."""
    peak = np.maximum(arr.max(axis=-1), 1e-4)
    wanted = peak * new / np.maximum(lum, 1e-4)
    knee = 0.9
    soft = np.where(wanted > knee, knee + (1 - knee) * np.tanh((wanted - knee) / (1 - knee)),
                    wanted)
    return np.asarray(arr * (soft / peak)[..., None], dtype=np.float32)


def _exposure(arr: np.ndarray, target: float | None, k: float, steps: list[str]) -> np.ndarray:
    """Levels and gamma on luminance only, so brightening a photo does not wash its
    colours out; with blown highlights, a shoulder instead of a stretch at the top."""
    if target is None or k <= 0:
        return arr
    lum = arr @ _LUMA
    blown = float((lum[::4, ::4] >= 0.98).mean())
    lo, hi = (float(v) for v in np.percentile(lum[::4, ::4], [0.5, 99.5]))
    if blown > 0.005:
        hi = 1.0  # stretching would only widen the blown areas
    lo, hi = lo * min(k, 1.0), hi + (1.0 - hi) * (1.0 - min(k, 1.0))
    stretched = np.clip((lum - lo) / max(hi - lo, 1e-3), 0.0, 1.0)
    mean = float(np.clip(stretched[::4, ::4].mean(), 1e-3, 0.999))
    gamma = float(np.clip(math.log(target) / math.log(mean), 0.4, 2.5))
    gamma = max(1.0 + (gamma - 1.0) * k, 0.2)
    toned = np.power(stretched, gamma)
    said = f"levels {lo:.2f}..{hi:.2f}, gamma {gamma:.2f}"
    if blown > 0.005:
        squeeze = min(0.5, 10 * blown) * min(k, 1.0)
        toned = _shoulder(toned, squeeze)
        said += f", highlights compressed {squeeze:.2f} ({blown:.1%} blown)"
    steps.append(said)
    return _relight(arr, lum, toned)


def _shoulder(v: np.ndarray, squeeze: float, knee: float = 0.7) -> np.ndarray:
    """Compress the tones above ``knee``: slope 1 at the knee, white lands at
    ``1 - (1 - knee) * squeeze / 2``."""
    t = np.clip((v - knee) / (1 - knee), 0.0, 1.0)
    return np.where(v > knee, knee + (1 - knee) * (t - squeeze * t * t / 2), v)


def _contrast(arr: np.ndarray, factor: float, steps: list[str]) -> np.ndarray:
    """Luminance spread around its mean, by ``factor``, colours relit (not clipped)."""
    if abs(factor - 1.0) <= 1e-3:
        return arr
    lum = arr @ _LUMA
    mean = float(lum[::4, ::4].mean())
    steps.append(f"contrast x{factor:.2f}")
    return _relight(arr, lum, np.clip(mean + (lum - mean) * factor, 0.0, 1.0))


def _saturation(arr: np.ndarray, factor: float, k: float, steps: list[str]) -> np.ndarray:
    """Chroma scaled around each pixel's luminance: ``factor`` for an ordinarily
    colourful photo, more for a dull one, less for an over-saturated one; a pixel is
    never pushed past the gamut (no channel clips)."""
    chroma = float(np.hypot(*_lab(arr[::4, ::4])[..., 1:].transpose(2, 0, 1)).mean())
    ratio = CHROMA_REF / max(chroma, 1.0)  # dull photos part of the way, loud ones all
    adapt = min(max(ratio ** (0.6 if ratio > 1 else 1.0), 0.5), 2.0)
    applied = 1.0 + (factor * adapt - 1.0) * k
    if abs(applied - 1.0) <= 1e-3:
        return arr
    lum = (arr @ _LUMA)[..., None]
    delta = arr - lum
    if applied > 1.0:  # the largest factor each pixel takes before a channel leaves 0..1
        room = np.where(delta > 0, (1.0 - lum) / np.maximum(delta, 1e-6),
                        np.where(delta < 0, lum / np.maximum(-delta, 1e-6), np.inf))
        room = np.clip(room.min(axis=-1, keepdims=True) - 1.0, 1e-6, 10.0)
        per_pixel = 1.0 + room * np.tanh((applied - 1.0) / room)  # eases into the edge
    else:
        per_pixel = np.full_like(lum, applied)
    steps.append(f"saturation x{applied:.2f} (chroma {chroma:.0f})")
    return np.asarray(np.clip(lum + delta * per_pixel, 0.0, 1.0), dtype=np.float32)

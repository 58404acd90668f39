"""The classical backend: a dull photo made brighter, neutral, punchier and sharper on a
CPU in milliseconds, with no model to download.

Five steps in a fixed order, each blended with the original by ``strength`` (0 leaves
the photo alone, 1 applies each step as configured, above 1 exaggerates the contrast,
saturation and sharpening; the white balance, a correction, stays at its full amount),
so that a judge asking for a stronger pass gets one:

1. white balance: gray world over the near-neutral pixels, so a colour cast goes and
   the food keeps its colour;
2. auto exposure: a levels stretch between luminance percentiles, then a gamma that
   moves the mean luminance to ``exposure``, applied to luminance (colours keep their
   ratios);
3. contrast, 4. saturation: PIL's ``ImageEnhance`` factors;
5. unsharp mask: ``sharpen`` percent at a radius relative to the image size.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

__all__ = ["enhance_image"]

_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def enhance_image(image: Image.Image, s: Any) -> tuple[Image.Image, list[str]]:
    """Enhance ``image`` with settings ``s`` (an ``EnhanceSettings``); return the new
    image and the steps applied, in words."""
    k = float(s.strength)
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    steps: list[str] = []
    arr = _white_balance(arr, s.white_balance * min(k, 1.0), steps)  # a correction: capped
    arr = _exposure(arr, s.exposure, k, steps)
    out = Image.fromarray(np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8))
    for name, factor, enhancer in (("contrast", s.contrast, ImageEnhance.Contrast),
                                   ("saturation", s.saturation, ImageEnhance.Color)):
        applied = 1.0 + (factor - 1.0) * k
        if abs(applied - 1.0) > 1e-3:
            out = enhancer(out).enhance(applied)
            steps.append(f"{name} x{applied:.2f}")
    percent = round(s.sharpen * k)
    if percent > 0:
        radius = max(1.0, max(out.size) / 500)
        out = out.filter(ImageFilter.UnsharpMask(radius=radius, percent=percent, threshold=2))
        steps.append(f"unsharp mask {percent}% r{radius:.1f}")
    return out, steps


def _white_balance(arr: np.ndarray, amount: float, steps: list[str]) -> np.ndarray:
    """Gray world over the near-neutral pixels (plates, tablecloths, walls): their mean is
    pulled to gray. Averaging every pixel would also neutralise the food's own colour."""
    if amount <= 0:
        return arr
    pixels = arr[::4, ::4].reshape(-1, 3)
    chroma = pixels.max(axis=1) - pixels.min(axis=1)
    lum = pixels @ _LUMA
    usable = (lum > 0.05) & (lum < 0.97)
    if usable.sum() < 16:
        return arr
    neutral = usable & (chroma <= np.percentile(chroma[usable], 25))
    means = pixels[neutral].mean(axis=0)
    gains = np.clip(means.mean() / np.maximum(means, 1e-4), 0.7, 1.4)
    gains = 1.0 + (gains - 1.0) * amount
    steps.append("white balance gains " + "/".join(f"{g:.2f}" for g in gains))
    return np.asarray(arr * gains.astype(np.float32), dtype=np.float32)


def _exposure(arr: np.ndarray, target: float | None, k: float, steps: list[str]) -> np.ndarray:
    """Levels and gamma on luminance only; colours are scaled by the luminance ratio, so
    brightening a photo does not wash its colours out."""
    if target is None or k <= 0:
        return arr
    lum = arr @ _LUMA
    lo, hi = (float(v) for v in np.percentile(lum[::4, ::4], [0.5, 99.5]))
    lo, hi = lo * min(k, 1.0), hi + (1.0 - hi) * (1.0 - min(k, 1.0))
    stretched = np.clip((lum - lo) / max(hi - lo, 1e-3), 0.0, 1.0)
    mean = float(np.clip(stretched[::4, ::4].mean(), 1e-3, 0.999))
    gamma = float(np.clip(math.log(target) / math.log(mean), 0.4, 2.5))
    gamma = max(1.0 + (gamma - 1.0) * k, 0.2)
    steps.append(f"levels {lo:.2f}..{hi:.2f}, gamma {gamma:.2f}")
    ratio = np.power(stretched, gamma) / np.maximum(lum, 1e-4)
    return np.asarray(arr * ratio[..., None], dtype=np.float32)

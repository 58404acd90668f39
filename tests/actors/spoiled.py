"""The coffee photograph (scikit-image's ``coffee``, public domain) spoiled the ways the
judge must see and the enhancer must fix: shared by the judge's, the enhancer's and the
food-image mesh's tests, so they all talk about the same photos."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance


def coffee() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.coffee())  # type: ignore[no-untyped-call]


def _channels(img: Image.Image, gain: tuple[float, float, float],
              offset: tuple[float, float, float] = (0, 0, 0)) -> Image.Image:
    arr = np.asarray(img, dtype=np.float32) * np.array(gain) + np.array(offset)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def blue_cast(img: Image.Image) -> Image.Image:
    """Shot in the shade with daylight white balance: an obvious blue cast."""
    return _channels(img, (0.8, 0.95, 1.3), (0, 0, 20))


def strong_blue_cast(img: Image.Image) -> Image.Image:
    """Blue so strong that the blue channel clips on the cup and the red one nearly
    dies: more than a clamped white balance can (or should) undo."""
    return _channels(img, (0.45, 0.75, 1.6), (0, 10, 80))


def green_cast(img: Image.Image) -> Image.Image:
    return _channels(img, (0.85, 1.1, 0.85))


def magenta_cast(img: Image.Image) -> Image.Image:
    return _channels(img, (1.1, 0.8, 1.1))


def warmer(img: Image.Image) -> Image.Image:
    """Tungsten-warm: food is allowed to look like this."""
    return _channels(img, (1.1, 1.0, 0.8))


def desaturated(img: Image.Image) -> Image.Image:
    return ImageEnhance.Color(img).enhance(0.3)


def over_saturated_blown(img: Image.Image) -> Image.Image:
    """Saturation pushed far up, then overexposed: colours clipped in one channel,
    highlights blown white and yellow."""
    return ImageEnhance.Brightness(ImageEnhance.Color(img).enhance(2.2)).enhance(1.8)


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()

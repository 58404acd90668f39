"""Handlers of the review console's test mesh. Plain Python and Pillow, no project imports.

``enhance`` writes a brighter, more saturated copy beside the original; ``judge``
scores it like the ready-made judge does (``payload["verdict"]`` with score, verdict,
reasons, defects) and, finding every photo "uncertain", puts ``review`` next.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from PIL import Image, ImageEnhance


def _path(url: str) -> Path:
    return Path(urlsplit(url).path if url.startswith("file:") else url)


def enhance(payload: dict[str, Any]) -> dict[str, Any]:
    src = _path(payload["image_url"])
    out = src.with_name(f"{src.stem}.enhanced.png")
    with Image.open(src) as img:
        better = ImageEnhance.Color(ImageEnhance.Brightness(img.convert("RGB")).enhance(1.4))
        better.enhance(1.5).save(out)
    return {**payload, "enhanced_url": out.as_uri(), "enhancement": "brightness+colour"}


def judge(envelope: dict[str, Any]) -> dict[str, Any]:
    payload = dict(envelope["payload"])
    score = float(payload.get("expected_score", 0.62))
    payload["verdict"] = {"score": score, "verdict": "uncertain",
                          "reasons": ["colours look plausible", "slight glare on the plate"],
                          "defects": ["overexposed"]}
    nxt = ["review", *envelope["route"]["next"]]
    return {**envelope, "payload": payload, "route": {**envelope["route"], "next": nxt}}


def upload(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "uploaded": True}

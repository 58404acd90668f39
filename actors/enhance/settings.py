"""Per-image enhancement settings: the actor's defaults, what the judge may override in
``payload["enhance_settings"]``, what a reviewer's ``payload["review_notes"]`` change,
and how one of several candidates of a photo differs (``payload["candidate"]``).

The defaults come from ``spec.config``; a payload may carry overrides for the keys of
:class:`EnhanceSettings` only (anything else is an error naming the key), so that a judge
that rejects an image can send it back with, say, ``{"strength": 0.45}``. The settings
actually used are echoed in ``payload["enhancement"]["settings"]``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["FOOD_NEGATIVE_PROMPT", "FOOD_PROMPT", "Candidate", "EnhanceSettings", "for_payload"]

FOOD_PROMPT = (
    "professional food photography, appetizing dish, natural window light, soft shadows, "
    "true-to-life vibrant colors, crisp focus on the food, fresh textures, clean plate, "
    "high dynamic range, shot on a full-frame camera, 50mm lens"
)
FOOD_NEGATIVE_PROMPT = (
    "blurry, out of focus, underexposed, overexposed, dull colors, color cast, grainy, "
    "noise, jpeg artifacts, oversaturated, plastic look, deformed food, extra objects, "
    "text, watermark, logo, cartoon, illustration, painting"
)


@dataclass(frozen=True)
class EnhanceSettings:
    """What one image is enhanced with. ``strength`` is the img2img strength (0..1) for
    sdxl and a multiplier of every classical step for pillow."""

    prompt: str = FOOD_PROMPT
    negative_prompt: str = FOOD_NEGATIVE_PROMPT
    strength: float = 0.3
    steps: int = 30
    guidance: float = 5.0
    seed: int | None = 0
    exposure: float | None = 0.46
    white_balance: float = 0.5
    contrast: float = 1.12
    saturation: float = 1.25
    sharpen: float = 80.0

    def __post_init__(self) -> None:
        if not self.strength > 0:
            raise ValueError(f"enhance: strength must be > 0, got {self.strength!r}")
        if int(self.steps) < 1:
            raise ValueError(f"enhance: steps must be >= 1, got {self.steps!r}")
        if self.exposure is not None and not 0 < self.exposure < 1:
            raise ValueError(f"enhance: exposure must be in (0, 1), got {self.exposure!r}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def diffusion_key(self) -> tuple[Any, ...]:
        """Images with equal keys can share one SDXL pipeline call: the classical
        settings play no part in it, and the seed is per image (one generator each), so
        the candidates of a photo that differ only in seed run together."""
        return (self.prompt, self.negative_prompt, self.strength, self.steps, self.guidance)


@dataclass(frozen=True)
class Candidate:
    """``payload["candidate"]``: this payload is candidate ``index`` of ``of`` of one
    photo (best-of-N). Its settings are the photo's with ``strength`` times
    ``strength_scale`` and ``seed`` plus ``seed_offset``; its output is named
    ``<stem>.c<index><output_suffix>``, so the candidates do not overwrite each other."""

    index: int
    of: int
    strength_scale: float = 1.0
    seed_offset: int = 0

    @classmethod
    def of_payload(cls, payload: dict[str, Any]) -> Candidate | None:
        raw = payload.get("candidate")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise ValueError(f"enhance: payload['candidate'] must be an object, got "
                             f"{type(raw).__name__}")
        unknown = sorted(set(raw) - _CANDIDATE_FIELDS)
        if unknown:
            raise ValueError(f"enhance: unknown key(s) {unknown} in payload['candidate'];"
                             f" known: {sorted(_CANDIDATE_FIELDS)}")
        try:
            found = cls(index=_whole(raw, "index"), of=_whole(raw, "of"),
                        strength_scale=float(raw.get("strength_scale", 1.0)),
                        seed_offset=_whole(raw, "seed_offset", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"enhance: payload['candidate'] is not valid: {exc}") from exc
        if not (0 <= found.index < found.of and found.strength_scale > 0):
            raise ValueError(f"enhance: payload['candidate'] needs 0 <= index < of and "
                             f"strength_scale > 0, got {raw}")
        return found

    def apply(self, s: EnhanceSettings) -> EnhanceSettings:
        seed = None if s.seed is None else s.seed + self.seed_offset
        return dataclasses.replace(s, strength=round(s.strength * self.strength_scale, 4),
                                   seed=seed)


_CANDIDATE_FIELDS = frozenset(f.name for f in dataclasses.fields(Candidate))


def _whole(raw: dict[str, Any], key: str, default: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{key} must be a whole number, got {value!r}")
    return value


FIELDS = frozenset(f.name for f in dataclasses.fields(EnhanceSettings))

# Reviewer notes, read as words: (pattern, setting, change).
_NOTE_RULES: tuple[tuple[str, str, float], ...] = (
    (r"\b(too dark|underexposed|brighter|lighter)\b", "exposure", +0.08),
    (r"\b(too bright|overexposed|darker)\b", "exposure", -0.08),
    (r"\b(flat|more contrast)\b", "contrast", +0.1),
    (r"\b(less contrast|too harsh)\b", "contrast", -0.1),
    (r"\b(dull|washed out|more colou?r|more saturat\w*|more vivid)\b", "saturation", +0.15),
    (r"\b(oversaturated|less colou?r|less saturat\w*)\b", "saturation", -0.15),
    (r"\b(blurry|soft|sharper)\b", "sharpen", +40.0),
    (r"\b(oversharpened|less sharp|halos?)\b", "sharpen", -40.0),
)


def for_payload(base: EnhanceSettings, payload: dict[str, Any]) -> tuple[EnhanceSettings,
                                                                        list[str]]:
    """Settings for one payload: ``base``, then ``enhance_settings``, then review notes.
    Returns the settings and what the notes changed, in words."""
    overrides = payload.get("enhance_settings") or {}
    if not isinstance(overrides, dict):
        raise ValueError(f"enhance: payload['enhance_settings'] must be an object, "
                         f"got {type(overrides).__name__}")
    unknown = sorted(set(overrides) - FIELDS)
    if unknown:
        raise ValueError(f"enhance: unknown key(s) {unknown} in payload['enhance_settings'];"
                         f" known: {sorted(FIELDS)}")
    settings = dataclasses.replace(base, **overrides)
    candidate = Candidate.of_payload(payload)
    if candidate is not None:
        settings = candidate.apply(settings)
    notes = payload.get("review_notes")
    if not notes:
        return settings, []
    return _apply_notes(settings, str(notes))


def _apply_notes(s: EnhanceSettings, notes: str) -> tuple[EnhanceSettings, list[str]]:
    changes: dict[str, Any] = {"prompt": f"{s.prompt}, {notes.strip()}"}
    said: list[str] = [f"prompt += {notes.strip()!r}"]
    lowered = notes.lower()
    for pattern, name, delta in _NOTE_RULES:
        if re.search(pattern, lowered):
            old = changes.get(name, getattr(s, name))
            if old is None:
                continue
            new = min(max(old + delta, 0.05), 0.95) if name == "exposure" else max(old + delta, 0)
            changes[name] = new
            said.append(f"{name} {old:g} -> {new:g}")
    return dataclasses.replace(s, **changes), said

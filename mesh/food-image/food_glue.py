"""Glue of the food-image mesh: best-of-N candidates and their gather, and storing an
accepted photo in the output location.

Best-of-N (route ``candidates, enhance, score, best, decide, upload``): ``candidates``
fans one photo out into N payloads that differ in their ``candidate`` (strength scale,
seed offset; the enhancer applies them), the enhancer and the judge's
``score_candidate`` handle each, ``best`` (a ``fanIn`` actor) gets them back in fan-out
order and keeps the highest score, and the judge's ``decide`` routes the winner: upload,
review when even the best is uncertain, or one more pass through ``enhance, judge`` with
the winner's settings adjusted. The winner says which candidate won and why in
``payload["best_of"]``.

The output is a ``file://`` folder or an ``s3://`` bucket/prefix, through
``asya_agents.blob`` like every other image access; a plain relative path is taken
relative to this mesh folder. The file is named after the envelope's photo, so a
redelivered envelope overwrites its own copy instead of adding one.

Reads and writes stay within the actor's storage policy (``storage``, given by the
runtime): the output itself must be inside it, or the actor refuses to start.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from asya_agents import blob
from asya_agents.errors import BlobRefused, ConfigError
from asya_agents.storage import StoragePolicy

HERE = Path(__file__).resolve().parent

#: What a candidate payload says about itself (``enhance`` reads it).
CANDIDATE = "candidate"
#: The most candidates one photo may ask for.
MAX_CANDIDATES = 16


class Candidates:
    """Fans a photo out into ``n`` candidates (``payload["candidates"]`` overrides it,
    1..``MAX_CANDIDATES``). Candidate ``i`` enhances with the photo's strength times
    ``strength_scales[i % len]`` and its seed plus ``i * seed_step``: settings for the
    pillow enhancer, seeds for SDXL (``strength_scales: [1.0]`` keeps one strength, so
    the GPU batch handler runs a photo's candidates in one pipeline call)."""

    def __init__(self, *, n: int = 3, strength_scales: list[float] | None = None,
                 seed_step: int = 1) -> None:
        self.scales = [1.0, 0.6, 1.6] if strength_scales is None else list(strength_scales)
        if not self.scales or not all(isinstance(x, int | float) and x > 0
                                      for x in self.scales):
            raise ConfigError(f"candidates: strength_scales must be numbers > 0, got "
                              f"{strength_scales!r}")
        if not _count_ok(n):
            raise ConfigError(f"candidates: config n must be a whole number in "
                              f"1..{MAX_CANDIDATES}, got {n!r}")
        if isinstance(seed_step, bool) or not isinstance(seed_step, int):
            raise ConfigError(f"candidates: seed_step must be a whole number, got "
                              f"{seed_step!r}")
        self.n, self.seed_step = n, seed_step

    def spread(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        """The photo's candidates, in order (a list: the runtime fans them out)."""
        n = self.n if payload.get("candidates") is None else payload["candidates"]
        if not _count_ok(n):
            raise ValueError(f"candidates: payload['candidates'] must be a whole number in "
                             f"1..{MAX_CANDIDATES}, got {n!r}")
        return [{**payload, CANDIDATE: {
            "index": i, "of": n, "strength_scale": self.scales[i % len(self.scales)],
            "seed_offset": i * self.seed_step}} for i in range(n)]


def _count_ok(n: Any) -> bool:
    return not isinstance(n, bool) and isinstance(n, int) and 1 <= n <= MAX_CANDIDATES


def pick_best(payloads: list[dict[str, Any]]) -> dict[str, Any]:
    """The gather of best-of-N: the candidate with the highest score (the first of equal
    ones), with the others summarised in ``best_of``. The winner's settings become its
    ``enhance_settings`` and its ``candidate`` mark goes, so that a loop back through
    ``enhance`` repeats the winning pass (adjusted), not a candidate's."""
    if not payloads:
        raise ValueError("best: no candidate to choose from")
    rows = [_summary(i, p) for i, p in enumerate(payloads)]
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["score"], i))
    won = payloads[order[0]]
    winner = rows[order[0]]
    used = (won.get("enhancement") or {}).get("settings") or {}
    settings = {**(won.get("enhance_settings") or {}),
                **{k: used[k] for k in ("strength", "seed") if k in used}}
    best = {k: v for k, v in won.items() if k != CANDIDATE}
    best["enhance_settings"] = settings
    best["best_of"] = {"n": winner["of"], "winner": winner["index"],
                       "why": _why(rows, order), "candidates": rows}
    return best


def _summary(place: int, payload: dict[str, Any]) -> dict[str, Any]:
    verdict = payload.get("verdict")
    if not isinstance(verdict, dict) or not isinstance(verdict.get("score"), int | float) \
            or not math.isfinite(verdict["score"]):
        raise ValueError(f"best: candidate {place} has no scored verdict (score_candidate "
                         f"before the gather?); keys: {sorted(payload)}")
    candidate = payload.get(CANDIDATE) or {}
    settings = (payload.get("enhancement") or {}).get("settings") or {}
    return {"index": int(candidate.get("index", place)),
            "of": int(candidate.get("of", 0)) or None,
            "strength": settings.get("strength"), "seed": settings.get("seed"),
            "score": float(verdict["score"]), "verdict": verdict.get("verdict"),
            "defects": list(verdict.get("defects") or []),
            "enhanced_url": payload.get("enhanced_url")}


def _why(rows: list[dict[str, Any]], order: list[int]) -> str:
    """In words: which candidate won, by how much, and what held the runner-up back."""
    top = rows[order[0]]
    said = (f"candidate {top['index']} (strength {top['strength']:g}) scored "
            f"{top['score']:.2f}" if top["strength"] is not None else
            f"candidate {top['index']} scored {top['score']:.2f}")
    if len(order) == 1:
        return f"{said}, the only candidate that came back"
    asked = top["of"] or len(rows)
    pool = f"best of {len(rows)}" + (f" that came back of {asked}" if asked > len(rows)
                                     else "")
    second = rows[order[1]]
    held = f" ({', '.join(second['defects'])})" if second["defects"] else ""
    if second["score"] == top["score"]:
        held += ", as good: the first is kept"
    return (f"{said}, {pool}; next candidate {second['index']} "
            f"{second['score']:.2f}{held}")


class Uploader:
    def __init__(self, output: str = ".asya/output",
                 storage: StoragePolicy | None = None) -> None:
        if "://" not in output:
            path = Path(output)
            output = (path if path.is_absolute() else HERE / path).as_uri()
        self.output = output
        self._store = blob.BlobStore(policy=storage)
        try:
            self._store.check_folder(output)
        except BlobRefused as exc:
            raise ConfigError(f"upload: output {output} is not allowed: {exc.rule}") from exc

    def upload(self, payload: dict[str, Any]) -> dict[str, Any]:
        source = payload.get("enhanced_url") or payload["image_url"]
        name = PurePosixPath(urlsplit(source).path).name
        target = blob.join_url(self.output, name)
        self._store.copy(source, target)
        return {**payload, "uploaded_url": target}

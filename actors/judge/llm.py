"""Asking an LLM for a verdict through litellm, and refusing answers that are not one.

litellm is imported lazily (only the LLM backend needs it), in offline mode so that
importing it never reaches the network for its price list, by the one loader every LLM
actor shares (:func:`actors.llm.client.load_litellm`). Every call passes
``num_retries=0``: a provider error (429, 5xx, timeout) is raised as litellm raised it,
and the actor's manifest (the ``llm-resilient`` flavor) decides on retries, backoff and
``Retry-After``; nothing here sleeps or retries.
"""

from __future__ import annotations

import base64
import io
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.llm.client import load_litellm

__all__ = ["Verdict", "VerdictError", "complete", "data_url", "load_litellm",
           "parse_verdict"]

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class VerdictError(ValueError):
    """The model answered, but not with a valid verdict."""


class Verdict(BaseModel):
    """What the judge decides; the LLM must answer with this JSON object."""

    model_config = ConfigDict(extra="ignore")

    score: float = Field(ge=0.0, le=1.0, description="0 worst .. 1 best")
    verdict: Literal["accept", "uncertain", "reject"] | None = None
    reasons: list[str] = Field(default_factory=list)
    defects: list[str] = Field(default_factory=list)


def complete(*, model: str, messages: list[dict[str, Any]], api_base: str | None,
             api_key: str | None, timeout: float, json_mode: bool) -> str:
    """One completion, no retries; the text of the first choice."""
    litellm = load_litellm()
    extra: dict[str, Any] = {}
    if json_mode:
        extra["response_format"] = {"type": "json_object"}
    response = litellm.completion(
        model=model, messages=messages, api_base=api_base, api_key=api_key,
        timeout=timeout, temperature=0, num_retries=0, drop_params=True, **extra)
    content = response.choices[0].message.content
    return content if isinstance(content, str) else ""


def parse_verdict(text: str, *, model: str) -> Verdict:
    """The verdict in ``text`` (a JSON object, possibly fenced), or VerdictError."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise VerdictError(f"judge model {model!r} answered without a JSON object: "
                           f"{text[:200]!r}")
    try:
        data = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        raise VerdictError(f"judge model {model!r} answered invalid JSON ({exc}): "
                           f"{text[:200]!r}") from exc
    try:
        return Verdict.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'verdict'}: {e['msg']}"
                             for e in exc.errors())
        raise VerdictError(f"judge model {model!r} answered an invalid verdict ({problems}): "
                           f"{text[:200]!r}") from exc


def data_url(data: bytes, *, max_side: int) -> str:
    """A JPEG data URL of the image, at most ``max_side`` pixels on its long side."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
        rgb.thumbnail((max_side, max_side))
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()

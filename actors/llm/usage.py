"""What the model calls of one envelope cost, carried in its payload.

Each LLM actor adds its completion to ``payload["usage"]`` (the key is configurable),
so the usage travels with the work across hops and a budget can be read at any hop:

    {"calls": 3, "prompt_tokens": 410, "completion_tokens": 220, "total_tokens": 630,
     "cost": 0.000195, "unpriced_calls": 0}

``cost`` is litellm's price for the tokens (its bundled price list); a call to a model
litellm has no price for adds nothing to it and counts in ``unpriced_calls`` instead,
so an unknown price never reads as free without saying so.

A fan-out copies the parent's usage into every child, so summing the children would
count it once per child. The fan-out steps of the patterns therefore hand each child an
empty usage and the parent's in ``usage_before``; a gather adds the children's to that
(:func:`combine`). :func:`over_budget` says which limit of a budget is reached.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from actors.llm.client import Completion

__all__ = ["FIELDS", "add", "combine", "over_budget"]

FIELDS = ("calls", "prompt_tokens", "completion_tokens", "total_tokens", "cost",
          "unpriced_calls")


def _zero() -> dict[str, Any]:
    return {field: 0.0 if field == "cost" else 0 for field in FIELDS}


def add(usage: dict[str, Any] | None, completion: Completion) -> dict[str, Any]:
    """``usage`` with one more completion (a new dict)."""
    out = {**_zero(), **(usage or {})}
    out["calls"] += 1
    out["prompt_tokens"] += completion.prompt_tokens
    out["completion_tokens"] += completion.completion_tokens
    out["total_tokens"] += completion.total_tokens
    if completion.cost is None:
        out["unpriced_calls"] += 1
    else:
        out["cost"] = round(out["cost"] + completion.cost, 10)
    return out


def combine(base: dict[str, Any] | None,
            parts: Iterable[dict[str, Any] | None]) -> dict[str, Any]:
    """``base`` (the usage before a fan-out) plus each child's own usage."""
    out = {**_zero(), **(base or {})}
    for part in parts:
        for field in FIELDS:
            out[field] += (part or {}).get(field, 0)
    out["cost"] = round(out["cost"], 10)
    return out


def over_budget(usage: dict[str, Any] | None, budget: dict[str, Any], *,
                hops: int) -> tuple[str, float, float] | None:
    """The first limit of ``budget`` (``max_hops``, ``max_tokens``, ``max_cost``) that
    ``usage`` and ``hops`` (actors passed so far) reached, as ``(limit, used, max)``;
    ``None`` while all are below. A limit that is unset (or null) does not apply."""
    used = {**_zero(), **(usage or {})}
    for limit, value in (("max_hops", hops), ("max_tokens", used["total_tokens"]),
                         ("max_cost", used["cost"])):
        ceiling = budget.get(limit)
        if ceiling is not None and value >= ceiling:
            return limit, float(value), float(ceiling)
    return None

"""Naming the field a typo meant: ``concurency`` -> ``concurrency``.

An unknown field fails when a manifest loads (DESIGN.md), and the error is more useful
when it also says which field was probably meant. A pydantic error only carries the
location of the stray key (``spec.tolerations[0].efect``), so :func:`field_names` walks
the model along that location to the model that refused it, and :func:`did_you_mean`
picks the nearest of that model's field names. :func:`format_loc` writes a location the
way the manifest docs do (list items as ``[i]``); :func:`explain` puts the three
together for the first error of a :class:`~pydantic.ValidationError`.

This module knows pydantic and nothing of the project, so every part that reads
declared data (manifests, built-in actors' configs, handler configs) can use it.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

__all__ = ["did_you_mean", "explain", "field_names", "format_loc"]


def explain(exc: ValidationError, model: type[BaseModel],
            prefix: tuple[str, ...] = ()) -> tuple[str, str]:
    """The field path and the message of the first error of ``exc``, raised validating
    ``model`` found at ``prefix``; an unknown field comes with the nearest known one,
    and ``(and N more)`` says how many other errors there were."""
    errors = exc.errors()
    loc, msg = tuple(errors[0]["loc"]), errors[0]["msg"].removeprefix("Value error, ")
    if errors[0]["type"] == "extra_forbidden":
        msg = "unknown field" + did_you_mean(str(loc[-1]), field_names(model, loc[:-1]))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return format_loc(prefix + loc), msg + more


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the choice nearest to ``name``, or ``""`` when none
    is near (case is ignored: ``hoplimit`` finds ``hopLimit``)."""
    by_lower = {choice.lower(): choice for choice in choices}
    found = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[found[0]]!r}?)" if found else ""


def format_loc(loc: Sequence[int | str]) -> str:
    """``("spec", "tolerations", 0, "efect")`` as ``spec.tolerations[0].efect``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


def field_names(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The fields of the model found at ``loc`` inside ``model``; ``[]`` when the path
    leaves the models (a free-form mapping such as ``spec.config``)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    found = _model_of(current)
    if found is None:
        return []
    return [info.alias or name for name, info in found.model_fields.items()]


def _step(tp: Any, part: int | str) -> Any:
    model = _model_of(tp)
    if model is not None:
        for name, info in model.model_fields.items():
            if part in (name, info.alias):
                return info.annotation
        return None
    tp = _unwrap(tp)
    origin, args = get_origin(tp), get_args(tp)
    if origin is list and isinstance(part, int) and args:
        return args[0]
    if origin is dict and isinstance(part, str) and len(args) == 2:
        return args[1]
    return None


def _unwrap(tp: Any) -> Any:
    """``Annotated[X, ...]`` and ``X | None`` as ``X``."""
    if get_origin(tp) is Annotated:
        return _unwrap(get_args(tp)[0])
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return tp


def _model_of(tp: Any) -> type[BaseModel] | None:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return None

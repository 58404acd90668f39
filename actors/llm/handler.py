"""The ``llm`` actor: one model call per message, configured entirely by ``spec.config``.

A class handler, built once per replica, with two entry points over the same call:

- ``actors.llm.handler.LLM.run`` (payload mode): renders the prompt templates with the
  payload's fields, asks the model, and puts the answer at ``payload[output_key]``:
  the text, or (``output: json``) the JSON object, validated by ``schema`` when given;
- ``actors.llm.handler.LLM.route`` (``handlerMode: envelope``): the same call, then
  the answer's label (the text, or ``answer[route_field]``) picks ``routes[label]``,
  which is put in front of ``route.next``; a label with no route takes
  ``fallback_route`` (e.g. ``[review]``), or fails naming the label. That is a
  classifier that routes, in configuration.

Every call adds its tokens and cost to ``payload[usage_key]``
(:mod:`actors.llm.usage`). Provider errors propagate as litellm raised them (the
``llm-resilient`` flavor decides); a prompt that names a field the payload lacks raises
:class:`PromptError`, an answer that does not fit :class:`~actors.llm.client.OutputError`.
Every config key is described in ``actors/llm/README.md``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, create_model

from actors.llm import usage
from actors.llm.client import LLMClient, OutputError, import_path, parse_json

__all__ = ["LLM", "OutputError", "PromptError", "RouteError", "render", "schema_model"]

_TYPES: dict[str, Any] = {"str": str, "int": int, "float": float, "bool": bool,
                          "list": list, "dict": dict, "list[str]": list[str],
                          "list[dict]": list[dict[str, Any]]}


class PromptError(ValueError):
    """A prompt template names a payload field that is not there."""


class RouteError(ValueError):
    """The model's label names no route, and there is no ``fallback_route``."""


#: ``{field}``, ``{field[key]}``, ``{field[0]}``; ``{{`` and ``}}`` are literal braces. Any
#: other brace (the JSON examples of a system prompt) is left as it is.
_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_]\w*)((?:\[[^\[\]{}]*\])*)\}")
_SUB = re.compile(r"\[([^\]]*)\]")


def _lookup(value: Any, sub: str) -> Any:
    if isinstance(value, list) and sub.lstrip("-").isdigit():
        return value[int(sub)]
    return value[sub]


def render(template: str, fields: dict[str, Any], *, key: str) -> str:
    """``template`` with ``{field}`` (and ``{field[sub]}``) taken from ``fields``; lists
    and mappings are written as JSON."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name, path = match.group(1), match.group(2)
        if name not in fields:
            raise PromptError(f"{key} needs payload field {name!r} (the payload has: "
                              f"{', '.join(sorted(fields)) or 'nothing'})")
        value = fields[name]
        for sub in _SUB.findall(path):
            try:
                value = _lookup(value, sub)
            except (KeyError, IndexError, TypeError) as exc:
                raise PromptError(f"{key}: {token} names {sub!r}, which payload field "
                                  f"{name!r} does not have") from exc
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False)
        return str(value)

    return _FIELD.sub(one, template)


def schema_model(schema: str | dict[str, str] | None) -> type[BaseModel] | None:
    """``schema`` as a pydantic model: the import path of one, or ``{field: type}``
    with types from ``str int float bool list dict list[str] list[dict]`` (a trailing
    ``?`` makes a field optional)."""
    if schema is None:
        return None
    if isinstance(schema, str):
        model = import_path(schema, key="schema")
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ValueError(f"schema: {schema!r} is not a pydantic model")
        return model
    fields: dict[str, Any] = {}
    for name, type_name in schema.items():
        optional = type_name.endswith("?")
        base = _TYPES.get(type_name.rstrip("?"))
        if base is None:
            raise ValueError(f"schema.{name}: unknown type {type_name!r} (use one of "
                             f"{', '.join(_TYPES)}, with ? for optional)")
        fields[name] = (base | None, None) if optional else (base, ...)
    built: type[BaseModel] = create_model("Answer", **fields)
    return built


class LLM:
    """Built once per replica with ``spec.config`` (every key: actors/llm/README.md)."""

    def __init__(
        self,
        *,
        backend: str = "auto",
        model: str | None = None,
        api_base: str | None = None,
        api_key: str | None = None,
        offline: str | None = None,
        system: str | None = None,
        prompt: str = "{text}",
        defaults: dict[str, Any] | None = None,
        output: str = "text",
        schema: str | dict[str, str] | None = None,
        output_key: str | None = "text",
        temperature: float = 0.0,
        max_tokens: int | None = None,
        timeout: float = 60.0,
        json_mode: bool = True,
        seed_key: str | None = None,
        usage_key: str = "usage",
        routes: dict[str, list[str]] | None = None,
        route_field: str = "route",
        fallback_route: list[str] | None = None,
    ) -> None:
        if output not in ("text", "json"):
            raise ValueError(f"output must be 'text' or 'json', got {output!r}")
        if output_key is None and output != "json":
            raise ValueError("output_key may be null only with output: json (the answer's "
                             "fields are merged into the payload)")
        self.system, self.prompt, self.defaults = system, prompt, dict(defaults or {})
        self.output, self.output_key = output, output_key
        self.schema = schema_model(schema)
        self.json_mode, self.seed_key, self.usage_key = json_mode, seed_key, usage_key
        self.routes = {str(k).lower(): list(v) for k, v in (routes or {}).items()}
        self.route_field, self.fallback_route = route_field, fallback_route
        self.client = LLMClient(backend=backend, model=model, api_base=api_base,
                                api_key=api_key, offline=offline, temperature=temperature,
                                max_tokens=max_tokens, timeout=timeout)

    # -- the handlers -----------------------------------------------------------------

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        answer, spent = self.ask(payload)
        return self._store(payload, answer, spent)

    def route(self, envelope: dict[str, Any]) -> dict[str, Any]:
        payload = envelope["payload"]
        answer, spent = self.ask(payload)
        label = self.label(answer)
        chosen = self.routes.get(label, self.fallback_route)
        if chosen is None:
            raise RouteError(f"model {self.client.model!r} answered label {label!r}, which "
                             f"names no route (routes: {', '.join(self.routes)}) and "
                             f"there is no fallback_route")
        stored = self._store(payload, answer, spent)
        stored["routed"] = {"label": label, "to": chosen,
                            "fallback": label not in self.routes}
        return {**envelope, "payload": stored,
                "route": {**envelope["route"], "next": [*chosen, *envelope["route"]["next"]]}}

    # -- the call ---------------------------------------------------------------------

    def messages(self, payload: dict[str, Any]) -> list[dict[str, Any]]:
        fields = {**self.defaults, **payload}
        out: list[dict[str, Any]] = []
        if self.system:
            out.append({"role": "system", "content": render(self.system, fields,
                                                             key="system")})
        out.append({"role": "user", "content": render(self.prompt, fields, key="prompt")})
        return out

    def ask(self, payload: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """The answer (text, or the validated JSON) and the payload's usage after it."""
        seed = int(payload[self.seed_key]) if self.seed_key in payload else None
        completion = self.client.complete(
            self.messages(payload), seed=seed,
            json_mode=self.output == "json" and self.json_mode)
        spent = usage.add(payload.get(self.usage_key), completion)
        if self.output == "text":
            return completion.text.strip(), spent
        return parse_json(completion.text, model=self.client.model, schema=self.schema), spent

    def label(self, answer: Any) -> str:
        if isinstance(answer, dict):
            if self.route_field not in answer:
                raise OutputError(f"model {self.client.model!r} answered without "
                                  f"{self.route_field!r}: {json.dumps(answer)[:200]}")
            answer = answer[self.route_field]
        return str(answer).strip().strip(".").lower()

    def _store(self, payload: dict[str, Any], answer: Any,
               spent: dict[str, Any]) -> dict[str, Any]:
        if self.output_key is None:
            return {**payload, **answer, self.usage_key: spent}
        return {**payload, self.output_key: answer, self.usage_key: spent}

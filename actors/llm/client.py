"""Calling a model through litellm: one completion, what it cost, and an offline stand-in.

Every LLM actor of the project (the ``llm`` template, the judge, the patterns' glue)
calls a model through here, so that the rules hold in one place:

- litellm is imported lazily, once, under one lock (handler threads importing it
  concurrently for the first time can see it half-initialised), in offline mode: no
  price-list download and no telemetry (``LITELLM_LOCAL_MODEL_COST_MAP``,
  ``LITELLM_OFFLINE_MODE``), so its bundled price list prices the calls;
- every call passes ``num_retries=0``: a provider error (429, 5xx, timeout) is raised as
  litellm raised it and the actor's manifest (the ``llm-resilient`` flavor) decides on
  retries, backoff and ``Retry-After``; nothing here sleeps or retries;
- each :class:`Completion` carries its usage: the tokens the provider reported and the
  cost litellm computes from them (``None`` for a model litellm has no price for);
- with no API key (``backend: auto``), or ``backend: offline``, the very same litellm
  call goes over HTTP to a :class:`~asya_agents.fakes.FakeLLMProvider` started in this
  process, which answers with a *responder* the mesh names (``offline:
  module.func``, a function from the OpenAI request to the answer's text). So a mesh
  runs, and is tested, with no network and no key, through the code that runs with one.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import socket
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["BACKENDS", "Completion", "LLMClient", "OutputError", "import_path", "load_litellm",
           "parse_json", "placeholder"]

BACKENDS = ("auto", "llm", "offline")
_IMPORT = threading.Lock()
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.MULTILINE)


class OutputError(ValueError):
    """The model answered, but not with what was asked for (JSON, or the schema).

    A ``ValueError``: under the ``llm-resilient`` flavor's ``default`` policy it is tried
    once and ends in ``error-end`` with the model's answer quoted in the reason."""


def load_litellm() -> Any:
    """Import litellm once. Call it from ``__init__`` (one thread, at startup)."""
    with _IMPORT:
        # litellm reads these when it is imported: no price-list download, no telemetry.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
        try:
            import litellm
        except ImportError as exc:
            raise ImportError(
                f"LLM actors need litellm: pip install 'asya-agents[judge]' ({exc})"
            ) from exc
        litellm.suppress_debug_info = True  # no "Provider List" banners on stdout
        global _WARM
        if not _WARM:
            _warm_errors(litellm)
            _WARM = True
    return litellm


_WARM = False


def _warm_errors(litellm: Any) -> None:
    """Raise one error through litellm, now, at startup.

    litellm builds its error types on the first error a process meets (imports and
    pydantic models: 0.3-0.7 s of one core). Met at the first 429, that time passes
    before the replica hears of it, while its other calls go on at a pace the provider
    just refused: the first 429 of each new replica would bring a handful more. So the
    error is met here, against a local port that refuses connections (a socket bound
    and not listening), and the first real 429 is raised in milliseconds."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        with contextlib.suppress(Exception):  # the point: litellm maps the refusal
            litellm.completion(model="openai/warm-up", api_base=f"http://127.0.0.1:{port}/v1",
                               api_key="x", num_retries=0, max_retries=0, timeout=5,
                               messages=[{"role": "user", "content": "warm up"}])


def import_path(path: str, *, key: str) -> Any:
    """The object ``module.attr`` names; ``ValueError`` naming the config ``key``."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{key}: {path!r} is not 'module.name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{key}: cannot import {module_name!r} for {path!r} ({exc}; "
                         f"is it on the mesh's pythonPath?)") from exc
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"{key}: module {module_name!r} has no {attr!r}") from exc


def placeholder(request: dict[str, Any]) -> str:
    """The offline answer when the mesh names no responder: says what it is."""
    user = [m for m in request.get("messages", []) if m.get("role") == "user"]
    asked = json.dumps(user[-1]["content"]) if user else '""'
    if request.get("response_format"):
        return "{}"
    return (f"(offline placeholder: set ASYA_LLM_API_KEY for a model's answer) asked: "
            f"{asked[:200]}")


@dataclass(frozen=True)
class Completion:
    """One answer and what it cost."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost: float | None  # None: litellm has no price for this model

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class LLMClient:
    """A model behind litellm, or (offline) the local fake provider behind the same code.

    Built once per replica from the actor's ``spec.config``; unset ``model``,
    ``api_base`` and ``api_key`` come from :class:`~asya_agents.settings.LLMSettings`
    (``ASYA_LLM_*``, ``OPENAI_API_KEY``)."""

    def __init__(self, *, backend: str = "auto", model: str | None = None,
                 api_base: str | None = None, api_key: str | None = None,
                 offline: str | None = None, temperature: float = 0.0,
                 max_tokens: int | None = None, timeout: float = 60.0) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        from asya_agents.settings import LLMSettings

        settings = LLMSettings()
        self.model = model or settings.model
        self.api_base = api_base or settings.api_base
        self.api_key = api_key or settings.api_key
        self.backend = backend if backend != "auto" else ("llm" if self.api_key else "offline")
        self.temperature, self.max_tokens, self.timeout = temperature, max_tokens, timeout
        self.responder: Callable[[dict[str, Any]], str] = (
            import_path(offline, key="offline") if offline else placeholder)
        if self.backend == "offline":
            self._start_offline()
        load_litellm()  # at startup, in one thread; a missing package fails here

    def _start_offline(self) -> None:
        from asya_agents.fakes import FakeLLMProvider

        provider = FakeLLMProvider(responder=self.responder, record=False).start()
        weakref.finalize(self, provider.stop)  # the server goes with the replica
        self.api_base, self.api_key = provider.base_url, "offline"
        # The fake speaks OpenAI's protocol, whatever provider the real model is on.
        self.model = "openai/" + self.model.split("/", 1)[-1]

    def complete(self, messages: list[dict[str, Any]], *, json_mode: bool = False,
                 seed: int | None = None, temperature: float | None = None) -> Completion:
        """One completion, no retries."""
        litellm = load_litellm()
        extra: dict[str, Any] = {}
        if json_mode:
            extra["response_format"] = {"type": "json_object"}
        if seed is not None:
            extra["seed"] = seed
        if self.max_tokens is not None:
            extra["max_tokens"] = self.max_tokens
        response = litellm.completion(
            model=self.model, messages=messages, api_base=self.api_base,
            api_key=self.api_key, timeout=self.timeout, num_retries=0, drop_params=True,
            temperature=self.temperature if temperature is None else temperature, **extra)
        content = response.choices[0].message.content
        usage = getattr(response, "usage", None)
        return Completion(text=content if isinstance(content, str) else "", model=self.model,
                          prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                          completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                          cost=_cost(litellm, response))


def _cost(litellm: Any, response: Any) -> float | None:
    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception:  # litellm raises for a model without a price: unknown, not free
        return None


def parse_json(text: str, *, model: str, schema: type[BaseModel] | None = None) -> Any:
    """The JSON object in ``text`` (possibly fenced), validated by ``schema`` when given
    (returned as a plain dict); :class:`OutputError` naming the model otherwise."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise OutputError(f"model {model!r} answered without a JSON object: {text[:200]!r}")
    try:
        data = json.loads(body[start:end + 1])
    except json.JSONDecodeError as exc:
        raise OutputError(f"model {model!r} answered invalid JSON ({exc}): "
                          f"{text[:200]!r}") from exc
    if schema is None:
        return data
    try:
        return schema.model_validate(data).model_dump(mode="json")
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}"
                             for e in exc.errors())
        raise OutputError(f"model {model!r} answered JSON that does not fit "
                          f"{schema.__name__} ({problems}): {text[:200]!r}") from exc

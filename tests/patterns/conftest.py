"""Fixtures of the pattern meshes' tests: no API key in the environment, and a mesh
whose LLM actors call a fake provider this test started on 127.0.0.1.

The actors run the code they run with a real model (litellm, over HTTP); only the
provider behind ``api_base`` is the test's :class:`~asya_agents.fakes.FakeLLMProvider`,
which records every request so that a test can read what each actor asked.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.fakes import FakeLLMProvider
from asya_agents.manifest import LoadedMesh, load_mesh
from tests.conftest import ROOT

PATTERNS = ROOT / "mesh" / "patterns"
Responder = Callable[[dict[str, Any]], str]
Provider = Callable[[Responder], FakeLLMProvider]
KEYS = ("ASYA_LLM_API_KEY", "OPENAI_API_KEY", "ASYA_LLM_API_BASE", "ASYA_LLM_MODEL")


@pytest.fixture(autouse=True)
def no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key in the developer's shell must not make a test call a real model."""
    for key in KEYS:
        monkeypatch.delenv(key, raising=False)


def pattern(name: str, provider: FakeLLMProvider | None = None) -> LoadedMesh:
    """``mesh/patterns/NAME``, its LLM actors pointed at ``provider`` when given (the
    ``llm`` backend, as with a key), else on their offline stand-in."""
    loaded = load_mesh(PATTERNS / name)
    if provider is not None:
        for actor in loaded.actors.values():
            if "backend" in actor.spec.config:
                actor.spec.config.update(backend="llm", api_base=provider.base_url,
                                         api_key="test-key", model="openai/gpt-4o-mini")
    return loaded


@pytest.fixture
def provider() -> Iterator[Provider]:
    """Starts a fake provider answering with the responder given; stops it after."""
    started: list[FakeLLMProvider] = []

    def start(responder: Responder) -> FakeLLMProvider:
        llm = FakeLLMProvider(responder=responder).start()
        started.append(llm)
        return llm

    yield start
    for llm in started:
        llm.stop()


def system_of(request: dict[str, Any]) -> str:
    return str(request["messages"][0]["content"])


def user_of(request: dict[str, Any]) -> str:
    return str(request["messages"][-1]["content"])


def asked(llm: FakeLLMProvider, prefix: str) -> list[dict[str, Any]]:
    """The requests whose system prompt starts with ``prefix``."""
    return [r for r in llm.requests if system_of(r).startswith(prefix)]


def example(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((PATTERNS / name / "example.json").read_text())
    return data


def folders() -> list[Path]:
    return sorted(p for p in PATTERNS.iterdir() if (p / "mesh.yaml").is_file())


def steps(name: str) -> Any:
    """The glue module of ``mesh/patterns/NAME`` (``NAME_steps``), imported the way the
    mesh's pythonPath makes it importable."""
    folder = str(PATTERNS / name)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module(f"{name}_steps")

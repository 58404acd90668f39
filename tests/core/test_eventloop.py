"""ASYA_EVENT_LOOP: which event loop replicas run on."""

from __future__ import annotations

import asyncio
import sys

import pytest

from asya_agents import eventloop
from asya_agents.errors import ConfigError
from asya_agents.settings import Settings


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_auto_runs_on_uvloop_where_it_is_installed() -> None:
    pytest.importorskip("uvloop", reason="uvloop comes with the rabbitmq and sqs extras")
    assert eventloop.run(_loop_module()).startswith("uvloop")
    assert eventloop.run(_loop_module(), kind="uvloop").startswith("uvloop")


def test_asyncio_runs_on_the_standard_loop() -> None:
    assert eventloop.run(_loop_module(), kind="asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_to_install(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    assert eventloop.run(_loop_module()).startswith("asyncio")
    with pytest.raises(ConfigError, match=r"asya-agents\[fast\]"):
        eventloop.loop_factory("uvloop")


def test_an_unknown_loop_is_refused_naming_the_variable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="ASYA_EVENT_LOOP"):
        eventloop.loop_factory("trio")
    monkeypatch.setenv("ASYA_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="event_loop"):
        Settings()

"""`asya review`: MESH opens the console, hash-password writes an entry, and a missing
streamlit is one clear line with the install hint."""

from __future__ import annotations

import sys

import pytest
from click.testing import CliRunner

from asya_agents.cli import main
from tests.ui.conftest import MESH


def test_without_streamlit_the_console_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "streamlit", None)  # import streamlit now fails
    result = CliRunner().invoke(main, ["review", str(MESH), "--headless"])
    assert result.exit_code == 2
    assert "pip install 'asya-agents[ui]'" in result.output


def test_a_mesh_that_does_not_exist_is_named() -> None:
    result = CliRunner().invoke(main, ["review", "no/such/mesh"])
    assert result.exit_code == 2 and "no/such/mesh" in result.output


def test_help_lists_open_and_hash_password() -> None:
    result = CliRunner().invoke(main, ["review", "--help"])
    assert result.exit_code == 0
    assert "open" in result.output and "hash-password" in result.output

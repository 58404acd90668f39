"""Streamlit glue shared by the pages: the mesh's console, the signed-in reviewer, and
one-shot messages that survive the rerun a button causes.

The :class:`~ui.console.Console` is a cached resource, one per mesh and store for the
whole server (its store connections and transport are shared by every browser tab);
who is signed in is per browser session.
"""

from __future__ import annotations

import sys
from typing import Literal

import streamlit as st

from asya_agents.settings import Settings
from ui.auth import Reviewers, load_reviewers
from ui.console import Console, ConsoleConfig

__all__ = ["console", "flash", "release_consoles", "reviewer", "reviewers", "show_flash",
           "sign_out"]

Level = Literal["success", "info", "warning", "error"]


def _close(console: Console) -> None:
    console.close()


@st.cache_resource(show_spinner=False, on_release=_close)
def _console(mesh: str, state_dir: str | None, transport: str | None,
             store_url: str | None) -> Console:
    from pathlib import Path

    return Console(ConsoleConfig(Path(mesh), Path(state_dir) if state_dir else None,
                                 transport, store_url))


def console() -> Console:
    """The console of the mesh named on the command line (``-- --mesh MESH``)."""
    cfg = ConsoleConfig.from_argv(sys.argv[1:])
    url = cfg.store_url or Settings().store.url
    return _console(str(cfg.mesh), str(cfg.state_dir) if cfg.state_dir else None,
                    cfg.transport, url)


def release_consoles() -> None:
    """Close every cached console (tests; a server closes them when it stops)."""
    _console.clear()


def reviewers() -> Reviewers:
    return load_reviewers(Settings().console)


def reviewer() -> str:
    """The signed-in reviewer; stops the page if nobody is (no anonymous decisions)."""
    name = st.session_state.get("reviewer")
    if not name:
        st.error("Sign in to review.")
        st.stop()
    return str(name)


def sign_out() -> None:
    st.session_state.pop("reviewer", None)


def flash(level: Level, text: str) -> None:
    """Show ``text`` once, on the next run of the page."""
    st.session_state.setdefault("flash", []).append((level, text))


def show_flash() -> None:
    for level, text in st.session_state.pop("flash", []):
        getattr(st, level)(text)

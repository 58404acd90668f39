"""Streamlit glue shared by the pages: the mesh's console, the signed-in reviewer, and
one-shot messages that survive the rerun a button causes.

The :class:`~ui.console.Console` is a cached resource, one per mesh and store for the
whole server (its store connections and transport are shared by every browser tab);
who is signed in is per browser session, re-checked against the session's row on
every run, and kept across reloads by a cookie that holds the session's token
(:mod:`ui.signin`). A cookie rather than the URL: a token in the address bar would go
wherever a reviewer pastes a link.
"""

from __future__ import annotations

import sys
from typing import Literal

import streamlit as st

from asya_agents.settings import ConsoleSettings, Settings
from ui.auth import Reviewers, load_reviewers
from ui.console import Console, ConsoleConfig, md_escape
from ui.signin import COOKIE, TOKEN_CHARS, Gate, Outcome, Session

__all__ = ["client", "console", "console_settings", "current_session", "flash",
           "release_consoles", "remember", "reviewer", "reviewers", "show_flash",
           "sign_out", "sync_cookie"]

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


def console_settings() -> ConsoleSettings:
    return Settings().console


def reviewers() -> Reviewers:
    return load_reviewers(console_settings())


def client() -> str:
    """Who is asking, for throttling: the first entry of the trusted proxy's header
    when one is configured, else the connection's address (``loopback`` for local)."""
    header = console_settings().client_ip_header
    if header:
        value = _text(st.context.headers.get(header))
        if value and value.split(",")[0].strip():
            return value.split(",")[0].strip()
    return _text(st.context.ip_address) or "loopback"


def _text(value: object) -> str | None:
    """A value of ``st.context`` if it is a string (a test's fake client gives objects)."""
    return value if isinstance(value, str) else None


# -- the session ---------------------------------------------------------------------------


def remember(outcome: Outcome) -> None:
    """Keep a successful sign-in in this browser session (and its token, for the cookie)."""
    assert outcome.session is not None
    st.session_state["session"] = outcome.session
    st.session_state["reviewer"] = outcome.session.reviewer
    if outcome.token:
        st.session_state["token"] = outcome.token
    st.session_state.pop("clear-cookie", None)


def _forget() -> Session | None:
    st.session_state.pop("reviewer", None)
    st.session_state.pop("token", None)
    return st.session_state.pop("session", None)  # type: ignore[no-any-return]


def current_session(gate: Gate) -> Session | None:
    """The signed-in session, re-checked on every run: this browser session's, else the
    one the cookie names (a reload), else nobody. A cookie that signs nobody in is
    cleared."""
    session = st.session_state.get("session")
    if session is not None:
        if gate.check(session) is not None:
            return session  # type: ignore[no-any-return]
        _forget()
        flash("info", "Your session ended (signed out or expired): sign in again.")
    token = _text(st.context.cookies.get(COOKIE))
    if token and not st.session_state.get("clear-cookie"):
        resumed = gate.resume(token)
        if resumed is not None:
            remember(Outcome("ok", session=resumed, token=token))
            return resumed
        st.session_state["clear-cookie"] = True
        flash("info", "Your session ended (signed out or expired): sign in again.")
    return None


def sign_out(gate: Gate) -> None:
    """End the session everywhere (its row), and clear the cookie on the next run."""
    session = _forget()
    if session is not None:
        gate.sign_out(session)
        if session.via == "oidc":
            st.session_state["oidc-logout"] = True
    st.session_state["clear-cookie"] = True


def sync_cookie(gate: Gate) -> None:
    """Write the session's token into the cookie, or clear it after a sign-out. The
    token is ours (base64url and a dot), so it can go into the script as it is."""
    token = st.session_state.get("token")
    session = st.session_state.get("session")
    if st.session_state.get("clear-cookie"):
        value, age = "", 0
    elif token and session is not None and TOKEN_CHARS.fullmatch(token):
        value, age = token, max(int(session.expires_at - gate.now()), 0)
    else:
        return
    st.html(f"<script>document.cookie = '{COOKIE}={value}; Path=/; Max-Age={age};"
            " SameSite=Strict' + (location.protocol === 'https:' ? '; Secure' : '');"
            "</script>", unsafe_allow_javascript=True)


def reviewer() -> str:
    """The signed-in reviewer; stops the page if nobody is (no anonymous decisions)."""
    name = st.session_state.get("reviewer")
    if not name:
        st.error("Sign in to review.")
        st.stop()
    return str(name)


# -- one-shot messages -------------------------------------------------------------------------


def flash(level: Level, text: str) -> None:
    """Show ``text`` once, on the next run of the page (literally: it often quotes ids,
    URLs and errors that came with a payload)."""
    st.session_state.setdefault("flash", []).append((level, text))


def show_flash() -> None:
    for level, text in st.session_state.pop("flash", []):
        getattr(st, level)(md_escape(text))

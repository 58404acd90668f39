"""The review console: where people decide what the judge was unsure about.

Run it with ``asya review MESH`` (which runs ``streamlit run ui/app.py -- --mesh MESH``).
This script is the gate and the frame: it signs the reviewer in (no page is shown, and
no decision taken, anonymously) with a name and password from the reviewer list, or
through an OpenID Connect provider when one is configured (:mod:`ui.signin` throttles
guessing and keeps the session across reloads), and then hands over to one of three
pages:

- ``views/queue.py``: paused items side by side with their originals, and the decisions;
- ``views/history.py``: every decision, who took it and when, as CSV too;
- ``views/status.py``: queues, replicas, throughput and errors, with replay.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Streamlit puts this folder on sys.path, not the project root that holds `ui`.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from asya_agents.errors import AsyaError  # noqa: E402
from ui import state  # noqa: E402
from ui.auth import Reviewers  # noqa: E402
from ui.console import Console, md_code, md_escape  # noqa: E402
from ui.signin import Gate  # noqa: E402


def password_form(gate: Gate, known: Reviewers) -> None:
    """Name and password; the gate throttles, then checks."""
    with st.form("sign-in"):
        name = st.text_input("Name", key="sign-in-name")
        password = st.text_input("Password", type="password", key="sign-in-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        outcome = gate.sign_in(known, name, password, client=state.client())
        if outcome.session is not None:
            state.remember(outcome)
            st.rerun()
        st.error(md_escape(outcome.message))


def single_sign_on(gate: Gate) -> None:
    """The provider's button; an identity it returned becomes a session if allowed."""
    label = md_escape(state.console_settings().oidc_label)
    user = st.user.to_dict()
    if user.get("is_logged_in"):
        outcome = gate.oidc(user)
        if outcome.session is not None:
            state.remember(outcome)
            st.rerun()
        st.error(md_escape(outcome.message))
        if outcome.reason == "refused" and st.button(f"Sign out of {label}",
                                                     key="sign-out-oidc"):
            st.logout()
    if st.button(f"Sign in with {label}", type="primary", key="sign-in-oidc"):
        st.login()


def sign_in_page(console: Console) -> None:
    try:
        known = state.reviewers()
    except AsyaError as exc:
        st.error(f"Reviewer credentials are misconfigured: {md_escape(str(exc))}")
        st.stop()
    st.title("Review console")
    state.sync_cookie(console.gate)
    state.show_flash()
    sso = state.console_settings().oidc_enabled
    if not len(known) and not sso:
        st.error("No reviewers are configured. Set ASYA_REVIEWERS (name:hash, …) or "
                 "ASYA_REVIEWERS_FILE; `asya review hash-password NAME` writes an entry.")
        st.stop()
    if sso:
        single_sign_on(console.gate)
    if len(known):
        password_form(console.gate, known)


def main() -> None:
    try:
        console = state.console()
    except AsyaError as exc:
        st.set_page_config(page_title="asya review", layout="wide")
        st.error(f"Cannot open the mesh: {md_escape(str(exc))}")
        st.stop()
    st.set_page_config(page_title=f"asya review · {console.mesh}", layout="wide")
    if st.session_state.pop("oidc-logout", False):
        st.logout()  # the provider's cookie too; our session row is ended already
        st.stop()
    session = state.current_session(console.gate)
    if session is None:
        sign_in_page(console)
        st.stop()
    with st.sidebar:
        state.sync_cookie(console.gate)
        st.markdown(f"**{md_escape(session.reviewer)}** · mesh {md_code(console.mesh)} "
                    f"({md_escape(console.kind)})")
        st.button("Sign out", on_click=state.sign_out, args=(console.gate,), key="sign-out")
    page = st.navigation([
        st.Page("views/queue.py", title="Review queue", icon=":material/rate_review:",
                default=True),
        st.Page("views/history.py", title="History", icon=":material/history:"),
        st.Page("views/status.py", title="Mesh status", icon=":material/monitoring:"),
    ])
    page.run()


main()

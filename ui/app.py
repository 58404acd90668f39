"""The review console: where people decide what the judge was unsure about.

Run it with ``asya review MESH`` (which runs ``streamlit run ui/app.py -- --mesh MESH``).
This script is the gate and the frame: it signs the reviewer in (no page is shown, and
no decision taken, anonymously) and then hands over to one of three pages:

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


def sign_in_form() -> None:
    """The sign-in form; on success the reviewer's name goes into the session."""
    try:
        known = state.reviewers()
    except AsyaError as exc:
        st.error(f"Reviewer credentials are misconfigured: {exc}")
        st.stop()
    st.title("Review console")
    if not len(known):
        st.error("No reviewers are configured. Set ASYA_REVIEWERS (name:hash, …) or "
                 "ASYA_REVIEWERS_FILE; `asya review hash-password NAME` writes an entry.")
        st.stop()
    with st.form("sign-in"):
        name = st.text_input("Name", key="sign-in-name")
        password = st.text_input("Password", type="password", key="sign-in-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        if known.check(name, password):
            st.session_state["reviewer"] = name.strip()
            st.rerun()
        st.error("Wrong name or password.")


def main() -> None:
    try:
        console = state.console()
    except AsyaError as exc:
        st.set_page_config(page_title="asya review", layout="wide")
        st.error(f"Cannot open the mesh: {exc}")
        st.stop()
    st.set_page_config(page_title=f"asya review · {console.mesh}", layout="wide")
    if not st.session_state.get("reviewer"):
        sign_in_form()
        st.stop()
    with st.sidebar:
        st.markdown(f"**{st.session_state['reviewer']}** · mesh `{console.mesh}` "
                    f"({console.kind})")
        st.button("Sign out", on_click=state.sign_out, key="sign-out")
    page = st.navigation([
        st.Page("views/queue.py", title="Review queue", icon=":material/rate_review:",
                default=True),
        st.Page("views/history.py", title="History", icon=":material/history:"),
        st.Page("views/status.py", title="Mesh status", icon=":material/monitoring:"),
    ])
    page.run()


main()

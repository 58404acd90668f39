"""Mesh status: is work flowing, and what failed?

Per actor the queue depth, messages in flight and replicas (the transport's counts and
the local supervisor's ``status.json``, as ``asya status`` shows them); throughput and
error rate over time, from samples of the result store's totals taken while the page is
open (shared by every session, so a second reviewer sees the same curve); and the
latest failures with their reasons, each with a button that replays it (what
``asya replay`` does).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict

import streamlit as st

from asya_agents.errors import AsyaError
from asya_agents.stores import ResultRecord
from ui import state
from ui.console import Console, md_code, md_escape, rates

REFRESH_SECONDS = 5
REJECTED_IN_REVIEW = "rejected-in-review"


def _replay(console: Console, envelope_id: str) -> None:
    try:
        actor = console.replay(envelope_id)
    except AsyaError as exc:
        state.flash("error", f"{envelope_id}: not replayed: {exc}")
        return
    state.flash("success", f"{envelope_id}: replayed to {actor}.")


def actors_table(console: Console) -> None:
    rows = [asdict(r) for r in console.actors()]
    running = console.supervisor_running()
    st.subheader("Actors")
    if not running:
        st.caption("No local supervisor reports replicas (on a cluster, KEDA scales them).")
    st.dataframe(rows, hide_index=True, width="stretch")


def totals_row(console: Console) -> None:
    totals = console.results.totals()
    counts = console.counts()
    cols = st.columns(4)
    cols[0].metric("Succeeded", totals.succeeded)
    cols[1].metric("Failed", totals.failed)
    cols[2].metric("Paused", totals.paused)
    cols[3].metric("Waiting for review", counts.get("pending", 0))


def charts(console: Console) -> None:
    import pandas as pd  # type: ignore[import-untyped]

    points = rates(console.sample())
    st.subheader("Throughput and errors")
    if not points:
        st.caption("Collecting samples (one every few seconds while this page is open).")
        return
    frame = pd.DataFrame(points)
    frame["at"] = pd.to_datetime(frame["at"], unit="s", utc=True)
    frame = frame.set_index("at")
    c1, c2 = st.columns(2)
    c1.caption("Ended per second")
    c1.line_chart(frame[["succeeded/s", "failed/s"]], height=220)
    c2.caption("Error rate (failed / ended)")
    c2.line_chart(frame[["error rate"]], height=220)


def _error_title(rec: ResultRecord) -> str:
    err = rec.error or {}
    kind = str(err.get("type", "?")).rsplit(".", 1)[-1]
    where = err.get("actor") or rec.route.get("curr", "?")
    return f"{md_code(rec.id)} · at {md_escape(str(where))} · {md_escape(kind)}: " \
           f"{md_escape(str(err.get('message', ''))[:100])}"


def failures(console: Console) -> None:
    st.subheader("Latest errors")
    records = console.failures()
    if not records:
        st.caption("No failed envelope.")
        return
    for rec in records:
        err = rec.error or {}
        with st.expander(_error_title(rec)):
            when = dt.datetime.fromtimestamp(rec.recorded_at, dt.UTC)
            st.markdown(f"**Reason** {md_escape(str(err.get('reason', '?')))} · **attempt** "
                        f"{md_escape(str(err.get('attempt', '?')))} · **recorded** "
                        f"{when:%Y-%m-%d %H:%M:%S} UTC  \n**Message** "
                        f"{md_escape(str(err.get('message', '')))}")
            if err.get("traceback"):
                st.code(str(err["traceback"]), language="text")
            st.json(rec.payload, expanded=False)
            if err.get("reason") == REJECTED_IN_REVIEW:
                # A person decided this one; replaying would overrule them.
                st.caption("Rejected by a reviewer: not replayable from here.")
                continue
            st.button("Replay", key=f"replay-{rec.id}", on_click=_replay,
                      args=(console, rec.id))


def page() -> None:
    console = state.console()
    state.reviewer()
    st.title(f"Mesh status · {md_escape(console.mesh)}")
    live = st.toggle("Refresh every 5 s", value=True, key="status-live")

    @st.fragment(run_every=REFRESH_SECONDS if live else None)
    def live_part() -> None:
        state.show_flash()  # a replay's outcome: its click reruns only this fragment
        totals_row(console)
        actors_table(console)
        charts(console)
        failures(console)

    live_part()


page()

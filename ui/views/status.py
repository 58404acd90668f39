"""Mesh status: is work flowing, and what failed?

Per actor the queue depth, messages in flight and replicas (the transport's counts and
the local supervisor's ``status.json``, as ``asya status`` shows them); the same over
time with hops and envelopes ended per second and the error rate, from the history the
supervisor keeps (``history.jsonl``: the last hour, there as soon as the page opens;
without a local supervisor, samples of the result store taken while the page is open);
and the latest failures with their reasons, each with a button that replays it (what
``asya replay`` does).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

import streamlit as st

from asya_agents.errors import AsyaError
from asya_agents.observe.history import series, thinned, totals_series
from asya_agents.stores import ResultRecord
from ui import charts, state
from ui.console import Console, md_code, md_escape, rates

REFRESH_SECONDS = 5
#: Samples a chart draws at most (an hour of history is thinned to this many).
CHART_POINTS = 360
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


def history_charts(console: Console) -> None:
    samples = console.mesh_history()
    st.subheader("Over time")
    if not samples:
        _session_charts(console)
        return
    span = samples[-1]["at"] - samples[0]["at"]
    st.caption(f"The last {_span(span)} as the local supervisor sampled it "
               f"({len(samples)} samples).")
    samples = thinned(samples, most=CHART_POINTS)
    points = charts.frame_of(series(samples))
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.actor_chart(points, "depth", title="Queue depth",
                                       unit="messages", count=True), width="stretch")
    c2.altair_chart(charts.actor_chart(points, "in_flight", title="In flight",
                                       unit="messages", count=True), width="stretch")
    c1.altair_chart(charts.actor_chart(points, "replicas", title="Replicas",
                                       unit="replicas", count=True), width="stretch")
    c2.altair_chart(charts.actor_chart(points, "succeeded_per_s", title="Hops done per second",
                                       unit="hops / s", count=False), width="stretch")
    ended = totals_series(samples)
    if ended:
        _ended_charts(charts.frame_of(ended))


def _session_charts(console: Console) -> None:
    """No supervisor history (a cluster, where KEDA scales): the result store's totals
    sampled while this page is open."""
    points = rates(console.sample())
    st.caption("No history from a local supervisor (`asya up` keeps one); sampling "
               "the result store while this page is open.")
    if points:
        _ended_charts(charts.frame_of(points))


def _ended_charts(frame: Any) -> None:
    c1, c2 = st.columns(2)
    c1.altair_chart(charts.ended_chart(frame), width="stretch")
    c2.altair_chart(charts.error_rate_chart(frame), width="stretch")


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


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
        history_charts(console)
        failures(console)

    live_part()


page()

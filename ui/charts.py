"""The mesh status page's charts, as Altair specs built from the supervisor's history.

Kept apart from the page so that what a chart says (time on the x-axis, whole numbers
for counts, rates per second with two decimals at most, the error rate in per cent)
is built, and tested, without Streamlit. The data come from
:mod:`asya_agents.observe.history`: the ring ``asya up`` keeps in the state folder, so
a chart shows the last hour as soon as the page opens.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Any

from asya_agents.observe.history import Point

__all__ = ["COUNT_FORMAT", "RATE_FORMAT", "actor_chart", "ended_chart", "error_rate_chart",
           "frame_of", "time_axis"]

#: d3-format of counts: whole numbers, thousands separated.
COUNT_FORMAT = ",d"
#: d3-format of rates: at most two decimals, trailing zeros trimmed (0.5, 12, 3.25).
RATE_FORMAT = ",.2~f"
_TIME_FORMAT = "%H:%M:%S"
_HEIGHT = 200


def frame_of(rows: list[dict[str, Any]] | list[Point]) -> Any:
    """A DataFrame of ``rows`` (dicts or :class:`Point` s, each with ``at`` in seconds
    since the epoch) with a ``time`` column of timezone-aware datetimes."""
    import pandas as pd  # type: ignore[import-untyped]

    records = [asdict(r) if isinstance(r, Point) else r for r in rows]
    frame = pd.DataFrame(records)
    if not frame.empty:
        frame["time"] = [dt.datetime.fromtimestamp(t, dt.UTC) for t in frame["at"]]
    return frame


def time_axis() -> Any:
    import altair as alt

    return alt.X("time:T", title=None, axis=alt.Axis(format=_TIME_FORMAT, labelAngle=0,
                                                     tickCount=5))


def _y(field: str, title: str, *, count: bool) -> Any:
    import altair as alt

    axis = alt.Axis(format=COUNT_FORMAT, tickMinStep=1) if count else \
        alt.Axis(format=RATE_FORMAT)
    # a count's axis starts at zero and never shows fractions of a message
    return alt.Y(f"{field}:Q", title=title, axis=axis, scale=alt.Scale(zero=True))


def actor_chart(frame: Any, field: str, *, title: str, unit: str, count: bool) -> Any:
    """One line per actor of ``field`` over time; ``count`` for whole numbers (depth,
    in flight, replicas: drawn as steps), else a rate per second."""
    import altair as alt

    number = RATE_FORMAT if not count else COUNT_FORMAT
    data = frame[["time", "actor", field]].dropna()
    return alt.Chart(data, title=title, height=_HEIGHT).mark_line(
        interpolate="step-after" if count else "monotone", point=False,
    ).encode(
        x=time_axis(), y=_y(field, unit, count=count),
        color=alt.Color("actor:N", title="actor"),
        tooltip=[alt.Tooltip("time:T", format=_TIME_FORMAT), "actor:N",
                 alt.Tooltip(f"{field}:Q", title=unit, format=number)],
    )


def ended_chart(frame: Any) -> Any:
    """Envelopes ended per second, succeeded and failed, for the whole mesh."""
    import altair as alt

    long = frame.melt(id_vars=["time"], value_vars=["succeeded/s", "failed/s"],
                      var_name="ended", value_name="per second")
    return alt.Chart(long, title="Ended per second", height=_HEIGHT).mark_line(
        interpolate="monotone").encode(
        x=time_axis(), y=_y("per second", "envelopes / s", count=False),
        color=alt.Color("ended:N", title=None,
                        scale=alt.Scale(domain=["succeeded/s", "failed/s"],
                                        range=["#2e7d32", "#c62828"])),
        tooltip=[alt.Tooltip("time:T", format=_TIME_FORMAT), "ended:N",
                 alt.Tooltip("per second:Q", format=RATE_FORMAT)],
    )


def error_rate_chart(frame: Any) -> Any:
    """Failed over ended, in per cent, for the whole mesh."""
    import altair as alt

    return alt.Chart(frame, title="Error rate (failed / ended)", height=_HEIGHT).mark_line(
        interpolate="step-after", color="#c62828").encode(
        x=time_axis(),
        y=alt.Y("error rate:Q", title=None, axis=alt.Axis(format=".0%"),
                scale=alt.Scale(domain=[0, 1])),
        tooltip=[alt.Tooltip("time:T", format=_TIME_FORMAT),
                 alt.Tooltip("error rate:Q", format=".1%")],
    )

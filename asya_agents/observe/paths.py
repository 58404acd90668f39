"""Ended envelopes as people read them: ``asya results`` and, hop by hop, ``--id``.

Every hop the runtime handles is appended to ``meta.hops`` (actor, attempt, when it
started and ended), and fan-out children inherit their parent's hops, so an ended
envelope read from the result store tells its whole story: where it waited (queue time
between the end of one hop and the start of the next, backoff included) and where it
ran (handler time).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from asya_agents.stores.base import ResultRecord, ResultStore
from asya_agents.tracecontext import trace_id_of

__all__ = ["HopTiming", "describe_path", "hop_timings", "paths_of", "render_paths",
           "results_table"]


@dataclass(frozen=True)
class HopTiming:
    """One hop: ``waited`` in the queue before it, ``took`` in the handler; ``at`` is
    seconds since the root was sent (``None`` when the send time is unknown)."""

    actor: str
    attempt: int
    started: float
    ended: float
    waited: float | None
    took: float
    at: float | None


def hop_timings(envelope: dict[str, Any]) -> list[HopTiming]:
    """The hops of a stored envelope (``ResultRecord.envelope``), oldest first."""
    meta = envelope.get("meta") or {}
    created = meta.get("created")
    previous = created
    out = []
    for hop in meta.get("hops") or []:
        started, ended = float(hop["started"]), float(hop["ended"])
        out.append(HopTiming(
            actor=hop["actor"], attempt=int(hop.get("attempt", 1)), started=started,
            ended=ended, waited=None if previous is None else max(started - previous, 0.0),
            took=max(ended - started, 0.0), at=None if created is None else started - created,
        ))
        previous = ended
    return out


def describe_path(record: dict[str, Any], envelope: dict[str, Any]) -> dict[str, Any]:
    """``record`` (a ``ResultRecord.to_json()``) with ``trace_id``, ``path`` (the hops
    with their timings) and ``total`` (seconds from sending to recording)."""
    hops = hop_timings(envelope)
    created = (envelope.get("meta") or {}).get("created")
    recorded = record.get("recorded_at")
    total = None if created is None or recorded is None else max(recorded - created, 0.0)
    return {**record, "trace_id": trace_id_of(envelope.get("headers") or {}),
            "path": [asdict(h) for h in hops], "total": total}


def render_paths(paths: list[dict[str, Any]]) -> Any:
    """A rich renderable: one table per ended envelope, one row per hop."""
    from rich.console import Group
    from rich.table import Table

    tables = []
    for rec in paths:
        title = f"{rec['id']}: {rec['status']}"
        if rec.get("total") is not None:
            title += f" in {_secs(rec['total'])}"
        if rec.get("error"):
            title += f" — {rec['error']['type'].rsplit('.', 1)[-1]}: {rec['error']['message']}"
        table = Table(title=title, caption=f"trace {rec.get('trace_id') or '–'}",
                      title_justify="left", caption_justify="left")
        for col in ("#", "actor", "attempt", "at", "waited", "took"):
            table.add_column(col, justify="left" if col == "actor" else "right")
        for index, hop in enumerate(rec["path"], 1):
            table.add_row(str(index), hop["actor"], str(hop["attempt"]),
                          _secs(hop["at"]), _secs(hop["waited"]), _secs(hop["took"]))
        tables.append(table)
    return Group(*tables)


def _secs(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:.1f}ms" if value < 1 else f"{value:.2f}s"


def paths_of(store: ResultStore, envelope_id: str, *, status: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """The paths of ``envelope_id``, or of every ended piece of the root of that id."""
    found = [r for r in store.results(status=status) if envelope_id in (r.id, r.root_id)]
    return [describe_path(r.to_json(), r.envelope) for r in found[:limit]]


def results_table(records: list[ResultRecord]) -> Any:
    """A rich table of ended envelopes: id, status, path, and payload or error."""
    from rich.table import Table

    table = Table()
    for col in ("id", "status", "path", "payload / error"):
        table.add_column(col)
    for rec in records:
        path = " → ".join([*rec.route.get("prev", []), rec.route.get("curr", "")])
        detail = (f"{rec.error['type'].rsplit('.', 1)[-1]}: {rec.error['message']}"
                  if rec.error else json.dumps(rec.payload))
        table.add_row(rec.id, rec.status, path, detail[:120])
    return table

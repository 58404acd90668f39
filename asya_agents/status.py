"""The status of a mesh, read the one way ``asya status``, the console and the gateway do.

Two sources make it up. The queues say how much waits and how much is held
(:meth:`~asya_agents.transports.base.TransportAdmin.stats`); the local supervisor says
how many replicas run, in ``status.json`` in the mesh's state folder, which it rewrites
every turn of its loop (:func:`write_supervisor`) and which is stale, meaning the
supervisor is gone, once it is older than :data:`STALE_AFTER` (:func:`read_supervisor`).
The result store adds the totals of ended envelopes. :func:`snapshot` joins them into
the object ``asya status --json`` prints, whose shape is part of the command line's
contract (DESIGN.md). :func:`served` tells ``asya send`` whether anything will take
what it just enqueued. The supervisor's past (the last hour of samples, in
``history.jsonl`` beside ``status.json``) is :mod:`asya_agents.observe.history`'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asya_agents.resiliency.throttle import OutageMarks
from asya_agents.stores.base import ResultStore
from asya_agents.stores.groups import GroupStore
from asya_agents.transports.base import TransportAdmin

__all__ = [
    "STALE_AFTER",
    "STATUS_FILE",
    "actor_rows",
    "fan_in_groups",
    "rate_limit_state",
    "read_supervisor",
    "served",
    "snapshot",
    "totals",
    "write_supervisor",
]

STATUS_FILE = "status.json"
#: A status.json older than this says the supervisor that wrote it is gone.
STALE_AFTER = 10.0


def read_supervisor(state_dir: Path, *, now: Callable[[], float] = time.time
                    ) -> dict[str, Any]:
    """The supervisor's last status, or ``{}`` when none runs (no file, or stale)."""
    try:
        data = json.loads((state_dir / STATUS_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    if not isinstance(data, dict) or now() - float(data.get("updated", 0)) >= STALE_AFTER:
        return {}
    return data


def write_supervisor(state_dir: Path, data: dict[str, Any]) -> None:
    """Replace ``status.json`` atomically (a reader never sees half a file)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f"{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(state_dir / STATUS_FILE)


async def actor_rows(actors: list[str], transport: TransportAdmin,
                     supervisor: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per actor: ``depth``, ``in_flight``, ``delayed``, ``replicas``, the replicas'
    ``metrics`` URLs, and what the supervisor knows of their crashes: ``restarts``,
    ``crash_looping`` (its replicas die before they get going, and restart with a
    growing backoff), ``last_error`` and ``next_restart_in`` (seconds, or ``None``)."""
    known = supervisor.get("actors", {})
    rows: dict[str, dict[str, Any]] = {}
    for name in actors:
        st = await transport.stats(name)
        rep = known.get(name, {})
        rows[name] = {"depth": st.depth, "in_flight": st.in_flight, "delayed": st.delayed,
                      "replicas": rep.get("replicas", 0), "metrics": rep.get("metrics", []),
                      "restarts": rep.get("restarts", 0),
                      "crash_looping": bool(rep.get("crash_looping", False)),
                      "last_error": rep.get("last_error"),
                      "next_restart_in": rep.get("next_restart_in")}
    return rows


async def served(supervisor: dict[str, Any], transport: TransportAdmin,
                 queue: str) -> bool | None:
    """Whether anything takes messages from ``queue``: ``True`` when a local supervisor
    runs the mesh or the broker counts consumers on it (RabbitMQ: a cluster, another
    machine), ``False`` when the broker counts none and no supervisor runs, ``None``
    when no supervisor runs and the broker cannot tell (SQS, and the embedded
    transport, which only ``asya up`` serves)."""
    if supervisor:
        return True
    consumers = (await transport.stats(queue)).consumers
    return None if consumers is None else consumers > 0


def totals(store: ResultStore) -> dict[str, int]:
    t = store.totals()
    return {"succeeded": t.succeeded, "failed": t.failed, "paused": t.paused,
            "duplicates": t.duplicates}


async def snapshot(*, mesh: str, transport_kind: str, actors: list[str],
                   transport: TransportAdmin, store: ResultStore,
                   supervisor: dict[str, Any], state_dir: Path | None = None,
                   now: Callable[[], float] = time.time,
                   groups: GroupStore | None = None) -> dict[str, Any]:
    """The ``asya status --json`` object: ``mesh``, ``transport``, ``running`` (a
    supervisor is up), ``actors`` (see :func:`actor_rows`, plus ``rate_limit``: see
    :func:`rate_limit_state`) and ``totals``; with the mesh's fan-in ``groups`` store,
    ``fan_in`` too (see :func:`fan_in_groups`)."""
    rows = await actor_rows(actors, transport, supervisor)
    for name, row in rows.items():
        row["rate_limit"] = rate_limit_state(state_dir, name, now=now())
    report = {"mesh": mesh, "transport": transport_kind, "running": bool(supervisor),
              "actors": rows, "totals": totals(store)}
    if groups is not None:
        report["fan_in"] = fan_in_groups(groups, now=now())
    return report


def fan_in_groups(groups: GroupStore, *, now: float, shown: int = 20) -> dict[str, Any]:
    """Per ``fanIn`` actor with groups not yet done: ``open`` (how many), ``oldest_age``
    (seconds since the oldest's first child) and the ``shown`` oldest ``groups``, each
    with its ``group`` (the parent's id), ``members``, ``received`` (the share of the
    group that arrived) and ``age``."""
    out: dict[str, Any] = {}
    for g in groups.open_groups():
        entry = out.setdefault(g.actor, {"open": 0, "oldest_age": 0.0, "groups": []})
        entry["open"] += 1
        age = max(now - g.opened_at, 0.0)
        entry["oldest_age"] = max(entry["oldest_age"], age)
        if len(entry["groups"]) < shown:
            entry["groups"].append({"group": g.group, "members": g.members,
                                    "received": g.received, "age": age, "state": g.state})
    return out


def rate_limit_state(state_dir: Path | None, actor: str, *, now: float) -> str | None:
    """``store unreachable since …: <error>`` while a replica of ``actor`` in this
    state folder reports its shared rate-limit store unreachable, else ``None``."""
    if state_dir is None:
        return None
    outage = OutageMarks(state_dir).read(actor, now=now)
    return outage.describe() if outage is not None else None

"""The status of a mesh, read the one way ``asya status``, the console and the gateway do.

Two sources make it up. The queues say how much waits and how much is held
(:meth:`~asya_agents.transports.base.TransportAdmin.stats`); the local supervisor says
how many replicas run, in ``status.json`` in the mesh's state folder, which it rewrites
every turn of its loop (:func:`write_supervisor`) and which is stale, meaning the
supervisor is gone, once it is older than :data:`STALE_AFTER` (:func:`read_supervisor`).
The result store adds the totals of ended envelopes. :func:`snapshot` joins them into
the object ``asya status --json`` prints, whose shape is part of the command line's
contract (DESIGN.md).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from asya_agents.stores.base import ResultStore
from asya_agents.transports.base import TransportAdmin

__all__ = [
    "STALE_AFTER",
    "STATUS_FILE",
    "actor_rows",
    "read_supervisor",
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
    """Per actor: ``depth``, ``in_flight``, ``delayed``, ``replicas`` and the replicas'
    ``metrics`` URLs."""
    known = supervisor.get("actors", {})
    rows: dict[str, dict[str, Any]] = {}
    for name in actors:
        st = await transport.stats(name)
        rep = known.get(name, {})
        rows[name] = {"depth": st.depth, "in_flight": st.in_flight, "delayed": st.delayed,
                      "replicas": rep.get("replicas", 0), "metrics": rep.get("metrics", [])}
    return rows


def totals(store: ResultStore) -> dict[str, int]:
    t = store.totals()
    return {"succeeded": t.succeeded, "failed": t.failed, "paused": t.paused,
            "duplicates": t.duplicates}


async def snapshot(*, mesh: str, transport_kind: str, actors: list[str],
                   transport: TransportAdmin, store: ResultStore,
                   supervisor: dict[str, Any]) -> dict[str, Any]:
    """The ``asya status --json`` object: ``mesh``, ``transport``, ``running`` (a
    supervisor is up), ``actors`` (see :func:`actor_rows`) and ``totals``."""
    return {"mesh": mesh, "transport": transport_kind, "running": bool(supervisor),
            "actors": await actor_rows(actors, transport, supervisor),
            "totals": totals(store)}

"""The result store's contract, shared by the SQLite and PostgreSQL stores.

A record only moves forward. Each end of an envelope has a *key*: ``(generation,
round, rank)``, where ``generation`` is ``meta.replays`` (how often ``asya replay`` sent
it back), ``round`` the length of ``route.prev`` at that end (every hop adds one) and
``rank`` 0 for ``paused`` and 1 for the final ``succeeded`` and ``failed``. A write is
applied only when its key is above the record's; any other copy (a redelivery of an
earlier hop, a stale failure after a replay) is counted in ``duplicates`` and changes
nothing else. So a redelivered review hop never turns ``succeeded`` back into
``paused``, and the order in which copies arrive does not matter.

Two explicit acts *reopen* an ended record, and never delete it: a review decision
(:meth:`ResultStore.reopen`, ``paused`` → ``running``) and a replay
(:meth:`ResultStore.mark_replay`, ``failed`` → ``replaying`` → ``running``). A reopened
record is no ended record: reads leave it out until the envelope's next end, whose key
is above the reopened one's by construction, replaces it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["ENDED", "REOPENED", "Key", "ResultRecord", "ResultStore", "Row", "Status",
           "Totals", "is_postgres_url", "key_of", "replayed", "result_row"]

Status = Literal["succeeded", "failed", "paused"]
ENDED: tuple[Status, ...] = ("succeeded", "failed", "paused")
#: Statuses of a reopened record: a replay recorded but not yet sent (``replaying``),
#: and an envelope sent again by a replay or a review decision (``running``).
REOPENED = ("replaying", "running")
#: ``(generation, round, rank)``: the order of a record's ends (module docstring).
Key = tuple[int, int, int]


@dataclass
class ResultRecord:
    """One ended envelope, as ``asya results --json`` prints it."""

    id: str
    root_id: str
    status: str
    payload: Any
    route: dict[str, Any]
    envelope: dict[str, Any]
    error: dict[str, Any] | None
    weight: str
    recorded_at: float
    duplicates: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "root_id": self.root_id,
            "status": self.status,
            "payload": self.payload,
            "route": self.route,
            "error": self.error,
            "hops": self.envelope.get("meta", {}).get("hops", []),
            "recorded_at": self.recorded_at,
            "duplicates": self.duplicates,
        }


@dataclass(frozen=True)
class Totals:
    succeeded: int = 0
    failed: int = 0
    paused: int = 0
    duplicates: int = 0


def is_postgres_url(url: str | None) -> bool:
    """Whether ``ASYA_STORE_URL`` names a PostgreSQL database (else SQLite)."""
    return url is not None and url.startswith(("postgresql://", "postgres://"))


def key_of(status: str, generation: int, round: int) -> Key:
    """The key of an end: a final status ranks above ``paused`` (and a reopened
    record) of the same generation and round."""
    return generation, round, 1 if status in ("succeeded", "failed") else 0


@dataclass(frozen=True)
class Row:
    """The columns both stores write for an ended envelope."""

    id: str
    mesh: str
    root_id: str
    status: str
    weight: str
    envelope: str
    error: str | None
    recorded_at: float
    generation: int
    round: int

    @property
    def key(self) -> Key:
        return key_of(self.status, self.generation, self.round)


def result_row(status: Status, envelope: dict[str, Any], now: float, *, mesh: str = ""
               ) -> Row:
    """The row of ``envelope`` ended with ``status`` at ``now`` in ``mesh``."""
    meta = envelope.get("meta") or {}
    error = meta.get("error")
    return Row(id=envelope["id"], mesh=mesh, root_id=meta.get("root_id") or envelope["id"],
               status=status, weight=meta.get("weight", "1"), envelope=json.dumps(envelope),
               error=json.dumps(error) if error else None, recorded_at=now,
               generation=int(meta.get("replays") or 0),
               round=len((envelope.get("route") or {}).get("prev") or []))


def replayed(envelope: dict[str, Any], generation: int) -> dict[str, Any]:
    """The envelope a replay sends for a failed ``envelope``: a first attempt at the
    actor where it failed, no error, ``meta.replays`` the replay's generation. A pure
    function of the record, so an interrupted replay sends the very same envelope."""
    out = copy.deepcopy(envelope)
    meta = out.setdefault("meta", {})
    meta.update(attempt=1, error=None, replays=generation)
    return out


class ResultStore(Protocol):
    #: Whether a write is a short local call that may run on the event loop (SQLite)
    #: rather than on a thread (a database across the network).
    inline_writes: bool

    def record(self, status: Status, envelope: dict[str, Any]) -> bool:
        """Record an end of an envelope; False when it is no later than the record's
        (a duplicate or stale copy, counted in ``duplicates``)."""
        ...

    def record_many(self, status: Status, envelopes: list[dict[str, Any]]) -> list[bool]:
        """:meth:`record` for several envelopes in one transaction (group commit)."""
        ...

    def reopen(self, envelope: dict[str, Any]) -> bool:
        """A review decision resumes ``envelope`` (as it was parked): its ``paused``
        record becomes ``running`` until its next end; False when the record is no
        longer that pause (a later end already landed)."""
        ...

    def mark_replay(self, envelope_id: str) -> dict[str, Any]:
        """Record the intent to replay failed ``envelope_id`` (``replaying``, one
        generation on) and return the envelope to send; for a replay recorded but not
        yet sent, the same envelope again. :class:`~asya_agents.errors.StoreError`
        when there is no such failure."""
        ...

    def replay_sent(self, envelope_id: str, *, generation: int) -> None:
        """The replayed envelope was accepted by the transport: ``running``."""
        ...

    def unfinished_replays(self, *, older_than: float) -> list[str]:
        """Ids of replays recorded more than ``older_than`` seconds ago and not sent."""
        ...

    def get(self, envelope_id: str) -> ResultRecord | None:
        """The ended record of ``envelope_id`` (``None`` while it runs)."""
        ...

    def pieces(self, root_id: str) -> list[ResultRecord]:
        """Every ended piece of root ``root_id`` (itself, or its fan-out children)."""
        ...

    def results(self, *, status: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        ...

    def totals(self) -> Totals: ...

    def ended_weight(self, root_ids: list[str]) -> dict[str, float]:
        """For each root id, the share of it that has ended (1.0 when all of it has)."""
        ...

    def forget(self, envelope_id: str) -> None:
        """Drop a record altogether (clean-up by hand; nothing in the mesh calls it)."""
        ...

    def close(self) -> None: ...

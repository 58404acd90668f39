"""The result store's contract, shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["ENDED", "ResultRecord", "ResultStore", "Status", "Totals", "is_postgres_url",
           "result_row"]

Status = Literal["succeeded", "failed", "paused"]
ENDED: tuple[Status, ...] = ("succeeded", "failed", "paused")


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


def result_row(status: Status, envelope: dict[str, Any], now: float) -> tuple[Any, ...]:
    """(id, root_id, status, weight, envelope JSON, error JSON, recorded_at): the columns
    both stores write for an ended envelope."""
    meta = envelope.get("meta") or {}
    error = meta.get("error")
    return (envelope["id"], meta.get("root_id") or envelope["id"], status,
            meta.get("weight", "1"), json.dumps(envelope),
            json.dumps(error) if error else None, now)


class ResultStore(Protocol):
    #: Whether a write is a short local call that may run on the event loop (SQLite)
    #: rather than on a thread (a database across the network).
    inline_writes: bool

    def record(self, status: Status, envelope: dict[str, Any]) -> bool:
        """Record an ended envelope; False when this id already had this status (a
        duplicate delivery, counted in ``duplicates``)."""
        ...

    def record_many(self, status: Status, envelopes: list[dict[str, Any]]) -> list[bool]:
        """:meth:`record` for several envelopes in one transaction (group commit)."""
        ...

    def get(self, envelope_id: str) -> ResultRecord | None: ...

    def results(self, *, status: str | None = None, limit: int | None = None) -> list[ResultRecord]:
        ...

    def totals(self) -> Totals: ...

    def ended_weight(self, root_ids: list[str]) -> dict[str, float]:
        """For each root id, the share of it that has ended (1.0 when all of it has)."""
        ...

    def forget(self, envelope_id: str) -> None:
        """Drop a record (before a replay)."""
        ...

    def close(self) -> None: ...

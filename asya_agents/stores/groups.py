"""The fan-in group store: what a ``fanIn`` actor has gathered so far, for every replica.

A group is the children of one parent envelope (``group`` is the parent's id) arriving
at one gather actor. Its state lives here, not in a replica, so that a SIGKILLed replica
loses nothing and several replicas share the groups. The store is the compare-and-set
half of an outbox; the gather (:mod:`asya_agents.fanin`) is the other half:

1. :meth:`GroupStore.add` records a child once (its id is the key: a redelivered copy
   changes nothing) and adds its share; the group is *ready* once the shares add up to
   exactly 1, or at once when a child failed and the group is not ``partial``.
2. :meth:`GroupStore.claim` lets one finisher at a time build the gathered envelope,
   for ``until`` seconds; a finisher that died is replaced once its claim ran out.
3. :meth:`GroupStore.store_outbox` keeps the first result built (a second finisher
   gets the first's), so that whatever is published, and published again after a
   crash, is the very same envelope with the parent's id.
4. :meth:`GroupStore.finish` marks it done once the transport accepted it; a late
   child of a done group is a duplicate. :meth:`GroupStore.due` names groups past
   their ``timeout`` (they become ready, ending ``timeout``) and ready ones whose
   finisher's claim ran out. Done groups are kept for ``retention`` seconds (to know
   late copies) and then purged.

Shares are fractions as text and added exactly (:class:`fractions.Fraction`). On SQLite
every transaction holds the write lock; on PostgreSQL the group's row is locked
(``FOR UPDATE``) before it is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from asya_agents.stores.sql import Database, Query, SQLiteDB

__all__ = ["Added", "Claim", "GroupRow", "GroupStore", "Member", "OpenGroup", "schema"]

State = Literal["open", "ready", "done"]

_DDL = [
    """CREATE TABLE IF NOT EXISTS fanin_groups (
        mesh TEXT NOT NULL, actor TEXT NOT NULL, group_id TEXT NOT NULL,
        state TEXT NOT NULL, ending TEXT, received TEXT NOT NULL,
        members INTEGER NOT NULL, opened_at DOUBLE PRECISION NOT NULL,
        deadline DOUBLE PRECISION NOT NULL, claimant TEXT,
        claimed_until DOUBLE PRECISION NOT NULL, attempt INTEGER NOT NULL,
        out_queue TEXT, out_body TEXT, outcome TEXT, ended_at DOUBLE PRECISION,
        PRIMARY KEY (mesh, actor, group_id))""",
    "CREATE INDEX IF NOT EXISTS fanin_groups_due ON fanin_groups (mesh, actor, state, deadline)",
    """CREATE TABLE IF NOT EXISTS fanin_members (
        mesh TEXT NOT NULL, actor TEXT NOT NULL, group_id TEXT NOT NULL,
        child_id TEXT NOT NULL, idx INTEGER NOT NULL, share TEXT NOT NULL,
        failed INTEGER NOT NULL, envelope TEXT NOT NULL,
        PRIMARY KEY (mesh, actor, group_id, child_id))""",
]
_ROW = ("state, ending, received, members, opened_at, deadline, claimant, claimed_until,"
        " attempt, out_queue, out_body, outcome")


@dataclass(frozen=True)
class Member:
    """One child as it reached the gather."""

    child_id: str
    index: int
    share: str
    failed: bool
    envelope: dict[str, Any]


@dataclass(frozen=True)
class GroupRow:
    group: str
    state: State
    ending: str | None
    received: str
    members: int
    opened_at: float
    deadline: float
    claimant: str | None
    claimed_until: float
    attempt: int
    outbox: tuple[str, str] | None
    outcome: str | None


@dataclass(frozen=True)
class Added:
    """What :meth:`GroupStore.add` did: whether the child opened the group, whether it
    was a copy already recorded, and the group as it is now."""

    opened: bool
    duplicate: bool
    group: GroupRow


@dataclass(frozen=True)
class Claim:
    """What :meth:`GroupStore.claim` found: ``build`` (this finisher builds the outbox),
    ``publish`` (the outbox is stored: publish it), ``busy`` (another finisher holds the
    claim) or ``done``."""

    action: Literal["build", "publish", "busy", "done"]
    group: GroupRow


@dataclass(frozen=True)
class OpenGroup:
    """An open group, for ``asya status``."""

    actor: str
    group: str
    members: int
    received: str
    opened_at: float
    state: State


class GroupStore:
    """Fan-in groups of one mesh, on SQLite or PostgreSQL."""

    def __init__(self, db: Database, *, mesh: str) -> None:
        self.db = db
        self.mesh = mesh
        #: SQLite is a short local call: the gather writes it on the event loop.
        self.inline_writes = isinstance(db, SQLiteDB)
        self._lock_sql = " FOR UPDATE" if db.dialect == "postgres" else ""

    # -- one group, read under its lock --------------------------------------------------

    def _locked(self, q: Query, actor: str, group: str) -> GroupRow | None:
        rows = q(f"SELECT {_ROW} FROM fanin_groups WHERE mesh = ? AND actor = ? AND"
                 f" group_id = ?{self._lock_sql}", (self.mesh, actor, group))
        return _row(group, rows[0]) if rows else None

    def _set(self, q: Query, actor: str, group: str, **fields: Any) -> None:
        sets = ", ".join(f"{name} = ?" for name in fields)
        q(f"UPDATE fanin_groups SET {sets} WHERE mesh = ? AND actor = ? AND group_id = ?",
          (*fields.values(), self.mesh, actor, group))

    # -- the steps -----------------------------------------------------------------------

    def add(self, actor: str, group: str, member: Member, *, now: float, timeout: float,
            partial: bool) -> Added:
        """Record ``member`` in ``group`` (opened with a deadline ``timeout`` from now
        if it is the first), once."""
        with self.db.tx() as q:
            q("INSERT INTO fanin_groups (mesh, actor, group_id, state, received, members,"
              " opened_at, deadline, claimed_until, attempt) VALUES (?, ?, ?, 'open', '0',"
              " 0, ?, ?, 0, 1) ON CONFLICT DO NOTHING",
              (self.mesh, actor, group, now, now + timeout))
            row = self._locked(q, actor, group)
            assert row is not None
            opened = row.members == 0
            if row.state != "open" or q(
                    "SELECT 1 FROM fanin_members WHERE mesh = ? AND actor = ? AND"
                    " group_id = ? AND child_id = ?", (self.mesh, actor, group,
                                                      member.child_id)):
                return Added(opened=False, duplicate=True, group=row)
            q("INSERT INTO fanin_members (mesh, actor, group_id, child_id, idx, share,"
              " failed, envelope) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
              (self.mesh, actor, group, member.child_id, member.index, member.share,
               int(member.failed), json.dumps(member.envelope)))
            received = Fraction(row.received) + Fraction(member.share)
            state: State = row.state
            ending = row.ending
            if member.failed and not partial:
                state, ending = "ready", "failed"
            elif received >= 1:
                state, ending = "ready", "complete"
            self._set(q, actor, group, received=str(received), members=row.members + 1,
                      state=state, ending=ending)
            row = self._locked(q, actor, group)
            assert row is not None
            return Added(opened=opened, duplicate=False, group=row)

    def claim(self, actor: str, group: str, *, token: str, now: float,
              until: float) -> Claim:
        """Take the right to build ``group``'s outbox until ``until``, unless another
        finisher holds it; or say that the outbox is stored, or the group done."""
        with self.db.tx() as q:
            row = self._locked(q, actor, group)
            if row is None or row.state == "done":
                return Claim("done", row or _gone(group))
            if row.outbox is not None:
                return Claim("publish", row)
            if row.state != "ready" or (row.claimant not in (None, token)
                                        and row.claimed_until > now):
                return Claim("busy", row)
            self._set(q, actor, group, claimant=token, claimed_until=until)
            return Claim("build", row)

    def release(self, actor: str, group: str, *, until: float) -> None:
        """A finisher whose handler failed and will be retried: the claim is let go, the
        next finisher may come at ``until`` (the retry's delay), one attempt on."""
        with self.db.tx() as q:
            row = self._locked(q, actor, group)
            if row is not None and row.outbox is None:
                self._set(q, actor, group, claimant=None, claimed_until=until,
                          attempt=row.attempt + 1)

    def store_outbox(self, actor: str, group: str, *, queue: str, body: str,
                     outcome: str) -> tuple[str, str]:
        """Keep the gathered envelope (``queue``, ``body``) unless one is kept already;
        the one kept is returned."""
        with self.db.tx() as q:
            row = self._locked(q, actor, group)
            if row is not None and row.outbox is not None:
                return row.outbox
            self._set(q, actor, group, out_queue=queue, out_body=body, outcome=outcome)
            return queue, body

    def finish(self, actor: str, group: str, *, now: float) -> str | None:
        """The outbox was published: the group is done and its members dropped. The
        outcome (``gathered``, ``failed``, ``timeout``) when this call ended it, ``None``
        when it was done already."""
        with self.db.tx() as q:
            row = self._locked(q, actor, group)
            if row is None or row.state == "done":
                return None
            self._set(q, actor, group, state="done", ended_at=now)
            q("DELETE FROM fanin_members WHERE mesh = ? AND actor = ? AND group_id = ?",
              (self.mesh, actor, group))
            return row.outcome

    def members(self, actor: str, group: str) -> list[Member]:
        """The children recorded in ``group``, in fan-out order."""
        with self.db.tx() as q:
            rows = q("SELECT child_id, idx, share, failed, envelope FROM fanin_members"
                     " WHERE mesh = ? AND actor = ? AND group_id = ? ORDER BY idx, child_id",
                     (self.mesh, actor, group))
        return [Member(r[0], int(r[1]), r[2], bool(r[3]), json.loads(r[4])) for r in rows]

    def due(self, actor: str, *, now: float, limit: int = 100) -> list[str]:
        """Groups a sweep should finish: open ones past their deadline (made ready,
        ending ``timeout``) and ready ones whose finisher's claim ran out."""
        with self.db.tx() as q:
            late = [r[0] for r in q(
                "SELECT group_id FROM fanin_groups WHERE mesh = ? AND actor = ? AND"
                " state = 'open' AND deadline <= ? LIMIT ?", (self.mesh, actor, now, limit))]
            for group in late:
                self._set(q, actor, group, state="ready", ending="timeout")
            stuck = [r[0] for r in q(
                "SELECT group_id FROM fanin_groups WHERE mesh = ? AND actor = ? AND"
                " state = 'ready' AND claimed_until <= ? LIMIT ?",
                (self.mesh, actor, now, limit))]
        return list(dict.fromkeys([*late, *stuck]))

    def purge(self, actor: str, *, before: float) -> int:
        """Forget done groups that ended before ``before``; how many."""
        with self.db.tx() as q:
            rows = q("SELECT group_id FROM fanin_groups WHERE mesh = ? AND actor = ? AND"
                     " state = 'done' AND ended_at < ?", (self.mesh, actor, before))
            q("DELETE FROM fanin_groups WHERE mesh = ? AND actor = ? AND state = 'done'"
              " AND ended_at < ?", (self.mesh, actor, before))
        return len(rows)

    def open_groups(self, *, limit: int = 1000) -> list[OpenGroup]:
        """Groups not yet done, oldest first (``asya status``)."""
        with self.db.tx() as q:
            rows = q("SELECT actor, group_id, members, received, opened_at, state FROM"
                     " fanin_groups WHERE mesh = ? AND state != 'done' ORDER BY opened_at"
                     " LIMIT ?", (self.mesh, limit))
        return [OpenGroup(r[0], r[1], int(r[2]), r[3], float(r[4]), r[5]) for r in rows]

    def close(self) -> None:
        self.db.close()


def _row(group: str, r: tuple[Any, ...]) -> GroupRow:
    outbox = (r[9], r[10]) if r[9] is not None else None
    return GroupRow(group=group, state=r[0], ending=r[1], received=r[2], members=int(r[3]),
                    opened_at=float(r[4]), deadline=float(r[5]), claimant=r[6],
                    claimed_until=float(r[7]), attempt=int(r[8]), outbox=outbox,
                    outcome=r[11])


def _gone(group: str) -> GroupRow:
    return GroupRow(group=group, state="done", ending=None, received="0", members=0,
                    opened_at=0.0, deadline=0.0, claimant=None, claimed_until=0.0,
                    attempt=1, outbox=None, outcome=None)


def schema() -> list[str]:
    """The tables and index (created when missing)."""
    return list(_DDL)

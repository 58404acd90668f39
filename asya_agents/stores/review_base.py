"""The review store: envelopes parked for a person, and the decisions taken on them.

One SQL implementation serves SQLite (beside the embedded transport) and PostgreSQL (a
cluster); the two modules ``review_sqlite`` and ``review_postgres`` only open the
connection and run a transaction. Three properties matter and are kept in SQL, so they
hold across threads, processes and machines:

- **Parking is idempotent**: an item is keyed by the envelope id, its *generation*
  (``meta.replays``: how often ``asya replay`` sent it back) and its *round* (the length
  of ``route.prev`` when it was parked). A redelivered copy of the same hop, or of an
  earlier one, is a no-op and a decided round stays decided; the same envelope parked
  again later (after a reviewer sent it back, or replayed after a rejection) opens a
  new round on the same row.
- **A decision is a compare-and-set**: ``UPDATE … WHERE status = 'pending'``; of two
  reviewers clicking at once exactly one row update succeeds, and the loser reads who
  won.
- **Resuming is an outbox**: a decided row stays ``published = 0`` until the envelope it
  resumes was accepted by the transport; a publisher *claims* such rows for a lease, so
  two publishers do not both send, and a crashed one's claim expires so that a re-run
  publishes what is left.

Several meshes may share one database: every item carries its mesh, and the readers
of one mesh (its review actor's sweep, its console) pass ``mesh=`` to every read.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from asya_agents.errors import ReviewItemNotFound
from asya_agents.stores.sql import Database, Query, columns

__all__ = [
    "DECISIONS",
    "DecideResult",
    "Decision",
    "DecisionRecord",
    "ReviewItem",
    "ReviewItemNotFound",
    "ReviewStore",
    "SQLReviewStore",
    "schema",
    "score_of",
]

Decision = Literal["approve", "reject", "send_back", "edit"]
DECISIONS: tuple[str, ...] = ("approve", "reject", "send_back", "edit")


@dataclass
class ReviewItem:
    """One parked envelope, pending or decided."""

    id: str
    mesh: str
    actor: str
    envelope: dict[str, Any]
    payload: Any
    parked_at: float
    deadline: float | None
    status: Literal["pending", "decided"]
    decision: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None
    notes: str | None = None
    round: int = 0
    score: float | None = None
    edited_payload: Any = None
    options: dict[str, Any] = field(default_factory=dict)
    published: bool = False
    generation: int = 0


@dataclass(frozen=True)
class DecideResult:
    """``won`` is False when someone else decided first; ``item`` then shows who."""

    won: bool
    item: ReviewItem


@dataclass(frozen=True)
class DecisionRecord:
    """One recorded decision: who decided what on which item, and when."""

    id: str
    round: int
    decision: str
    reviewer: str
    decided_at: float
    notes: str | None


class ReviewStore(Protocol):
    def park(self, envelope: dict[str, Any], *, actor: str, mesh: str,
             deadline: float | None, options: dict[str, Any] | None = None) -> bool: ...

    def pending(self, *, mesh: str | None = None, actor: str | None = None,
                older_than: float | None = None, min_score: float | None = None,
                max_score: float | None = None, limit: int | None = None) -> list[ReviewItem]:
        ...

    def get(self, id: str) -> ReviewItem | None: ...

    def decide(self, id: str, *, decision: str, reviewer: str, notes: str | None = None,
               payload: Any = None) -> DecideResult: ...

    def history(self, limit: int | None = None, *, mesh: str | None = None
                ) -> list[DecisionRecord]: ...

    def counts(self, *, mesh: str | None = None) -> dict[str, int]: ...

    def due(self, now: float, *, limit: int = 100, mesh: str | None = None
            ) -> list[ReviewItem]: ...

    def claim_unpublished(self, *, lease: float = 30.0, limit: int = 100,
                          mesh: str | None = None) -> list[ReviewItem]:
        ...

    def mark_published(self, id: str, *, round: int) -> None: ...

    def release(self, id: str, *, round: int) -> None: ...

    def close(self) -> None: ...


def score_of(payload: Any) -> float | None:
    """The judge's score in a payload (``payload["verdict"]["score"]``), if any."""
    if not isinstance(payload, dict):
        return None
    verdict = payload.get("verdict")
    score = verdict.get("score") if isinstance(verdict, dict) else payload.get("score")
    return float(score) if isinstance(score, int | float) else None



_COLS = ("id, mesh, actor, envelope, parked_at, deadline, status, decision, decided_by,"
         " decided_at, notes, round, score, edited, options, published, generation")


def _where(clauses: list[str], mesh: str | None) -> tuple[str, tuple[Any, ...]]:
    """``clauses`` joined into a WHERE, with ``mesh=?`` when a mesh is given."""
    params: tuple[Any, ...] = ()
    if mesh is not None:
        clauses, params = [*clauses, "mesh=?"], (mesh,)
    return " AND ".join(clauses), params


class SQLReviewStore:
    """The review store's logic in portable SQL, on ``db`` (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self._clock = clock

    def _tx(self) -> AbstractContextManager[Query]:
        """A transaction that holds a write lock from its start (SQLite: BEGIN
        IMMEDIATE); yields ``query(sql, params) -> rows``, with ``?`` placeholders."""
        return self.db.tx()

    def _rowcount(self, query: Query, sql: str, params: tuple[Any, ...]) -> int:
        """Run an UPDATE ending in ``RETURNING id``; how many rows it changed."""
        return len(query(sql, params))

    # -- parking ------------------------------------------------------------------------

    def park(self, envelope: dict[str, Any], *, actor: str, mesh: str,
             deadline: float | None, options: dict[str, Any] | None = None) -> bool:
        """Park ``envelope``; False when this round of it is already parked."""
        env_id = str(envelope["id"])
        rnd = len(envelope.get("route", {}).get("prev", []))
        gen = int((envelope.get("meta") or {}).get("replays") or 0)
        payload = envelope.get("payload")
        row = (env_id, mesh, actor, json.dumps(envelope), self._clock(), deadline, rnd,
               score_of(payload), json.dumps(options or {}), gen)
        with self._tx() as q:
            inserted = q(
                "INSERT INTO review_items (id, mesh, actor, envelope, parked_at, deadline,"
                " round, score, options, generation, status, published) VALUES"
                " (?,?,?,?,?,?,?,?,?,?, 'pending', 0) ON CONFLICT (id) DO NOTHING"
                " RETURNING id", row)
            if inserted:
                return True
            old = q("SELECT generation, round FROM review_items WHERE id=?", (env_id,))
            if not old or tuple(old[0]) >= (gen, rnd):
                return False  # this round (decided or not) or a later one is there
            # A later round of the same envelope (sent back, or replayed, and here again).
            q("UPDATE review_items SET mesh=?, actor=?, envelope=?, parked_at=?, deadline=?,"
              " round=?, score=?, options=?, generation=?, status='pending', decision=NULL,"
              " decided_by=NULL, decided_at=NULL, notes=NULL, edited=NULL, published=0,"
              " claim=NULL, claimed_at=NULL WHERE id=? AND generation=? AND round=?",
              (*row[1:], env_id, *old[0]))
            return True

    # -- reading ------------------------------------------------------------------------

    def _item(self, row: tuple[Any, ...]) -> ReviewItem:
        envelope = json.loads(row[3])
        return ReviewItem(
            id=row[0], mesh=row[1], actor=row[2], envelope=envelope,
            payload=envelope.get("payload"), parked_at=row[4], deadline=row[5],
            status=row[6], decision=row[7], decided_by=row[8], decided_at=row[9],
            notes=row[10], round=row[11], score=row[12],
            edited_payload=json.loads(row[13]) if row[13] is not None else None,
            options=json.loads(row[14] or "{}"), published=bool(row[15]),
            generation=row[16],
        )

    def get(self, id: str) -> ReviewItem | None:
        with self._tx() as q:
            rows = q(f"SELECT {_COLS} FROM review_items WHERE id=?", (id,))
        return self._item(rows[0]) if rows else None

    def pending(self, *, mesh: str | None = None, actor: str | None = None,
                older_than: float | None = None, min_score: float | None = None,
                max_score: float | None = None, limit: int | None = None) -> list[ReviewItem]:
        """Pending items, oldest first. ``older_than`` is an age in seconds."""
        where, params = ["status='pending'"], []
        for clause, value in (("mesh=?", mesh), ("actor=?", actor),
                              ("score>=?", min_score), ("score<=?", max_score)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if older_than is not None:
            where.append("parked_at<=?")
            params.append(self._clock() - older_than)
        sql = f"SELECT {_COLS} FROM review_items WHERE {' AND '.join(where)}" \
              " ORDER BY parked_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._tx() as q:
            return [self._item(r) for r in q(sql, tuple(params))]

    def due(self, now: float, *, limit: int = 100, mesh: str | None = None
            ) -> list[ReviewItem]:
        """Pending items (of ``mesh``) whose deadline has passed at ``now``."""
        where, params = _where(["status='pending'", "deadline IS NOT NULL", "deadline<=?"],
                               mesh)
        with self._tx() as q:
            rows = q(f"SELECT {_COLS} FROM review_items WHERE {where} ORDER BY deadline, id"
                     f" LIMIT {int(limit)}", (now, *params))
        return [self._item(r) for r in rows]

    def history(self, limit: int | None = None, *, mesh: str | None = None
                ) -> list[DecisionRecord]:
        """Decisions (on items of ``mesh``), newest first."""
        sql = ("SELECT d.id, d.round, d.decision, d.reviewer, d.decided_at, d.notes"
               " FROM review_decisions d")
        params: tuple[Any, ...] = ()
        if mesh is not None:
            sql, params = sql + " JOIN review_items i ON i.id = d.id WHERE i.mesh=?", (mesh,)
        sql += " ORDER BY d.decided_at DESC, d.seq DESC"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._tx() as q:
            return [DecisionRecord(*row) for row in q(sql, params)]

    def counts(self, *, mesh: str | None = None) -> dict[str, int]:
        """``pending``, ``decided``, ``unpublished`` and one count per decision taken
        (on items of ``mesh``)."""
        out = {"pending": 0, "decided": 0, "unpublished": 0, **dict.fromkeys(DECISIONS, 0)}
        where, params = _where(["1=1"], mesh)
        with self._tx() as q:
            for status, decision, published, n in q(
                    f"SELECT status, decision, published, COUNT(*) FROM review_items"
                    f" WHERE {where} GROUP BY status, decision, published", params):
                out[status] += n
                if status == "decided":
                    out[decision] = out.get(decision, 0) + n
                    out["unpublished"] += 0 if published else n
        return out

    # -- deciding -----------------------------------------------------------------------

    def decide(self, id: str, *, decision: str, reviewer: str, notes: str | None = None,
               payload: Any = None) -> DecideResult:
        """Decide a pending item: compare-and-set, so exactly one of concurrent
        deciders wins; the loser gets the item as the winner left it."""
        _check_decision(decision, payload)
        now = self._clock()
        edited = json.dumps(payload) if decision == "edit" else None
        with self._tx() as q:
            rows = q("SELECT round FROM review_items WHERE id=?", (id,))
            if not rows:
                raise ReviewItemNotFound(f"no review item {id!r}")
            won = self._rowcount(q, (
                "UPDATE review_items SET status='decided', decision=?, decided_by=?,"
                " decided_at=?, notes=?, edited=?, published=0, claim=NULL"
                " WHERE id=? AND status='pending' RETURNING id"),
                (decision, reviewer, now, notes, edited, id)) == 1
            if won:
                q("INSERT INTO review_decisions (id, round, decision, reviewer, decided_at,"
                  " notes) VALUES (?,?,?,?,?,?)", (id, rows[0][0], decision, reviewer, now,
                                                   notes))
            item = self._item(q(f"SELECT {_COLS} FROM review_items WHERE id=?", (id,))[0])
        return DecideResult(won, item)

    # -- the outbox ---------------------------------------------------------------------

    def claim_unpublished(self, *, lease: float = 30.0, limit: int = 100,
                          mesh: str | None = None) -> list[ReviewItem]:
        """Claim decided items (of ``mesh``) whose resumption is not yet published (or
        whose last claim is older than ``lease`` seconds: its publisher died)."""
        now, token = self._clock(), uuid.uuid4().hex
        where, params = _where(["status='decided'", "published=0",
                                "(claim IS NULL OR claimed_at<=?)"], mesh)
        with self._tx() as q:
            ids = [r[0] for r in q(
                f"SELECT id FROM review_items WHERE {where} ORDER BY decided_at, id"
                f" LIMIT {int(limit)}", (now - lease, *params))]
            for env_id in ids:
                q("UPDATE review_items SET claim=?, claimed_at=? WHERE id=?",
                  (token, now, env_id))
            rows = q(f"SELECT {_COLS} FROM review_items WHERE claim=? ORDER BY decided_at, id",
                     (token,))
        return [self._item(r) for r in rows]

    def release(self, id: str, *, round: int) -> None:
        """Give up a claim after a failed publish, so the next sweep retries at once."""
        with self._tx() as q:
            q("UPDATE review_items SET claim=NULL, claimed_at=NULL WHERE id=? AND round=?"
              " AND published=0", (id, round))

    def mark_published(self, id: str, *, round: int) -> None:
        with self._tx() as q:
            q("UPDATE review_items SET published=1, claim=NULL WHERE id=? AND round=?"
              " AND status='decided'", (id, round))

    def close(self) -> None:
        """Release the connection."""
        self.db.close()


def _check_decision(decision: str, payload: Any) -> None:
    if decision not in DECISIONS:
        raise ValueError(f"unknown review decision {decision!r} ({', '.join(DECISIONS)})")
    if decision == "edit" and payload is None:
        raise ValueError("an 'edit' decision needs the edited payload")


def schema(dialect: str) -> Callable[[Query], None]:
    """What creates the review tables on ``dialect`` (``sqlite`` or ``postgres``), or
    brings those of an earlier version up to date (items of then are generation 0)."""
    autoincrement = ("INTEGER PRIMARY KEY AUTOINCREMENT" if dialect == "sqlite"
                     else "BIGSERIAL PRIMARY KEY")

    def create(query: Query) -> None:
        query("CREATE TABLE IF NOT EXISTS review_items (id TEXT PRIMARY KEY,"
              " mesh TEXT NOT NULL, actor TEXT NOT NULL, envelope TEXT NOT NULL,"
              " parked_at DOUBLE PRECISION NOT NULL, deadline DOUBLE PRECISION,"
              " status TEXT NOT NULL, decision TEXT, decided_by TEXT,"
              " decided_at DOUBLE PRECISION, notes TEXT, round INTEGER NOT NULL,"
              " score DOUBLE PRECISION, edited TEXT, options TEXT,"
              " published INTEGER NOT NULL DEFAULT 0, claim TEXT,"
              " claimed_at DOUBLE PRECISION, generation INTEGER NOT NULL DEFAULT 0)", ())
        if "generation" not in columns(query, dialect, "review_items"):
            query("ALTER TABLE review_items ADD COLUMN generation INTEGER NOT NULL"
                  " DEFAULT 0", ())
        query("CREATE INDEX IF NOT EXISTS review_items_pending ON review_items"
              " (status, parked_at)", ())
        query("CREATE INDEX IF NOT EXISTS review_items_mesh ON review_items"
              " (mesh, status, parked_at)", ())
        query(f"CREATE TABLE IF NOT EXISTS review_decisions (seq {autoincrement},"
              " id TEXT NOT NULL, round INTEGER NOT NULL, decision TEXT NOT NULL,"
              " reviewer TEXT NOT NULL, decided_at DOUBLE PRECISION NOT NULL,"
              " notes TEXT)", ())

    return create

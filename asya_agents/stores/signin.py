"""The review console's sign-in state: failed attempts and open sessions.

Every process that serves the console (two replicas, a restart) must see the same
failed attempts, or guessing would just move to another process; and a session that
was signed out must stay ended everywhere. So both live in the mesh's own database,
beside the review store (SQLite in the state folder, PostgreSQL on a cluster), in two
small tables:

- ``console_sign_in``: per key (``name:<name>``, ``client:<address>``) the failures,
  the last one's time and a lockout. :meth:`SignInStore.reserve` counts an attempt as
  a failure *before* the password is checked, in one transaction, so attempts made in
  parallel cannot slip through a delay; a success gives it back.
- ``console_sessions``: every session issued (an allow-list). A token names its
  session; it signs someone in only while that row is open and unexpired, so signing
  out ends it for every copy of the token.

The policy (how long to wait, when to lock) is the console's; this module keeps the
numbers and applies them atomically.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from asya_agents.errors import ConfigError
from asya_agents.stores.base import is_postgres_url
from asya_agents.stores.sql import Database, PostgresDB, Query, SQLiteDB

__all__ = ["Attempts", "Reservation", "SessionRow", "SignInStore", "open_sign_in_store",
           "schema"]

_LOCK_KEY = 727002  # serialises sign-in bookkeeping on PostgreSQL (SQLite: BEGIN IMMEDIATE)


@dataclass(frozen=True)
class Attempts:
    """The failures of one key; ``failures`` is 0 for a key never seen or forgotten."""

    key: str
    failures: int = 0
    last_at: float = 0.0
    locked_until: float = 0.0


@dataclass(frozen=True)
class Reservation:
    """The outcome of :meth:`SignInStore.reserve`: ``allowed`` with the keys' counts
    after the attempt was counted, or refused with the time the first key frees up."""

    allowed: bool
    retry_at: float
    locked: bool
    attempts: tuple[Attempts, ...]


@dataclass(frozen=True)
class SessionRow:
    sid: str
    reviewer: str
    via: str
    issued_at: float
    expires_at: float
    ended_at: float | None


def schema() -> list[str]:
    return [
        "CREATE TABLE IF NOT EXISTS console_sign_in (key TEXT PRIMARY KEY,"
        " failures INTEGER NOT NULL, last_at DOUBLE PRECISION NOT NULL,"
        " locked_until DOUBLE PRECISION NOT NULL)",
        "CREATE TABLE IF NOT EXISTS console_sessions (sid TEXT PRIMARY KEY,"
        " reviewer TEXT NOT NULL, via TEXT NOT NULL, issued_at DOUBLE PRECISION NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL, ended_at DOUBLE PRECISION)",
    ]


class SignInStore:
    """Failed attempts and sessions on ``db``, in portable SQL."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @contextmanager
    def _tx(self) -> Iterator[Query]:
        """A transaction; on PostgreSQL it also takes an advisory lock, so that reading
        then writing the counts is as serial as SQLite's ``BEGIN IMMEDIATE``."""
        with self.db.tx() as q:
            if self.db.dialect == "postgres":
                q("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
            yield q

    # -- throttling ---------------------------------------------------------------------

    def attempts(self, key: str, *, now: float, forget: float,
                 delay: Callable[[int], float]) -> Attempts:
        with self._tx() as q:
            return _read(q, key, now=now, forget=forget, delay=delay)

    def reserve(self, keys: Sequence[str], *, now: float, forget: float,
                delay: Callable[[int], float], limits: dict[str, int]) -> Reservation:
        """Count one attempt against every key, unless one of them is locked or still
        waiting. ``delay(failures)`` is how long after its last failure a key with that
        many failures waits (at most ``forget``); ``limits[key]`` the failures that lock
        it for ``forget`` seconds. A key left alone for ``forget`` seconds after its
        wait (and not locked) counts as never failed."""
        with self._tx() as q:
            # Rows forgotten for sure (waits are capped at ``forget``): names that were
            # only ever guessed must not pile up.
            q("DELETE FROM console_sign_in WHERE locked_until<? AND last_at<?",
              (now, now - 2 * forget))
            current = [_read(q, k, now=now, forget=forget, delay=delay) for k in keys]
            blocked = [max(a.locked_until,
                           (a.last_at + delay(a.failures)) if a.failures else 0.0)
                       for a in current]
            if any(at > now for at in blocked):
                locked = any(a.locked_until > now for a in current)
                return Reservation(False, max(blocked), locked, tuple(current))
            after = tuple(_count(q, a, now=now, limit=limits[a.key], lockout=forget)
                          for a in current)
        return Reservation(True, now, False, after)

    def succeeded(self, *, clear: Sequence[str], give_back: Sequence[str]) -> None:
        """A reserved attempt succeeded: forget ``clear`` keys, and take the reserved
        failure off ``give_back`` keys."""
        with self._tx() as q:
            for key in clear:
                q("DELETE FROM console_sign_in WHERE key=?", (key,))
            for key in give_back:
                q("UPDATE console_sign_in SET failures=failures-1 WHERE key=?"
                  " AND failures>0", (key,))

    # -- sessions -------------------------------------------------------------------------

    def open_session(self, row: SessionRow) -> bool:
        """Record an issued session (False when its id exists: it stays as it was).
        Sessions that expired are pruned on the way."""
        with self._tx() as q:
            q("DELETE FROM console_sessions WHERE expires_at<?", (row.issued_at - 86400,))
            return bool(q(
                "INSERT INTO console_sessions (sid, reviewer, via, issued_at, expires_at,"
                " ended_at) VALUES (?,?,?,?,?,NULL) ON CONFLICT (sid) DO NOTHING"
                " RETURNING sid", (row.sid, row.reviewer, row.via, row.issued_at,
                                   row.expires_at)))

    def session(self, sid: str) -> SessionRow | None:
        with self._tx() as q:
            rows = q("SELECT sid, reviewer, via, issued_at, expires_at, ended_at"
                     " FROM console_sessions WHERE sid=?", (sid,))
        return SessionRow(*rows[0]) if rows else None

    def end_session(self, sid: str, *, now: float) -> None:
        with self._tx() as q:
            q("UPDATE console_sessions SET ended_at=? WHERE sid=? AND ended_at IS NULL",
              (now, sid))

    def close(self) -> None:
        self.db.close()


def _read(q: Query, key: str, *, now: float, forget: float,
          delay: Callable[[int], float]) -> Attempts:
    rows = q("SELECT failures, last_at, locked_until FROM console_sign_in WHERE key=?",
             (key,))
    if not rows:
        return Attempts(key)
    failures, last_at, locked_until = rows[0]
    if locked_until <= now and last_at + delay(int(failures)) + forget <= now:
        return Attempts(key)  # quiet long enough after its wait: forgotten
    return Attempts(key, int(failures), float(last_at), float(locked_until))


def _count(q: Query, a: Attempts, *, now: float, limit: int, lockout: float) -> Attempts:
    failures = a.failures + 1
    locked_until = now + lockout if failures >= limit else 0.0
    q("INSERT INTO console_sign_in (key, failures, last_at, locked_until) VALUES (?,?,?,?)"
      " ON CONFLICT (key) DO UPDATE SET failures=excluded.failures,"
      " last_at=excluded.last_at, locked_until=excluded.locked_until",
      (a.key, failures, now, locked_until))
    return Attempts(a.key, failures, now, locked_until)


def open_sign_in_store(url: str | None, *, state_dir: Path) -> SignInStore:
    """Beside the review store: in its SQLite file in ``state_dir`` when ``url`` is
    unset, in the PostgreSQL database of a postgresql:// URL."""
    what = "console sign-in store"
    if not url:
        return SignInStore(SQLiteDB(state_dir / "review.db", what=what, schema=schema()))
    if is_postgres_url(url):
        return SignInStore(PostgresDB(url, what=what, schema=schema(), lock_key=_LOCK_KEY))
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        return SignInStore(SQLiteDB(path.with_name(f"{path.stem}-review.db"), what=what,
                                    schema=schema()))
    raise ConfigError(f"unknown store URL {url!r} (postgresql://… or sqlite:///path)")

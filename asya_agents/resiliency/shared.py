"""What an actor's replicas learn together: the adaptive pace and the breaker's state.

Each replica learning the provider's limit on its own multiplies the cost of learning it:
several replicas probing at once earn several 429s for one overload, a replica the
autoscaler adds starts from nothing, and one replica's breaker opening tells the others
nothing while they burn attempts against the same outage. So the actor keeps one
:class:`~asya_agents.resiliency.adaptive.PaceState` (the pace, its ceiling and the pace's
token bucket) and the breaker's last open and close in the store that shares
``rateLimit``: a row of ``shared_state`` in ``MESH/.asya/limits.db`` on one machine
(one ``BEGIN IMMEDIATE`` transaction per change), a Redis key
``asya:shared:MESH/ACTOR`` on a cluster (``WATCH``/``MULTI``, retried on a conflict).
The rules are the ones a replica applies to itself, run on the shared state inside that
one change, so there is one implementation of them.

A replica tells the store once per take (the successes and the 429 since its last one,
the pace tokens it did not use) and takes its calls from the shared pace in the same
change; while its breaker is open it asks again every nap, so that a breaker closed by
another replica's probe lets it go too.

When the store fails, the rate limit's bounded outage applies (:class:`~asya_agents.
resiliency.admission.SharedBucket`): for ``unavailableAfter`` the replica takes nothing
and tries the store every second; after that it logs one error and goes on by itself,
paced at its share of the actor's last pace (pace / ``maxReplicaCount``) and learning
from there, trying the store every 5 s until it answers. A store this replica never
reached (no Redis where the actor runs) is not an outage of shared state: it goes on by
itself at once, with one warning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from asya_agents.errors import ConfigError, TransportError
from asya_agents.resiliency.adaptive import AdaptiveLimit, PaceState
from asya_agents.resiliency.breaker import CircuitBreaker
from asya_agents.resiliency.limiter import open_sqlite

__all__ = ["LocalState", "RedisState", "SQLiteState", "SharedBrakes", "StateStore", "open_state"]

log = logging.getLogger("asya.resiliency")
T = TypeVar("T")

#: Seconds a call to Redis may take before it counts as failed.
_TIMEOUT = 2.0
_RETRY_EVERY = 1.0
_PROBE_EVERY = 5.0


class StateStore(Protocol):
    async def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        """Apply ``change`` to the actor's state (a JSON object) atomically; what it
        returns. ``TransportError`` when the store fails."""
        ...

    async def close(self) -> None: ...


class LocalState:
    """State in this process (tests, one replica)."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    async def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        return change(self.data)

    async def close(self) -> None:
        return None


_SQL_SCHEMA = "CREATE TABLE IF NOT EXISTS shared_state (name TEXT PRIMARY KEY, data TEXT)"


class SQLiteState:
    """The state as a row of ``shared_state`` in the SQLite file of the rate limits."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_sqlite(self.path, _SQL_SCHEMA)
        return self._conn

    def _apply(self, change: Callable[[dict[str, Any]], T]) -> T:
        try:
            conn = self._connect()
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute("SELECT data FROM shared_state WHERE name=?",
                               (self.name,)).fetchone()
            data = json.loads(row[0]) if row else {}
            result = change(data)
            conn.execute("INSERT OR REPLACE INTO shared_state(name, data) VALUES (?, ?)",
                         (self.name, json.dumps(data)))
            conn.execute("COMMIT")
            return result
        except (sqlite3.Error, ValueError) as exc:
            if self._conn is not None and self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise TransportError(f"shared state store {self.path}: {exc}") from exc

    async def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        async with self._lock:
            return await asyncio.to_thread(self._apply, change)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RedisState:
    """The state as a Redis key, changed in a ``WATCH``/``MULTI`` transaction."""

    def __init__(self, url: str, name: str) -> None:
        try:
            import redis.asyncio as aredis
        except ImportError as exc:
            raise ConfigError("shared adaptive pace or breaker with store redis needs the "
                              "redis client: pip install 'asya-agents[redis]'") from exc
        self.url, self.key = url, f"asya:shared:{name}"
        self._client: Any = aredis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT,
                                                  socket_timeout=_TIMEOUT)

    async def update(self, change: Callable[[dict[str, Any]], T]) -> T:
        from redis.exceptions import RedisError, WatchError

        try:
            async with self._client.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(self.key)
                        raw = await pipe.get(self.key)
                        data = json.loads(raw) if raw else {}
                        result = change(data)
                        pipe.multi()
                        pipe.set(self.key, json.dumps(data), ex=3600)
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue  # another replica changed it first: apply to theirs
        except (RedisError, OSError, ValueError) as exc:
            raise TransportError(f"shared state store {self.url}: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()


class SharedBrakes:
    """This replica's view of the actor's shared pace and breaker, through ``store``."""

    def __init__(self, store: StateStore, *, actor: str,
                 adaptive: AdaptiveLimit | None = None,
                 breaker: CircuitBreaker | None = None, unavailable_after: float = 30.0,
                 max_replicas: int = 1, clock: Callable[[], float] = time.time) -> None:
        self.store, self.actor = store, actor
        self.adaptive, self.breaker = adaptive, breaker
        self.unavailable_after = unavailable_after
        self.max_replicas = max(max_replicas, 1)
        self._clock = clock
        self.reached = False
        self.alone = False  # going on by itself: the store is unreachable
        self.down_since: float | None = None
        self._retry_at = 0.0
        self._unused = 0
        #: The breaker's last transitions here, not yet told to the store.
        self.opened: float | None = None
        self.closed: float | None = None
        #: The actor's pace, as the store last said.
        self.pace: float | None = None

    async def take(self, want: int) -> tuple[int, float]:
        """Up to ``want`` calls from the actor's pace: ``(granted, 0)`` or ``(0, seconds
        to wait)``; tells the store what happened here since the last take."""
        now = self._clock()
        if now < self._retry_at:
            return self._alone(want, now) if self.alone else (0, self._retry_at - now)
        try:
            granted, wait = await self.store.update(lambda data: self._change(data, want, now))
        except TransportError as exc:
            return self._failed(exc, want, now)
        self._recovered(now)
        return granted, wait

    async def refresh(self) -> None:
        """Tell the store and hear from it, taking nothing (while the breaker is open)."""
        if not self.alone or self._clock() >= self._retry_at:
            await self.take(0)

    def give_back(self, count: int) -> None:
        if count <= 0:
            return
        if self.alone and self.adaptive is not None:
            self.adaptive.own.give_back(count)
        else:
            self._unused += count

    # -- the change, run inside the store's transaction ---------------------------------

    def _change(self, data: dict[str, Any], want: int, now: float) -> tuple[int, float]:
        granted, wait = want, 0.0
        adaptive = self.adaptive
        if adaptive is not None:
            pace = PaceState.from_dict(data.get("pace") or {"stamp": now})
            pace.merge(adaptive.unsent_sent, now)
            pace.succeeded(adaptive.unsent_ok, now, adaptive.spec)
            for sent in adaptive.unsent_refused:
                pace.cut(now, adaptive.spec, sent)
            pace.give_back(self._unused)
            granted, wait = pace.take(want, now) if want else (0, 0.0)
            data["pace"] = pace.to_dict()
            self.pace = adaptive.actor_pace = pace.pace
        if self.breaker is not None:
            data["breaker"] = self._breaker_change(data.get("breaker") or {})
        # Only now is it told: a change that failed is told again with the next one.
        if adaptive is not None:
            adaptive.unsent_ok, adaptive.unsent_refused, adaptive.unsent_sent = 0, [], []
        self._unused, self.opened, self.closed = 0, None, None
        return granted, wait

    def _breaker_change(self, shared: dict[str, Any]) -> dict[str, Any]:
        """Merge this replica's transitions into the actor's, then follow the latest."""
        opened, closed = shared.get("opened_at"), shared.get("closed_at")
        if self.opened is not None and (opened is None or self.opened > opened) and \
                (closed is None or self.opened > closed):
            opened = self.opened
        if self.closed is not None and (opened is None or self.closed >= opened):
            opened, closed = None, self.closed
        breaker = self.breaker
        assert breaker is not None
        if opened is not None and (breaker.opened_at is None or opened > breaker.opened_at):
            breaker.opened_at, breaker.probing, breaker.failures = opened, False, 0
        elif opened is None and breaker.opened_at is not None and closed is not None and \
                closed >= breaker.opened_at:
            breaker.failures, breaker.opened_at, breaker.probing = 0, None, False
        return {"opened_at": opened, "closed_at": closed}

    # -- when the store fails -----------------------------------------------------------

    def _failed(self, exc: TransportError, want: int, now: float) -> tuple[int, float]:
        if not self.reached:
            if not self.alone:
                log.warning("shared pace and breaker of %s: store unreachable, each replica "
                            "learns on its own until it answers: %s", self.actor, exc)
            return self._go_alone(want, now)
        if self.down_since is None:
            self.down_since = now
            log.warning("shared pace and breaker of %s: store failed; taking nothing for up "
                        "to %gs while it is tried again: %s", self.actor,
                        self.unavailable_after, exc)
        if now - self.down_since < self.unavailable_after:
            self._retry_at = now + _RETRY_EVERY
            return 0, _RETRY_EVERY
        if not self.alone:
            log.error("shared pace and breaker of %s: store unreachable for %gs; this "
                      "replica goes on at its share of the actor's pace until it answers: %s",
                      self.actor, now - self.down_since, exc)
        return self._go_alone(want, now)

    def _go_alone(self, want: int, now: float) -> tuple[int, float]:
        if not self.alone and self.adaptive is not None and self.pace is not None:
            own = self.adaptive.own
            share = self.pace / self.max_replicas
            if own.pace is None or own.pace > share:
                own.pace, own.ceiling = share, share / self.adaptive.spec.paceMargin
        self.alone = True
        self._retry_at = now + _PROBE_EVERY
        return self._alone(want, now)

    def _alone(self, want: int, now: float) -> tuple[int, float]:
        if self.adaptive is None:
            return want, 0.0
        return self.adaptive.own.take(want, now)

    def _recovered(self, now: float) -> None:
        if self.alone or self.down_since is not None:
            log.warning("shared pace and breaker of %s: store answers again", self.actor)
        self.reached, self.alone, self.down_since = True, False, None


def open_state(store: str, *, name: str, transport: str, state_dir: Path,
               redis_url: str) -> StateStore:
    """The store ``store`` (``auto``, ``sqlite``, ``redis`` or ``local``) names."""
    if store == "auto":
        store = "sqlite" if transport == "embedded" else "redis"
    if store == "local":
        return LocalState()
    if store == "sqlite":
        return SQLiteState(state_dir / "limits.db", name)
    return RedisState(redis_url, name)


"""A rate limit for an actor as a whole: one token bucket that all its replicas share.

A per-replica limit multiplies by the replica count the moment the autoscaler adds a
replica, which is exactly when a rate-limited provider can least afford it. So the
bucket lives where every replica reaches it:

- on the embedded transport (``asya up`` on one machine): a row of a SQLite table in the
  mesh state folder (``limits.db``), updated in one ``BEGIN IMMEDIATE`` transaction per
  take, so processes never double-spend a token;
- on a cluster (RabbitMQ, SQS): a Redis hash updated by one Lua script per take (atomic
  on the Redis server); ``pip install 'asya-agents[redis]'``;
- ``local``: in this process only, for tests and single-replica tools.

A replica takes tokens *before* it receives (one per message), and gives back the ones
the queue had no message for, so an idle replica does not waste the actor's budget.
Time comes from the caller's clock: the replicas' clocks must agree (NTP does it for
Redis; one machine does it for SQLite).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from asya_agents.errors import ConfigError, TransportError
from asya_agents.resiliency.spec import RateLimitSpec

__all__ = ["LocalBucket", "RedisBucket", "SQLiteBucket", "TokenBucket", "open_bucket",
           "open_sqlite", "refill"]


def open_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    """The replicas' shared SQLite file at ``path`` (WAL, autocommit, usable from any
    thread), with ``schema`` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(schema)
    return conn


class TokenBucket(Protocol):
    async def take(self, want: int) -> tuple[int, float]:
        """Take up to ``want`` tokens: ``(granted, 0.0)``, or ``(0, seconds to wait)``."""
        ...

    async def give_back(self, count: int) -> None: ...

    async def close(self) -> None: ...


def refill(tokens: float, stamp: float, now: float, *, rate: float, burst: float) -> float:
    """Tokens in a bucket last seen at ``stamp`` with ``tokens``, at time ``now``."""
    return min(burst, tokens + max(now - stamp, 0.0) * rate)


def _grant(tokens: float, want: int, rate: float) -> tuple[int, float, float]:
    """``(granted, tokens left, wait)`` for a take of ``want`` from ``tokens``."""
    granted = min(want, math.floor(tokens + 1e-9))
    if granted > 0:
        return granted, tokens - granted, 0.0
    return 0, tokens, (1.0 - tokens) / rate


class LocalBucket:
    """A bucket in this process (tests, one replica)."""

    def __init__(self, rate: float, burst: int, *, clock: Callable[[], float] = time.time):
        self.rate, self.burst, self._clock = rate, burst, clock
        self.tokens, self.stamp = float(burst), clock()

    async def take(self, want: int) -> tuple[int, float]:
        now = self._clock()
        self.tokens = refill(self.tokens, self.stamp, now, rate=self.rate, burst=self.burst)
        self.stamp = now
        granted, self.tokens, wait = _grant(self.tokens, want, self.rate)
        return granted, wait

    async def give_back(self, count: int) -> None:
        self.tokens = min(float(self.burst), self.tokens + count)

    async def close(self) -> None:
        return None


_SQL_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rate_limits (name TEXT PRIMARY KEY, tokens REAL, stamp REAL)"
)


class SQLiteBucket:
    """The bucket as a row of ``rate_limits`` in a SQLite file shared by all replicas."""

    def __init__(self, path: Path, name: str, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.path, self.name, self.rate, self.burst = path, name, rate, burst
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_sqlite(self.path, _SQL_SCHEMA)
        return self._conn

    def _update(self, change: Callable[[float], tuple[float, Any]]) -> Any:
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            now = self._clock()
            row = conn.execute("SELECT tokens, stamp FROM rate_limits WHERE name=?",
                               (self.name,)).fetchone()
            tokens = float(self.burst) if row is None else \
                refill(row[0], row[1], now, rate=self.rate, burst=self.burst)
            tokens, result = change(tokens)
            conn.execute("INSERT OR REPLACE INTO rate_limits(name, tokens, stamp) VALUES (?,?,?)",
                         (self.name, tokens, now))
            conn.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise TransportError(f"rate limit store {self.path}: {exc}") from exc

    async def take(self, want: int) -> tuple[int, float]:
        def change(tokens: float) -> tuple[float, tuple[int, float]]:
            granted, left, wait = _grant(tokens, want, self.rate)
            return left, (granted, wait)

        async with self._lock:
            result: tuple[int, float] = await asyncio.to_thread(self._update, change)
        return result

    async def give_back(self, count: int) -> None:
        async with self._lock:
            await asyncio.to_thread(
                self._update, lambda t: (min(float(self.burst), t + count), None))

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# KEYS[1] = bucket; ARGV = rate, burst, now, want (want < 0 gives tokens back).
_LUA = """
local rate, burst, now, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
    tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or burst
local stamp = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(now - stamp, 0) * rate)
local granted, wait = 0, 0
if want < 0 then
  tokens = math.min(burst, tokens - want)
else
  granted = math.min(want, math.floor(tokens + 1e-9))
  if granted > 0 then tokens = tokens - granted else wait = (1 - tokens) / rate end
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return {granted, tostring(wait)}
"""


#: Seconds a call to Redis may take before it counts as failed.
_TIMEOUT = 2.0


class RedisBucket:
    """The bucket as a Redis hash, changed only by one atomic Lua script."""

    def __init__(self, url: str, name: str, rate: float, burst: int, *,
                 clock: Callable[[], float] = time.time) -> None:
        try:
            import redis.asyncio as aredis
        except ImportError as exc:
            raise ConfigError(
                "rateLimit with store redis needs the redis client: "
                "pip install 'asya-agents[redis]'"
            ) from exc
        self.url, self.key, self.rate, self.burst = url, f"asya:ratelimit:{name}", rate, burst
        self._clock = clock
        # Bounded calls: a take that hangs on an unroutable host would stall the
        # replica as surely as one that waits forever (admission.SharedBucket).
        self._client: Any = aredis.Redis.from_url(url, socket_connect_timeout=_TIMEOUT,
                                                  socket_timeout=_TIMEOUT)
        self._script: Any = self._client.register_script(_LUA)

    async def _call(self, want: int) -> tuple[int, float]:
        from redis.exceptions import RedisError

        try:
            granted, wait = await self._script(
                keys=[self.key], args=[self.rate, self.burst, self._clock(), want])
        except RedisError as exc:
            raise TransportError(f"rate limit store {self.url}: {exc}") from exc
        return int(granted), float(wait)

    async def take(self, want: int) -> tuple[int, float]:
        return await self._call(want)

    async def give_back(self, count: int) -> None:
        if count > 0:
            await self._call(-count)

    async def close(self) -> None:
        await self._client.aclose()


def open_bucket(spec: RateLimitSpec, *, name: str, transport: str, state_dir: Path,
                clock: Callable[[], float] = time.time) -> TokenBucket:
    """The bucket ``spec`` asks for; ``name`` identifies the actor (mesh and actor)."""
    store = spec.store
    if store == "auto":
        store = "sqlite" if transport == "embedded" else "redis"
    if store == "local":
        return LocalBucket(spec.perSecond, spec.burst, clock=clock)
    if store == "sqlite":
        return SQLiteBucket(state_dir / "limits.db", name, spec.perSecond, spec.burst,
                            clock=clock)
    return RedisBucket(spec.redisUrl, name, spec.perSecond, spec.burst, clock=clock)

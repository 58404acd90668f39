"""The embedded transport: a durable queue in one SQLite file, no server needed.

Why SQLite: it is in every Python, survives SIGKILL (WAL mode; ``synchronous=NORMAL``
keeps committed transactions across a process crash, only a power cut can lose the
last ones), and lets ``asya up``, ``asya send`` and ``asya review`` in separate
terminals, and many replica processes, share one mesh through one file.

A message is a row. Leasing a message sets ``visible_at`` to now + visibility timeout
and a fresh ``lease`` token; ack deletes the row only if the caller still holds the
lease, so a consumer whose lease expired cannot ack a copy another consumer now holds.
A lease that expires simply makes the row visible again: that is how a message handled
by a killed replica comes back. Delayed delivery is a ``visible_at`` in the future.

All SQLite calls run on one worker thread per transport so the event loop never blocks
on a lock held by another process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from asya_agents.errors import MessageTooLarge, TransportError, TransportUnavailable
from asya_agents.transports.base import Delivery, Outgoing, QueueStats

__all__ = ["EmbeddedTransport"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    queue TEXT NOT NULL,
    body BLOB NOT NULL,
    visible_at REAL NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0,
    lease TEXT,
    receives INTEGER NOT NULL DEFAULT 0,
    enqueued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_ready ON messages (queue, visible_at, id);
CREATE TABLE IF NOT EXISTS queues (name TEXT PRIMARY KEY);
"""


class EmbeddedTransport:
    """Queues in ``<state_dir>/queues.db``."""

    name = "embedded"
    #: No dead-letter queue: the runtime's ``maxDeliveries`` is the only limit here.
    delivery_limit: int | None = None

    def __init__(
        self,
        path: str | Path,
        *,
        max_message_bytes: int = 1024 * 1024,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.02,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        self._poll = poll_interval
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="asya-sqlite")
        self._conn: sqlite3.Connection | None = None

    # -- plumbing -------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=self._busy_timeout, isolation_level=None,
                    check_same_thread=False,
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise TransportUnavailable(f"cannot open embedded queue {self.path}: {exc}") \
                    from exc
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            conn = self._connect()
            try:
                return fn(conn)
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise TransportError(f"embedded queue {self.path}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    # -- protocol -------------------------------------------------------------------

    async def ensure_queues(self, queues: list[str]) -> None:
        def do(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO queues(name) VALUES (?)",
                             [(q,) for q in queues])

        await self._run(do)

    async def send(self, messages: list[Outgoing]) -> None:
        for msg in messages:
            if len(msg.body) > self.max_message_bytes:
                raise MessageTooLarge(
                    f"message for {msg.queue!r} is {len(msg.body)} bytes, "
                    f"over the embedded limit of {self.max_message_bytes}"
                )
        if not messages:
            return
        now = self._clock()
        rows = [(m.queue, m.body, now + max(m.delay, 0.0), now) for m in messages]

        def do(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO messages(queue, body, visible_at, enqueued_at) VALUES (?,?,?,?)",
                rows,
            )
            conn.execute("COMMIT")

        await self._run(do)

    def _lease(self, conn: sqlite3.Connection, queue: str, limit: int,
               visibility: float) -> list[Delivery]:
        now = self._clock()
        # Look before taking the write lock: an idle consumer's poll must not block
        # the writers of other queues.
        if conn.execute("SELECT 1 FROM messages WHERE queue=? AND visible_at<=? LIMIT 1",
                        (queue, now)).fetchone() is None:
            return []
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "SELECT id, body, receives FROM messages WHERE queue=? AND visible_at<=? "
            "ORDER BY visible_at, id LIMIT ?",
            (queue, now, limit),
        ).fetchall()
        if not rows:
            conn.execute("COMMIT")
            return []
        lease = uuid.uuid4().hex
        conn.executemany(
            "UPDATE messages SET visible_at=?, leased=1, lease=?, receives=receives+1 "
            "WHERE id=?",
            [(now + visibility, lease, row[0]) for row in rows],
        )
        conn.execute("COMMIT")
        return [Delivery(queue, bytes(body), (msg_id, lease), receives + 1)
                for msg_id, body, receives in rows]

    async def receive(
        self, queue: str, *, max_messages: int, wait: float, visibility: float,
        capacity: int | None = None,
    ) -> list[Delivery]:
        """``capacity`` is not used: nothing is pushed ahead of a receive here."""
        deadline = time.monotonic() + wait
        delay = self._poll
        while True:
            got = await self._run(lambda c: self._lease(c, queue, max_messages, visibility))
            if got or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 0.05)

    async def ack(self, delivery: Delivery) -> None:
        msg_id, lease = delivery.token

        def do(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM messages WHERE id=? AND lease=?", (msg_id, lease))

        await self._run(do)

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery) -> None:
        """Send and ack in one transaction: what a hop produced and the ack land together."""
        for msg in messages:
            if len(msg.body) > self.max_message_bytes:
                raise MessageTooLarge(
                    f"message for {msg.queue!r} is {len(msg.body)} bytes, "
                    f"over the embedded limit of {self.max_message_bytes}"
                )
        now = self._clock()
        rows = [(m.queue, m.body, now + max(m.delay, 0.0), now) for m in messages]
        msg_id, lease = delivery.token

        def do(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO messages(queue, body, visible_at, enqueued_at) VALUES (?,?,?,?)",
                rows,
            )
            conn.execute("DELETE FROM messages WHERE id=? AND lease=?", (msg_id, lease))
            conn.execute("COMMIT")

        await self._run(do)

    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None:
        msg_id, lease = delivery.token
        visible = self._clock() + max(delay, 0.0)

        def do(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE messages SET visible_at=?, leased=0, lease=NULL WHERE id=? AND lease=?",
                (visible, msg_id, lease),
            )

        await self._run(do)

    async def extend(self, delivery: Delivery, *, visibility: float) -> None:
        msg_id, lease = delivery.token
        visible = self._clock() + visibility

        def do(conn: sqlite3.Connection) -> None:
            conn.execute("UPDATE messages SET visible_at=? WHERE id=? AND lease=?",
                         (visible, msg_id, lease))

        await self._run(do)

    async def stats(self, queue: str) -> QueueStats:
        now = self._clock()

        def do(conn: sqlite3.Connection) -> QueueStats:
            row = conn.execute(
                "SELECT "
                " COALESCE(SUM(visible_at<=?), 0),"
                " COALESCE(SUM(visible_at>? AND leased=1), 0),"
                " COALESCE(SUM(visible_at>? AND leased=0), 0) "
                "FROM messages WHERE queue=?",
                (now, now, now, queue),
            ).fetchone()
            return QueueStats(depth=int(row[0]), in_flight=int(row[1]), delayed=int(row[2]))

        return await self._run(do)

    async def delete_queues(self, queues: list[str]) -> None:
        def do(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("DELETE FROM messages WHERE queue=?", [(q,) for q in queues])
            conn.executemany("DELETE FROM queues WHERE name=?", [(q,) for q in queues])
            conn.execute("COMMIT")

        await self._run(do)

    async def close(self) -> None:
        def do() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, do)
        self._executor.shutdown(wait=True)

    def __repr__(self) -> str:
        return f"EmbeddedTransport({str(self.path)!r})"

"""Publisher confirms counted by the transport itself, for the FrameReader path.

A channel in confirm mode gets a ``basic.ack`` (or ``nack``) for every publish. aiormq
would keep a future per publish behind its own lock and write queue; where the
connection's :class:`~asya_agents.transports.rabbitmq.reader.FrameReader` reads the
publishing channel's confirms, :class:`Confirms` keeps them instead, and the publish
waits on its future. The reader feeds it (:meth:`Confirms.settle`,
:meth:`Confirms.returned_message`, :meth:`Confirms.lose`); the publishing path asks it
for the next message id (:meth:`Confirms.expect`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Confirms"]


@dataclass
class Confirms:
    """Publisher confirms of one channel in confirm mode, counted here.

    The broker numbers a channel's publishes 1, 2, 3 … in the order it reads them, so a
    publish takes the next number when its frames are written (:meth:`expect`) and its
    future is settled by the ``basic.ack`` (or ``nack``) with that number, or by one
    with ``multiple`` above it. A ``basic.return`` (a ``mandatory`` message no queue
    took) comes before its ack and turns that ack into an error. Every future still
    open fails when the channel or the connection is lost."""

    number: int
    prefix: str
    loop: asyncio.AbstractEventLoop
    published: int = 0
    pending: dict[int, asyncio.Future[None]] = field(default_factory=dict)
    order: deque[int] = field(default_factory=deque)
    returned: dict[int, str] = field(default_factory=dict)
    #: Why the channel is gone, once it is: every later :meth:`expect` fails.
    lost_reason: str | None = None
    #: The error of a message the broker returned or nacked, and of a lost channel.
    refused: Callable[[str], BaseException] = RuntimeError
    lost: Callable[[str], BaseException] = ConnectionError

    def expect(self) -> tuple[str, asyncio.Future[None]]:
        """The message id of the next publish and the future its confirm settles."""
        if self.lost_reason is not None:
            raise self.lost(self.lost_reason)
        self.published += 1
        future: asyncio.Future[None] = self.loop.create_future()
        self.pending[self.published] = future
        self.order.append(self.published)
        return f"{self.prefix}.{self.published}", future

    def settle(self, tag: int, *, multiple: bool, ok: bool) -> None:
        if multiple:
            order = self.order
            while order and order[0] <= tag:
                self._settle_one(order.popleft(), ok)
        else:
            self._settle_one(tag, ok)

    def _settle_one(self, tag: int, ok: bool) -> None:
        future = self.pending.pop(tag, None)
        if future is None or future.done():
            return
        reason = self.returned.pop(tag, None)
        if reason is not None:
            future.set_exception(self.refused(reason))
        elif ok:
            future.set_result(None)
        else:
            future.set_exception(self.refused("the broker nacked the message"))

    def returned_message(self, message_id: str | None, reason: str) -> None:
        prefix, _, number = (message_id or "").rpartition(".")
        if prefix == self.prefix and number.isdigit():
            self.returned[int(number)] = reason

    def lose(self, why: str) -> None:
        self.lost_reason = why
        pending, self.pending = self.pending, {}
        self.order.clear()
        for future in pending.values():
            if not future.done():
                future.set_exception(self.lost(why))

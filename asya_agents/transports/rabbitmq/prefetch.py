"""How a consumer's prefetch follows what the runtime may hold.

The broker pushes up to the prefetch ahead of any ``receive``, so a prefetch frozen at
the first receive caps a replica for its whole life: an actor with adaptive concurrency
starts at 2 in flight and would hold no more however far its limit grew. So each
``receive`` carries a ``capacity`` (the runtime's live limit, times the batch size for a
batch actor) and the consumer follows it: up at once, down once it has halved (small
cuts leave it be: each change costs three round trips).

RabbitMQ applies a ``basic.qos`` only to consumers started after it, and quorum queues
take no channel-wide one, so a new prefetch is a new consumer: the old one is cancelled
(nothing comes under it after its cancel-ok), then the new one starts on the same
channel. What the old one delivered stays unacked there and is settled as before (one
tag space per channel); until it is, those *orphans* count against the new consumer's
prefetch, so that the channel never holds more than ``capacity``. As they are settled
the consumer falls short of its target, and it is started again once it is a quarter
short, or as soon as the last of them is settled. aio-pika's robust channel keeps the
last ``basic.qos`` for a reconnect, where the consumer starts afresh.
"""

from __future__ import annotations

__all__ = ["resize_to"]


def resize_to(capacity: int, *, target: int, prefetch: int, orphans: int,
              running: bool) -> int | None:
    """The capacity to start a consumer again for, or None to leave it: ``capacity``
    when it is above the ``target`` followed now or at most half of it; else the target
    again where no consumer runs (``running`` false: a start failed), or once the
    ``orphans`` counted against ``prefetch`` left it a quarter short, or all settled."""
    if capacity > target or capacity <= target // 2:
        return capacity
    short = target - prefetch - orphans
    if not running or (short > 0 and (not orphans or short >= max(1, target // 4))):
        return target
    return None

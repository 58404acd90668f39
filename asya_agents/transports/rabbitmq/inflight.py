"""Counts for scaling: how many messages of a queue are ready, and how many are held.

``depth`` is the ready count from a passive ``queue.declare``. The unacked count is not
in AMQP, and the supervisor's transport never holds what its replicas hold: it is read
from the management API when ``management_url`` answers (:meth:`InFlight.stats`); else
every consuming transport reports what it holds once a second on the mesh's
``PREFIX-MESH--inflight`` fanout exchange, and ``stats`` sums the fresh reports (see
:class:`_InFlightReports`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage

from asya_agents.errors import TransportError
from asya_agents.transports.base import QueueStats
from asya_agents.transports.rabbitmq.session import FOREIGN, Session
from asya_agents.transports.rabbitmq.topology import Names

__all__ = ["InFlight"]

_MGMT_RETRY = 60.0
_REPORT_EVERY = 1.0
_REPORT_STALE = 3.5


class _InFlightReports:
    """What other consumers of the mesh say they hold unacked, as last reported.

    AMQP has no unacked count, so every consuming transport reports its own (leased plus
    prefetched) once a second on the mesh's ``--inflight`` fanout exchange; a transport
    asked for ``stats`` listens there and sums the reports that are fresh. A consumer
    that died stops reporting and drops out after a few seconds, while the broker
    requeues what it held, which then shows in the ready count."""

    def __init__(self, own_id: str) -> None:
        self.own_id = own_id
        self.seen: dict[tuple[str, str], tuple[int, float]] = {}

    async def on_report(self, message: AbstractIncomingMessage) -> None:
        try:
            data = json.loads(message.body)
            key, held = (str(data["c"]), str(data["q"])), int(data["n"])
        except (ValueError, KeyError, TypeError):
            return
        if key[0] != self.own_id:
            self.seen[key] = (held, time.monotonic())

    def total(self, queue: str) -> int:
        now = time.monotonic()
        return sum(held for (_, q), (held, at) in self.seen.items()
                   if q == queue and now - at < _REPORT_STALE)


class InFlight:
    """Reports what this transport holds, and reads the counts of a queue.

    ``held(queue)`` is what this transport holds of ``queue`` unacked, ``queues()`` the
    queues it consumes."""

    def __init__(self, session: Session, names: Names, *, own_id: str,
                 management_url: str | None, held: Callable[[str], int],
                 queues: Callable[[], Iterable[str]]) -> None:
        self._session = session
        self._names = names
        self._id = own_id
        self.management_url = management_url
        self._held = held
        self._queues = queues
        self._reports = _InFlightReports(own_id)
        self._reporter: asyncio.Task[None] | None = None
        self._exchange: AbstractExchange | None = None
        self._report_ch: AbstractChannel | None = None
        self._stats_ch: AbstractChannel | None = None
        self._watching = False
        self._mgmt_down_until = 0.0

    async def stats(self, queue: str) -> QueueStats:
        name = self._names.queue(queue)
        depth, consumers = await self._depth(name)
        unacked = await self._management_unacked(name)
        if unacked is None:
            await self._watch_reports()
            unacked = self._held(queue) + self._reports.total(queue)
        return QueueStats(depth=depth, in_flight=unacked, consumers=consumers)

    async def _depth(self, name: str) -> tuple[int, int]:
        """Ready messages and consumers of ``name``, from a passive declare."""
        try:
            if self._stats_ch is None or self._stats_ch.is_closed:
                self._stats_ch = await self._session.plain_channel()
            # The underlying channel: aio-pika's robust channel remembers declared
            # queues and would not ask the broker again.
            underlay = await self._stats_ch.get_underlay_channel()
            declared = await underlay.queue_declare(name, passive=True)
        except FOREIGN as exc:
            self._stats_ch = None  # a failed passive declare closes the channel
            raise TransportError(f"cannot read the depth of {name!r}: {exc}") from exc
        return int(declared.message_count or 0), int(declared.consumer_count or 0)

    # -- reporting ----------------------------------------------------------------

    def start(self) -> None:
        """Report what this transport holds once a second, from now on."""
        if self._reporter is None:
            self._reporter = asyncio.create_task(self._report_loop())

    async def _report_loop(self) -> None:
        while True:
            await self._report()
            await asyncio.sleep(_REPORT_EVERY)

    async def _report(self, *, final: bool = False) -> None:
        """Tell the mesh's ``stats`` readers what this transport holds (see
        :class:`_InFlightReports`); best effort, a lost report only ages out."""
        try:
            exchange = await self._report_exchange()
            for queue in list(self._queues()):
                held = 0 if final else self._held(queue)
                body = json.dumps({"c": self._id, "q": queue, "n": held}).encode()
                await exchange.publish(aio_pika.Message(body), routing_key="", mandatory=False)
        except (TransportError, *FOREIGN):
            return

    async def _report_exchange(self) -> AbstractExchange:
        # Not on the publishing channel: its publishes are counted for confirms, and
        # these best-effort reports want none.
        if self._exchange is None:
            if self._report_ch is None or self._report_ch.is_closed:
                self._report_ch = await self._session.plain_channel()
            self._exchange = await self._report_ch.declare_exchange(
                self._names.inflight, aio_pika.ExchangeType.FANOUT, durable=True)
        return self._exchange

    async def stop(self) -> None:
        """Stop the reports, with a last one saying this transport holds none."""
        if self._reporter is not None:
            self._reporter.cancel()
            self._reporter = None
            if self._exchange is not None:
                with contextlib.suppress(*FOREIGN):
                    await asyncio.wait_for(self._report(final=True), 1.0)
        self._exchange = None

    async def close(self) -> None:
        """Stop the reports and forget the channels: the connection closes."""
        await self.stop()
        self._watching = False
        self._report_ch = self._stats_ch = None

    # -- reading ------------------------------------------------------------------

    async def _watch_reports(self) -> None:
        if self._watching:
            return
        await self._session.channel()
        try:
            channel = await self._session.plain_channel()
            exchange = await channel.declare_exchange(
                self._names.inflight, aio_pika.ExchangeType.FANOUT, durable=True)
            inbox = await channel.declare_queue(exclusive=True, auto_delete=True)
            await inbox.bind(exchange)
            await inbox.consume(self._reports.on_report, no_ack=True)
        except FOREIGN as exc:
            raise TransportError(f"cannot listen for in-flight reports: {exc}") from exc
        self._watching = True

    async def _management_unacked(self, name: str) -> int | None:
        """Unacked count from the management API, or None where it does not answer."""
        if self.management_url is None or time.monotonic() < self._mgmt_down_until:
            return None
        url, auth = _management_request(self._session.url, self.management_url, name)

        def fetch() -> int:
            request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
            with urllib.request.urlopen(request, timeout=2) as response:
                return int(json.load(response).get("messages_unacknowledged", 0))

        try:
            return await asyncio.to_thread(fetch)
        except (OSError, ValueError):
            self._mgmt_down_until = time.monotonic() + _MGMT_RETRY
            return None


def _management_request(amqp_url: str, management_url: str, name: str) -> tuple[str, str]:
    """The management API's URL for queue ``name`` (in the vhost of ``amqp_url``), and
    the basic auth of ``amqp_url``'s credentials."""
    parsed = urllib.parse.urlparse(amqp_url)
    vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
    url = (f"{management_url.rstrip('/')}/api/queues/"
           f"{urllib.parse.quote(vhost, safe='')}/{urllib.parse.quote(name, safe='')}")
    auth = base64.b64encode(
        f"{urllib.parse.unquote(parsed.username or 'guest')}:"
        f"{urllib.parse.unquote(parsed.password or 'guest')}".encode()).decode()
    return url, auth

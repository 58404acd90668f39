"""A running gateway: one mesh, its connections, the jobs service and the feed.

:class:`Gateway` is what every route of the app (HTTP, SSE, MCP, A2A) reaches through
``app.state``. It opens its transport and stores on the serving event loop
(:meth:`start`, from the app's lifespan), runs the one tail loop of the event feed,
and on shutdown first ends every open stream with a last event (:meth:`begin_stop`),
then closes what it opened (:meth:`close`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from asya_agents.context import MeshContext
from asya_agents.errors import ConfigError
from asya_agents.gateway.feed import Feed
from asya_agents.gateway.follow import StreamEvent, follow
from asya_agents.gateway.jobs import FINISHED, Jobs
from asya_agents.gateway.keys import KeyRing
from asya_agents.gateway.schema import input_schema
from asya_agents.observe.events import events_wanted
from asya_agents.observe.gatewaymetrics import GatewayMetrics
from asya_agents.settings import GatewaySettings
from asya_agents.stores.events import EventStore, open_event_store
from asya_agents.stores.jobs import JobStore, open_job_store
from asya_agents.transports import Backend

__all__ = ["Gateway"]

log = logging.getLogger("asya.gateway")


class Gateway:
    """The gateway of ``ctx``'s mesh; ``keys`` ``None`` serves without credentials."""

    def __init__(self, ctx: MeshContext, *, keys: KeyRing | None,
                 settings: GatewaySettings | None = None) -> None:
        self.ctx = ctx
        self.keys = keys
        self.settings = settings or ctx.settings.gateway
        self.name = ctx.name
        spec = ctx.loaded.mesh.spec.gateway
        route = " -> ".join(ctx.loaded.route)
        self.description = (spec.description if spec and spec.description else
                            f"Runs the {ctx.name} mesh (route: {route}) on a payload and "
                            "returns the ended records of the job.")
        self.schema = input_schema(ctx.loaded)
        #: Set when the gateway stops: every open stream ends with a last event.
        self.stopping = asyncio.Event()
        self._tail_stop = asyncio.Event()
        self._tail: asyncio.Task[None] | None = None
        self._opened: list[Callable[[], Any]] = []
        self.metrics = _metrics(self)
        self.transport: Backend
        self.events: EventStore
        self.table: JobStore
        self.jobs: Jobs
        self.feed: Feed

    async def start(self) -> None:
        """Open the transport and stores, declare the queues, start the tail loop."""
        url, folder = self.ctx.store_url, self.ctx.state_dir
        self.transport = self.ctx.transport()
        self.events = open_event_store(url, state_dir=folder)
        self._opened.append(self.events.close)
        self.table = open_job_store(url, state_dir=folder)
        self._opened.append(self.table.close)
        self.jobs = Jobs(self.ctx, self.transport, events=self.events, table=self.table)
        await self.jobs.start()
        self.feed = Feed(self.events, self.jobs.results,
                         poll_interval=self.settings.poll_interval,
                         reconcile_interval=self.settings.reconcile_interval,
                         retention=self.settings.events_retention)
        await self.feed.start()
        self._tail = asyncio.create_task(self.feed.run(self._tail_stop))
        if not events_wanted(self.ctx.loaded, self.ctx.settings):
            log.warning("mesh %s asks for no gateway (mesh.yaml spec.gateway): unless its "
                        "replicas run under `asya up --gateway` or ASYA_GATEWAY_EVENTS=1, "
                        "streams show status changes but no hops", self.name)
        log.info("gateway of mesh %s on %s", self.name, self.ctx.kind)

    def begin_stop(self) -> None:
        """End every open stream with a last event; new ones end at once."""
        self.stopping.set()

    async def close(self) -> None:
        self.stopping.set()
        self._tail_stop.set()
        if self._tail is not None:
            await asyncio.gather(self._tail, return_exceptions=True)
        with contextlib.suppress(AttributeError):
            await self.jobs.close()
        with contextlib.suppress(AttributeError):
            await self.transport.close()
        for close in reversed(self._opened):
            close()
        self.ctx.close()

    @property
    def open_streams(self) -> int:
        """Streams and calls following a job now."""
        feed = getattr(self, "feed", None)
        return feed.watched if feed is not None else 0

    def follow(self, job: str, *, after: int = 0,
               until: tuple[str, ...] = FINISHED) -> AsyncIterator[StreamEvent]:
        """The stream of ``job`` (see :mod:`asya_agents.gateway.follow`)."""
        return follow(self.jobs, self.feed, job, after=after, until=until,
                      stopping=self.stopping)


def _metrics(gateway: Gateway) -> GatewayMetrics | None:
    try:
        return GatewayMetrics(mesh=gateway.name, open_streams=lambda: gateway.open_streams)
    except ConfigError as exc:
        log.warning("no /metrics for the gateway: %s", exc)
        return None

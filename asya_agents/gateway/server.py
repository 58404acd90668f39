"""Running the gateway: ``asya gateway MESH``, on uvicorn, stopped cleanly by SIGTERM.

Before it listens, :func:`credentials` decides who may call: the keys of
``ASYA_GATEWAY_KEYS`` / ``ASYA_GATEWAY_KEYS_FILE``; with none, the gateway refuses to
start unless ``--insecure`` is given, and even then only on a loopback address.

SIGTERM (or Ctrl-C) first ends every open stream with a last event (``shutdown`` on
SSE, a result on an MCP call, a status update on an A2A stream), then stops accepting
connections, lets requests in flight finish and closes the transport and stores. The
signals are the gateway's own (not uvicorn's, which would cut the streams off and
re-raise the signal), so the process exits 0 after a clean stop. A second Ctrl-C
forces the exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import signal
import time
from collections.abc import Iterator

import uvicorn

from asya_agents import eventloop
from asya_agents.context import MeshContext
from asya_agents.errors import ConfigError
from asya_agents.gateway.app import create_app
from asya_agents.gateway.keys import KeyRing, read_keys
from asya_agents.gateway.service import Gateway

__all__ = ["DRAIN_SECONDS", "credentials", "is_loopback", "serve"]

log = logging.getLogger("asya.gateway")
#: How long open streams get to send their last event before the server closes.
DRAIN_SECONDS = 5.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def credentials(ctx: MeshContext, *, insecure: bool, host: str) -> KeyRing | None:
    """The keys the gateway asks for; ``None`` (no credentials) only for ``insecure``
    on loopback. :class:`ConfigError` says what to set otherwise."""
    keys = read_keys(ctx.settings.gateway)
    if len(keys):
        if insecure:
            log.warning("--insecure is ignored: gateway keys are set")
        return keys
    if not insecure:
        raise ConfigError("the gateway has no keys: set ASYA_GATEWAY_KEYS or "
                          "ASYA_GATEWAY_KEYS_FILE (entries from `asya gateway hash-key "
                          "NAME`), or pass --insecure to serve without credentials on "
                          "loopback")
    if not is_loopback(host):
        raise ConfigError(f"--insecure serves without credentials, so only on a loopback "
                          f"address (127.0.0.1, ::1, localhost), not on {host}")
    return None


class _Server(uvicorn.Server):
    """uvicorn, with the gateway's own handling of SIGTERM and SIGINT."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway
        self._draining: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._signalled)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _signalled(self) -> None:
        if self._draining is not None:
            self.force_exit = self.should_exit = True
            return
        log.info("gateway of mesh %s stopping: ending %d open stream(s)",
                 self.gateway.name, self.gateway.open_streams)
        self.gateway.begin_stop()
        self._draining = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        while self.gateway.open_streams and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)  # the last events leave the sockets
        self.should_exit = True


def serve(ctx: MeshContext, *, host: str, port: int, keys: KeyRing | None) -> None:
    """Serve ``ctx``'s mesh on ``host:port`` until SIGTERM or SIGINT."""
    gateway = Gateway(ctx, keys=keys)
    config = uvicorn.Config(
        create_app(gateway, host=host), host=host, port=port, log_config=None,
        access_log=False, lifespan="on", timeout_graceful_shutdown=10,
        server_header=False)
    log.info("gateway of mesh %s at http://%s:%d (%s)", ctx.name, host, port,
             "keys: " + str(len(keys)) if keys else "no credentials, loopback only")
    eventloop.run(_Server(config, gateway).serve(), kind=ctx.settings.mesh.event_loop)

"""RabbitMQ only: the pieces of aio-pika, aiormq and pamqp that are not their public API
and that the transport relies on are still there, in the installed versions.

``asya_agents/transports/rabbitmq/internals.py`` puts a FrameReader under aiormq's
socket through hooks no library documents, and ``frames.py`` takes its numbers from
pamqp's classes. The ``rabbitmq`` extra pins the minor versions tested; a new version
that moves one of these pieces fails here, with the library, its version and the piece
named, rather than as a confusing error (or a silently slower path) in production.
The first tests read the installed libraries only; the last opens a connection.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import pytest

from tests.conftest import require_service
from tests.transports.conftest import RABBIT_URL

pytestmark = pytest.mark.timeout(30)

INTERNALS = "asya_agents/transports/rabbitmq/internals.py"
FRAMES = "asya_agents/transports/rabbitmq/frames.py"


def need(ok: bool, library: str, piece: str, *, user: str = INTERNALS) -> None:
    """Fail, naming ``library`` and its installed version, unless ``ok``."""
    if not ok:
        pytest.fail(f"{library} {version(library)}: {piece} is not as {user} expects; "
                    "adapt that file (and the pins of the 'rabbitmq' extra in "
                    "pyproject.toml) to this version", pytrace=False)


def accepts(function: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(function).parameters


async def test_aio_pika_robust_connection_has_the_hooks_the_frame_reader_needs() -> None:
    import aio_pika

    robust = aio_pika.RobustConnection
    need(inspect.iscoroutinefunction(getattr(robust, "_on_connected", None)), "aio-pika",
         "RobustConnection._on_connected (a coroutine run on every (re)connect)")
    need("_on_connected" in vars(robust), "aio-pika",
         "RobustConnection._on_connected restoring the channels (the FrameReader is tied "
         "to the connection before it runs)")
    need("self._on_connected()" in inspect.getsource(aio_pika.Connection.connect),
         "aio-pika", "Connection.connect setting transport, then calling _on_connected()")
    need(accepts(robust.__init__, "url") and accepts(robust.__init__, "loop"), "aio-pika",
         "RobustConnection.__init__(url, loop=..., **kwargs)")
    conn = robust("amqp://guest:guest@127.0.0.1:1/")
    try:
        need(isinstance(getattr(conn, "kwargs", None), dict), "aio-pika",
             "RobustConnection.kwargs (the keywords handed to aiormq.connect)")
        need(getattr(conn, "transport", 0) is None, "aio-pika",
             "RobustConnection.transport (None before connecting)")
    finally:
        await conn.close()
    need("connection" in getattr(aio_pika.abc.UnderlayConnection, "__annotations__", {}),
         "aio-pika", "UnderlayConnection.connection (the robust connection's "
         "transport.connection, the aiormq connection)")


def test_aiormq_takes_a_transport_factory() -> None:
    import aiormq

    factory = getattr(aiormq, "TransportFactory", None)
    need(inspect.isclass(factory) and inspect.isabstract(factory), "aiormq",
         "aiormq.TransportFactory (an abstract class)")
    assert factory is not None
    create = getattr(factory, "create", None)
    need(inspect.iscoroutinefunction(create), "aiormq", "TransportFactory.create (async)")
    params = list(inspect.signature(create).parameters.values())
    need([p.name for p in params[:2]] == ["self", "url"]
         and params[-1].kind is inspect.Parameter.VAR_KEYWORD, "aiormq",
         "TransportFactory.create(self, url, **kwargs)")
    need(accepts(aiormq.Connection.__init__, "transport_factory"), "aiormq",
         "Connection(..., transport_factory=...)")


def test_aiormq_raw_channels_have_what_the_paths_use() -> None:
    import aiormq.abc
    from aiormq.channel import Channel

    source = inspect.getsource(Channel.__init__)
    need("self.max_content_size" in source, "aiormq",
         "Channel.max_content_size (the largest body frame)")
    for name in ("number", "is_closed", "connection"):
        need(name in dir(aiormq.abc.AbstractChannel) or name in source, "aiormq",
             f"the raw channel's {name!r}")
    for method in ("basic_publish", "basic_ack", "basic_nack"):
        need(accepts(getattr(Channel, method), "wait"), "aiormq",
             f"Channel.{method}(..., wait=False)", user="asya_agents/transports/rabbitmq/paths.py")


def test_aio_pika_robust_channels_can_be_waited_for_and_reopened() -> None:
    import aio_pika

    channel = aio_pika.RobustChannel
    for name in ("get_underlay_channel", "ready"):
        need(inspect.iscoroutinefunction(getattr(channel, name, None)), "aio-pika",
             f"RobustChannel.{name} (async)", user="asya_agents/transports/rabbitmq/")
    need("reopen_callbacks" in inspect.getsource(channel.__init__), "aio-pika",
         "RobustChannel.reopen_callbacks", user="asya_agents/transports/rabbitmq/consume.py")


def test_pamqp_names_the_numbers_the_frame_codec_uses() -> None:
    from pamqp import commands, constants

    for name in ("FRAME_METHOD", "FRAME_HEADER", "FRAME_BODY", "FRAME_HEARTBEAT",
                 "FRAME_END", "FRAME_END_CHAR", "FRAME_HEADER_SIZE"):
        need(isinstance(getattr(constants, name, None), int | bytes), "pamqp",
             f"pamqp.constants.{name}", user=FRAMES)
    for cls, method in (("Basic", "Deliver"), ("Basic", "Return"), ("Basic", "Ack"),
                        ("Basic", "Nack"), ("Basic", "Publish"), ("Channel", "OpenOk"),
                        ("Channel", "Close"), ("Channel", "CloseOk"),
                        ("Connection", "Close")):
        outer = getattr(commands, cls)
        inner = getattr(outer, method, None)
        # index is class id << 16 | method id: the frame ids must agree with it
        need(inner is not None and getattr(inner, "index", None)
             == (getattr(outer, "frame_id", -1) << 16 | getattr(inner, "frame_id", -1)),
             "pamqp", f"commands.{cls}.frame_id and commands.{cls}.{method}.frame_id",
             user=FRAMES)
    flags = getattr(commands.Basic.Properties, "flags", {})
    need({"content_type", "content_encoding", "headers", "delivery_mode", "priority",
          "correlation_id", "reply_to", "expiration", "message_id"} <= set(flags), "pamqp",
         "commands.Basic.Properties.flags", user=FRAMES)


async def test_aio_pika_hands_the_transport_factory_to_aiormq() -> None:
    import aio_pika

    calls: list[Any] = []

    class Refusing:
        async def create(self, url: Any, **kwargs: Any) -> Any:
            calls.append(url)
            raise ConnectionRefusedError("refused by the test")

    conn = aio_pika.RobustConnection("amqp://guest:guest@127.0.0.1:1/")
    conn.kwargs["transport_factory"] = Refusing()
    try:
        with pytest.raises((ConnectionError, aio_pika.exceptions.AMQPError)):
            await asyncio.wait_for(conn.connect(timeout=5), 10)
    finally:
        await conn.close()
    need(len(calls) >= 1 and getattr(calls[0], "port", None) == 1, "aio-pika",
         "RobustConnection.kwargs['transport_factory'] reaching aiormq's "
         "TransportFactory.create(url, ...)")


async def test_a_connection_gets_its_frame_reader_and_its_channels_find_it() -> None:
    require_service("RabbitMQ", port=5672)
    import aio_pika

    from asya_agents.transports.rabbitmq.internals import (
        body_frame_size,
        connection_class,
        frames_of,
    )
    from asya_agents.transports.rabbitmq.reader import FrameReader

    conn = await aio_pika.connect_robust(RABBIT_URL, connection_class=connection_class(True))
    try:
        transport = getattr(conn, "transport", None)
        need(transport is not None and hasattr(transport, "connection"), "aio-pika",
             "RobustConnection.transport.connection after connecting")
        channel = await conn.channel()
        need(hasattr(channel, "reopen_callbacks"), "aio-pika", "RobustChannel.reopen_callbacks",
             user="asya_agents/transports/rabbitmq/consume.py")
        raw = await channel.get_underlay_channel()
        need(raw.connection is transport.connection, "aiormq",
             "the raw channel's connection (the robust connection's transport.connection)")
        need(isinstance(frames_of(raw), FrameReader), "aio-pika",
             "RobustConnection._on_connected running after transport is set (no FrameReader "
             "was tied to the connection)")
        need(isinstance(raw.number, int) and raw.is_closed is False, "aiormq",
             "the raw channel's number and is_closed")
        size = body_frame_size(raw)
        need(isinstance(size, int) and size > 4096, "aiormq", "Channel.max_content_size")
    finally:
        await conn.close()
    plain = await aio_pika.connect_robust(RABBIT_URL, connection_class=connection_class(False))
    try:
        raw = await (await plain.channel()).get_underlay_channel()
        assert frames_of(raw) is None  # aiormq's own socket: no FrameReader under it
    finally:
        await plain.close()

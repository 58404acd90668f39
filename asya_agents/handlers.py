"""Loading a handler from its path and calling it the way its shape asks.

A handler needs nothing from this project: ``spec.handler`` names a function
(``module.func``) or a method of a class (``module.Class.method``). Classes are built once
per replica with ``spec.config`` as keyword arguments, so models load in ``__init__``.
Everything that can be checked before the first message is checked here, at startup,
and reported with the path and why: the import, the attribute, the class's constructor
against the config, and that the callable takes exactly one argument.

A class may also ask for what the mesh decides rather than its config, kopf-style, by
the name of a constructor parameter: ``storage`` receives the actor's
:class:`~asya_agents.storage.StoragePolicy` (the folders and buckets its payloads' URLs
may name), unless ``spec.config`` sets ``storage`` itself.

The call itself adapts to the handler: ``async def`` is awaited, a sync function runs on
a worker thread (so the event loop keeps leasing, heartbeating and acking), and a
generator, sync or async, fans out everything it yields. :meth:`Handler.start` hands a
generator over as a stream (:attr:`Result.stream`), so that the runtime publishes its
children while it still yields, in bounded memory; :meth:`Handler.call` collects them
(a batch handler, ``call_handler`` in tests). A sync generator runs on the worker thread
and hands each item over as it is made, running at most :data:`PULL_MAX` items ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from asya_agents.errors import HandlerError
from asya_agents.storage import StoragePolicy

__all__ = ["PULL_MAX", "Handler", "Result", "load_handler", "resolve_path"]

#: Items a sync generator may make ahead of the runtime that publishes them.
PULL_MAX = 64


@dataclass(frozen=True)
class Result:
    """What one call produced: ``items`` are payloads (or envelopes in envelope mode);
    ``fanned`` tells a list (fan-out, possibly empty) from a single value. A generator
    started by :meth:`Handler.start` leaves ``items`` empty and yields from ``stream``."""

    items: list[Any]
    fanned: bool
    stream: AsyncIterator[Any] | None = None


def resolve_path(path: str) -> tuple[Any, list[str]]:
    """Import the longest module prefix of ``path``; return it and the attribute chain."""
    parts = path.split(".")
    errors: list[str] = []
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and module_name.startswith(exc.name):
                continue
            raise HandlerError(f"handler {path!r}: importing {module_name!r} failed: {exc}") \
                from exc
        except Exception as exc:
            raise HandlerError(
                f"handler {path!r}: importing {module_name!r} raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return module, parts[cut:]
    errors.append(f"no module of {path!r} could be imported")
    raise HandlerError(f"handler {path!r}: {'; '.join(errors)} (is it on the mesh's pythonPath?)")


def _one_arg(fn: Callable[..., Any], path: str) -> None:
    try:
        inspect.signature(fn).bind(object())
    except TypeError as exc:
        raise HandlerError(f"handler {path!r} must take exactly one argument: {exc}") from exc
    except ValueError:  # builtins without a signature
        return


@dataclass
class Handler:
    """A loaded handler, ready to call with a payload, an envelope or a batch."""

    path: str
    fn: Callable[..., Any]
    instance: Any = None
    threads: int = 1

    def __post_init__(self) -> None:
        target = inspect.unwrap(self.fn)
        self.is_async = inspect.iscoroutinefunction(target)
        self.is_async_gen = inspect.isasyncgenfunction(target)
        self.is_gen = inspect.isgeneratorfunction(target)
        self._executor = ThreadPoolExecutor(
            max(self.threads, 1), thread_name_prefix="asya-handler"
        )

    async def call(self, arg: Any) -> Result:
        """Call the handler once; the shape of its return decides fan-out. A generator
        is run to its end and its items collected."""
        result = await self.start(arg)
        if result.stream is None:
            return result
        return Result([item async for item in result.stream], fanned=True)

    async def start(self, arg: Any) -> Result:
        """Call the handler once; a generator (sync or async) comes back as a stream
        that yields while the generator does."""
        if self.is_async_gen:
            return Result([], fanned=True, stream=self.fn(arg))
        if self.is_gen:
            return Result([], fanned=True, stream=self._pulled(self.fn, arg))
        if self.is_async:
            return _shape(await self.fn(arg))
        loop = asyncio.get_running_loop()
        value = await loop.run_in_executor(self._executor, functools.partial(self.fn, arg))
        return _shape(value)

    async def _pulled(self, fn: Callable[[Any], Iterator[Any]], arg: Any
                      ) -> AsyncIterator[Any]:
        """A sync generator's items, made on the worker thread and handed over one by
        one as they come; it runs at most :data:`PULL_MAX` items ahead of the reader."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        room, stop = threading.Semaphore(PULL_MAX), threading.Event()

        def hand(kind: str, value: Any) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody reads
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))

        def produce() -> None:
            gen: Iterator[Any] | None = None
            try:
                gen = fn(arg)
                for item in gen:
                    room.acquire()
                    if stop.is_set():
                        return
                    hand("item", item)
                hand("end", None)
            except BaseException as exc:  # the reader raises it
                hand("error", exc)
            finally:
                if gen is not None:
                    _close(gen)

        loop.run_in_executor(self._executor, produce)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                room.release()
                yield value
        finally:
            stop.set()
            room.release()  # a producer waiting for room wakes and stops

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _close(gen: Iterator[Any]) -> None:
    close = getattr(gen, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # a generator that fails as it closes
            close()


def _shape(value: Any) -> Result:
    if isinstance(value, list | tuple):
        return Result(list(value), fanned=True)
    return Result([value], fanned=False)


def load_handler(path: str, *, config: dict[str, Any] | None = None, threads: int = 1,
                 storage: StoragePolicy | None = None) -> Handler:
    """Import and prepare ``path``; raise :class:`HandlerError` naming the path and why.
    ``storage`` goes to a class whose constructor has a ``storage`` parameter."""
    config = dict(config or {})
    module, attrs = resolve_path(path)
    obj: Any = module
    for depth, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            owner = ".".join([module.__name__, *attrs[:depth]])
            raise HandlerError(f"handler {path!r}: {owner!r} has no attribute {attr!r}") from exc
        if inspect.isclass(obj) and depth < len(attrs) - 1:
            obj = _build(obj, _injected(obj, config, storage), path)
            config = {}
    if inspect.isclass(obj):
        raise HandlerError(f"handler {path!r} is a class; name a method: {path}.<method>")
    if not callable(obj):
        raise HandlerError(f"handler {path!r} is not callable ({type(obj).__name__})")
    if config:
        raise HandlerError(
            f"handler {path!r} is a function but spec.config is set "
            f"({', '.join(sorted(config))}); config is passed to a class's __init__"
        )
    _one_arg(obj, path)
    instance = getattr(obj, "__self__", None)
    return Handler(path, obj, instance=instance, threads=threads)


def _injected(cls: type, config: dict[str, Any],
              storage: StoragePolicy | None) -> dict[str, Any]:
    """``config`` plus ``storage`` where the class asks for it and the config is silent."""
    if storage is None or "storage" in config:
        return config
    try:
        wanted = "storage" in inspect.signature(cls).parameters
    except (TypeError, ValueError):  # no signature to read: inject nothing
        return config
    return {**config, "storage": storage} if wanted else config


def _build(cls: type, config: dict[str, Any], path: str) -> Any:
    try:
        inspect.signature(cls).bind(**config)
    except TypeError as exc:
        raise HandlerError(
            f"handler {path!r}: {cls.__name__}() does not accept spec.config "
            f"{sorted(config)}: {exc}"
        ) from exc
    try:
        return cls(**config)
    except Exception as exc:
        raise HandlerError(
            f"handler {path!r}: {cls.__name__}(**spec.config) raised "
            f"{type(exc).__name__}: {exc}"
        ) from exc

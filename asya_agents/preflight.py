"""Every handler of a mesh checked before any replica starts (``asya up``).

A handler that cannot be imported, or a class whose ``spec.config`` does not fit its
``__init__``, would otherwise let ``asya up`` start as if all were well and then fail in
every replica of its actor, over and over, while the messages wait. So ``asya up``
checks each actor first and refuses to start, with one line naming the file, the actor
and the handler (``error: <file>: actor <name>: handler <path>: <why>``, exit code 2).

It checks what can be checked without running anything heavy, in this process: the
module imports, the attributes resolve, ``spec.config`` binds to the class's
constructor signature (the class is *not* built: models load in ``__init__``), and the
callable takes one argument. Built-in actors' configs (the review actor's) were already
checked when the manifest loaded. What only building the class can show (a model that
fails to load) is the supervisor's to report: see ``asya status`` and crash-looping.
"""

from __future__ import annotations

import inspect
from typing import Any

from asya_agents.builtin import CONFIG_MODELS
from asya_agents.errors import HandlerError
from asya_agents.handlers import resolve_path
from asya_agents.manifest import LoadedMesh
from asya_agents.replica import add_python_paths
from asya_agents.suggest import did_you_mean

__all__ = ["check_handler", "check_mesh"]

#: Constructor parameters the runtime fills itself when ``spec.config`` does not
#: (see handlers.load_handler): a class may ask for them without configuring them.
_INJECTED = ("storage",)


def check_mesh(loaded: LoadedMesh) -> None:
    """Check every actor's handler; :class:`HandlerError` for the first that fails,
    naming its file, the actor and the handler (and how many more fail)."""
    add_python_paths(loaded)
    failures = []
    for name, actor in loaded.actors.items():
        path = actor.spec.handler or ""
        if path in CONFIG_MODELS:
            continue
        try:
            check_handler(path, config=actor.spec.config)
        except HandlerError as exc:
            file = loaded.sources.get(name, loaded.path)
            failures.append(f"{file}: actor {name}: handler {path}: {exc}")
    if failures:
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise HandlerError(failures[0] + more)


def check_handler(path: str, *, config: dict[str, Any] | None = None) -> None:
    """What :func:`~asya_agents.handlers.load_handler` would refuse, without building
    a class: :class:`HandlerError` says why (without repeating the path)."""
    try:
        module, attrs = resolve_path(path)
    except HandlerError as exc:
        raise HandlerError(str(exc).removeprefix(f"handler {path!r}: ")) from exc
    config = dict(config or {})
    owner: Any = module
    for depth, attr in enumerate(attrs):
        if not hasattr(owner, attr):
            where = ".".join([module.__name__, *attrs[:depth]])
            raise HandlerError(f"{where!r} has no attribute {attr!r}")
        obj = getattr(owner, attr)
        last = depth == len(attrs) - 1
        if inspect.isclass(obj) and not last:
            _bind_config(obj, config)
            config = {}
        elif last:
            _check_callable(owner, attr, obj, config)
        owner = obj


def _bind_config(cls: type, config: dict[str, Any]) -> None:
    try:
        sig = inspect.signature(cls)
    except (TypeError, ValueError):  # no signature to read (a builtin): nothing to check
        return
    params = sig.parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for key in config:
        if key not in params and not takes_any:
            raise HandlerError(f"spec.config.{key}: {cls.__name__}() takes no such argument"
                               + (did_you_mean(key, params) or
                                  f" (it takes: {', '.join(params) or 'nothing'})"))
    injected = {k: None for k in _INJECTED if k in params and k not in config}
    try:
        sig.bind(**config, **injected)
    except TypeError as exc:
        raise HandlerError(f"{cls.__name__}() does not accept spec.config "
                           f"{sorted(config)}: {exc}") from exc


def _check_callable(owner: Any, attr: str, obj: Any, config: dict[str, Any]) -> None:
    if inspect.isclass(obj):
        raise HandlerError(f"is a class; name a method: {attr}.<method>")
    if not callable(obj):
        raise HandlerError(f"is not callable ({type(obj).__name__})")
    if config:
        raise HandlerError(f"is a function but spec.config is set ({', '.join(sorted(config))}); "
                           "config is passed to a class's __init__")
    # A method named on its class is unbound here: it takes the instance first.
    unbound = inspect.isclass(owner) and inspect.isfunction(inspect.getattr_static(owner, attr))
    try:
        inspect.signature(obj).bind(*([object()] * (2 if unbound else 1)))
    except TypeError as exc:
        raise HandlerError(f"must take exactly one argument: {exc}") from exc
    except ValueError:  # builtins without a signature
        return

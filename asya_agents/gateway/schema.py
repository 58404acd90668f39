"""The input schema of a mesh's tool: what its entry actor's handler says it takes.

An MCP client (an AI assistant) fills in a tool's arguments from its JSON Schema, and
the arguments become the job's payload. A handler that declares its payload type, a
pydantic model or a ``TypedDict`` as the annotation of its first parameter, gives that
schema; a batch handler's ``list[Model]`` gives the model's. The handler's module is
imported (on the mesh's ``pythonPath``) but nothing is called or constructed, and a
handler that declares nothing, runs in envelope mode, or does not import here gives
``{"type": "object"}``: the job is still run, the client is only told less.
"""

from __future__ import annotations

import inspect
import logging
import typing
from typing import Any

from pydantic import BaseModel, create_model

from asya_agents.handlers import resolve_path
from asya_agents.manifest import LoadedMesh
from asya_agents.replica import add_python_paths
from asya_agents.review import PARK_HANDLER

__all__ = ["OBJECT", "input_schema", "payload_type"]

log = logging.getLogger("asya.gateway")
#: What a tool takes when its entry actor says nothing more.
OBJECT: dict[str, Any] = {"type": "object"}


def payload_type(path: str, *, batch: bool = False) -> Any:
    """The annotation of the first payload parameter of handler ``path``, or ``None``;
    for ``module.Class.method`` the method's, without building the class."""
    module, chain = resolve_path(path)
    target: Any = module
    for name in chain:
        target = getattr(target, name)
    params = list(inspect.signature(target).parameters.values())
    if len(chain) > 1 and params and params[0].name in ("self", "cls"):
        params = params[1:]
    if not params:
        return None
    hints = typing.get_type_hints(target)
    annotation = hints.get(params[0].name)
    if batch and typing.get_origin(annotation) is list:
        annotation = (typing.get_args(annotation) or (None,))[0]
    return annotation


def _schema_of(annotation: Any) -> dict[str, Any] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_json_schema()
    if typing.is_typeddict(annotation):
        # typing.TypedDict (not typing_extensions') is what handlers import on 3.11,
        # and pydantic takes it only on 3.12: read its fields into a model instead.
        hints = typing.get_type_hints(annotation)
        required = getattr(annotation, "__required_keys__", frozenset(hints))
        fields: dict[str, Any] = {name: (hint, ... if name in required else None)
                                  for name, hint in hints.items()}
        model = create_model(annotation.__name__, __doc__=annotation.__doc__, **fields)
        return model.model_json_schema()
    return None


def input_schema(loaded: LoadedMesh) -> dict[str, Any]:
    """The JSON Schema of a job's payload for mesh ``loaded`` (module docstring)."""
    entry = loaded.actors[loaded.route[0]]
    spec = entry.spec
    if spec.handlerMode != "payload" or not spec.handler or spec.handler == PARK_HANDLER:
        return dict(OBJECT)
    add_python_paths(loaded)
    try:
        annotation = payload_type(spec.handler, batch=spec.batch is not None)
    except Exception as exc:  # a handler that does not import here still runs there
        log.warning("no input schema for mesh %s from %s: %s", loaded.name, spec.handler, exc)
        return dict(OBJECT)
    try:
        schema = _schema_of(annotation)
    except Exception as exc:  # a type pydantic cannot describe: say less, run anyway
        log.warning("no input schema for mesh %s from %s: %s", loaded.name, spec.handler, exc)
        return dict(OBJECT)
    if schema is None or schema.get("type") != "object":
        return dict(OBJECT)
    return schema

"""The ``asya`` group and what its commands share: the mesh options and one error line.

Every command that reads a mesh takes the mesh folder and ``--transport`` /
``--state-dir``, resolved by :class:`~asya_agents.context.MeshContext` the same way for
every command. This project's errors become one red line and exit code 2.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import click

from asya_agents.context import MeshContext
from asya_agents.errors import AsyaError

__all__ = ["main", "mesh_options", "open_mesh", "run"]

T = TypeVar("T")


class _Group(click.Group):
    """Turns this project's errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AsyaError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asya-agents")
def main() -> None:
    """asya-agents: AI pipelines as an actor mesh.

    Each step is an actor (a Python function behind its own queue); each message carries
    its own route. Run a mesh folder with `asya up`, feed it with `asya send`, watch it
    with `asya status` and read what ended with `asya results`.
    """


def mesh_options(fn: Any) -> Any:
    """MESH, ``--transport`` and ``--state-dir``."""
    fn = click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                      help="State folder [ASYA_STATE_DIR; MESH/.asya]")(fn)
    fn = click.option("--transport", type=click.Choice(["embedded", "rabbitmq", "sqs"]),
                      default=None, help="Override mesh.yaml's transport [ASYA_TRANSPORT]")(fn)
    return click.argument("mesh", type=click.Path(exists=True, file_okay=False,
                                                  path_type=Path))(fn)


def open_mesh(mesh: Path, transport: str | None, state_dir: Path | None) -> MeshContext:
    return MeshContext.open(mesh, transport=transport, state_dir=state_dir)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)

"""The gateway commands: ``asya gateway MESH`` serves a mesh to other programs (HTTP
and Server-Sent Events, MCP, A2A); ``asya gateway hash-key NAME`` writes a credentials
entry for it. See ``docs/gateway.md``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from asya_agents.cli.app import main, mesh_options, open_mesh

__all__ = ["gateway", "gateway_hash_key", "gateway_serve"]


class _GatewayGroup(click.Group):
    """``asya gateway MESH`` serves; ``asya gateway hash-key`` is a tool. A first
    argument that names no subcommand is the mesh of ``serve``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["serve", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_GatewayGroup)
def gateway() -> None:
    """The gateway: `asya gateway MESH` serves MESH over HTTP, MCP and A2A.

    Clients send `Authorization: Bearer KEY`; the keys' hashes come from
    ASYA_GATEWAY_KEYS ("name:hash,…") or ASYA_GATEWAY_KEYS_FILE, and
    `printf %s KEY | asya gateway hash-key NAME` writes an entry.
    """


@gateway.command("serve")
@mesh_options
@click.option("--host", default=None, help="Listen address [ASYA_GATEWAY_HOST; 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port [ASYA_GATEWAY_PORT; 8080]")
@click.option("--insecure", is_flag=True,
              help="Serve without credentials when no keys are set (loopback only)")
def gateway_serve(mesh: Path, transport: str | None, state_dir: Path | None,
                  host: str | None, port: int | None, insecure: bool) -> None:
    """Serve MESH to other programs until SIGTERM (needs the gateway extra)."""
    from asya_agents.gateway import require

    require()
    from asya_agents.gateway.server import credentials, serve
    from asya_agents.observe.logs import configure_logging

    ctx = open_mesh(mesh, transport, state_dir)
    settings = ctx.settings.gateway
    host = host or settings.host
    keys = credentials(ctx, insecure=insecure, host=host)
    configure_logging(actor="gateway", fmt=ctx.settings.mesh.log_format,
                      level=ctx.settings.mesh.log_level)
    port = settings.port if port is None else port
    click.echo(f"gateway of mesh {ctx.name} on {ctx.kind} at http://{host}:{port}"
               f" ({'no credentials' if keys is None else f'{len(keys)} key(s)'});"
               " Ctrl-C stops")
    serve(ctx, host=host, port=port, keys=keys)


@gateway.command("hash-key")
@click.argument("name")
def gateway_hash_key(name: str) -> None:
    """Print a NAME:hash entry for ASYA_GATEWAY_KEYS, reading the key from stdin.

    Make a key with `openssl rand -hex 32`; give it to the client, keep the entry.
    """
    from asya_agents.gateway.keys import hash_key

    if ":" in name or "," in name or not name.strip():
        raise click.BadParameter("a client name without ':' or ','", param_hint="NAME")
    key = sys.stdin.readline().strip()
    if not key:
        raise click.UsageError("no key on stdin: printf %s KEY | asya gateway hash-key NAME")
    click.echo(f"{name}:{hash_key(key)}")

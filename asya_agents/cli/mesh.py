"""The commands that run and use a mesh: ``up``, ``send``, ``status``, ``results``,
``replay``. Each parses its flags, calls the library, and prints; ``--json`` output is
for scripts and stays stable (DESIGN.md)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from asya_agents.cli.app import main, mesh_options, open_mesh, run
from asya_agents.context import MeshContext
from asya_agents.envelope import Envelope
from asya_agents.errors import UnknownActorError
from asya_agents.status import served
from asya_agents.stores import ResultStore

__all__ = ["results", "send", "status", "up"]


@main.command()
@mesh_options
@click.option("--gateway", "with_gateway", is_flag=True,
              help="Also run `asya gateway` beside the replicas (see docs/gateway.md)")
@click.option("--gateway-host", default=None, help="The gateway's address [127.0.0.1]")
@click.option("--gateway-port", type=click.IntRange(0, 65535), default=None,
              help="The gateway's port [8080]")
@click.option("--gateway-insecure", is_flag=True,
              help="The gateway serves without credentials when no keys are set")
def up(mesh: Path, transport: str | None, state_dir: Path | None, with_gateway: bool,
       gateway_host: str | None, gateway_port: int | None, gateway_insecure: bool) -> None:
    """Run MESH on this machine until SIGINT/SIGTERM.

    Each actor runs in its own processes, scaled 0..N from its queue depth with KEDA's
    semantics (the manifest's spec.scaling). Stopping drains in-flight work first.
    Every handler is imported and its spec.config checked against it first: a mistake
    stops here, with one line naming the file, the actor and the handler. With
    --gateway, the gateway runs beside the replicas and stops with them.
    """
    from asya_agents.observe.logs import configure_logging
    from asya_agents.preflight import check_mesh
    from asya_agents.supervisor import run_supervisor

    ctx = open_mesh(mesh, transport, state_dir)
    check_mesh(ctx.loaded)
    gateway = _gateway_args(ctx, gateway_host, gateway_port, gateway_insecure) \
        if with_gateway else None
    configure_logging(actor="supervisor", fmt=ctx.settings.mesh.log_format,
                      level=ctx.settings.mesh.log_level)
    click.echo(f"mesh {ctx.name} on {ctx.kind} (state: {ctx.state_dir}); Ctrl-C stops")
    run(run_supervisor(ctx, gateway=gateway))


def _gateway_args(ctx: MeshContext, host: str | None, port: int | None,
                  insecure: bool) -> list[str]:
    """The flags of the gateway ``up --gateway`` starts, its credentials checked now."""
    from asya_agents.gateway import require

    require()
    from asya_agents.gateway.server import credentials

    host = host or ctx.settings.gateway.host
    credentials(ctx, insecure=insecure, host=host)
    args = ["--host", host, "--port", str(ctx.settings.gateway.port if port is None else port)]
    return [*args, "--insecure"] if insecure else args


def _parse_payload(_: click.Context, __: click.Parameter, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc


@main.command()
@mesh_options
@click.option("--payload", required=True, callback=_parse_payload, help="JSON payload")
@click.option("--route", default=None, help="Comma-separated actors [mesh.yaml's route]")
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--wait", is_flag=True, help="Show progress until every envelope has ended")
@click.option("--timeout", default=None, type=float, help="Give up waiting after SECONDS")
def send(mesh: Path, transport: str | None, state_dir: Path | None, payload: Any,
         route: str | None, count: int, wait: bool, timeout: float | None) -> None:
    """Enqueue COUNT envelopes with PAYLOAD at the head of the route."""
    ctx = open_mesh(mesh, transport, state_dir)
    try:
        actors = ctx.route([a.strip() for a in route.split(",")] if route else None)
    except UnknownActorError as exc:
        raise click.BadParameter(str(exc), param_hint="--route") from exc
    envelopes = [Envelope.create(payload, actors) for _ in range(count)]

    async def push() -> bool | None:
        async with ctx.connected() as tr:
            await ctx.send(tr, envelopes)
            return await served(ctx.supervisor(), tr, actors[0])

    running = run(push())
    ids = [e.id for e in envelopes]
    click.echo(f"sent {count} envelope(s) to {actors[0]}: {', '.join(ids[:5])}"
               + (" …" if count > 5 else ""))
    if not running:
        up = " ".join(["asya up", str(mesh), *(["--transport", transport] if transport else []),
                       *(["--state-dir", str(state_dir)] if state_dir else [])])
        _warn_unserved(ctx, actors[0], count, running, up)
        if wait and timeout is None and ctx.kind == "embedded":
            # Only `asya up` serves an embedded mesh: waiting would never end. A --timeout
            # bounds the wait, so then it waits (for a supervisor started meanwhile).
            click.secho(f"not waiting: nothing would end them; start the mesh ({up}), then "
                        f"follow them with: asya results {mesh}", fg="yellow", err=True)
            sys.exit(4)
    if wait:
        sys.exit(1 if _wait(ctx.results(), ids, timeout) else 0)


def _warn_unserved(ctx: MeshContext, queue: str, count: int, running: bool | None,
                   up: str) -> None:
    """Say on stderr that what was sent waits, since nothing seems to run the mesh;
    on a broker a cluster may still scale it from zero, which no count shows."""
    where = f"no supervisor is running for mesh {ctx.name} (state: {ctx.state_dir})"
    if ctx.kind != "embedded":
        seen = "nothing consumes" if running is False else "the broker cannot tell what consumes"
        where += f" and {seen} queue {queue} on {ctx.kind}; unless a cluster scales it from zero,"
    else:
        where += ":"
    click.secho(f"warning: {where} the {count} envelope(s) wait in the queue; start one "
                f"with: {up}", fg="yellow", err=True)


def _wait(store: ResultStore, ids: list[str], timeout: float | None) -> int:
    """Show progress until every root in ``ids`` has ended; the number that failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("ended", total=len(ids))
        while (done := _ended(store, ids)) < len(ids):
            bar.update(task, completed=done)
            if deadline is not None and time.monotonic() > deadline:
                click.secho(f"timed out: {len(ids) - done} envelope(s) still running",
                            fg="yellow", err=True)
                sys.exit(3)
            time.sleep(0.2)
        bar.update(task, completed=done)
    counts = {"succeeded": 0, "failed": 0, "paused": 0}
    wanted = set(ids)
    for rec in store.results():
        if rec.root_id in wanted:
            counts[rec.status] = counts.get(rec.status, 0) + 1
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["failed"]


def _ended(store: ResultStore, ids: list[str]) -> int:
    return sum(1 for w in store.ended_weight(ids).values() if w >= 1 - 1e-9)


@main.command()
@mesh_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output")
@click.option("--watch", is_flag=True,
              help="Live view refreshing in place, with throughput and errors per actor")
@click.option("--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between refreshes of --watch")
@click.option("--count", default=None, type=click.IntRange(min=1),
              help="Stop --watch after N refreshes [never]")
def status(mesh: Path, transport: str | None, state_dir: Path | None, as_json: bool,
           watch: bool, interval: float, count: int | None) -> None:
    """Per actor: queue depth, in flight, replicas; totals of ended envelopes.

    With --watch: a live view (one JSON line per refresh with --json) that adds the
    throughput and errors per second of each actor, read from its replicas' /metrics,
    and sparklines per actor of the history `asya up` keeps (the last minute, from the
    first refresh on). Ctrl-C stops it.
    """
    ctx = open_mesh(mesh, transport, state_dir)
    if watch:
        _watch_status(ctx, interval=interval, count=count, as_json=as_json)
        return

    async def read() -> dict[str, Any]:
        async with ctx.connected() as tr:
            return await ctx.status(tr)

    report = run(read())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console

    from asya_agents.observe.watch import status_table

    Console().print(status_table(report))


def _watch_status(ctx: MeshContext, *, interval: float, count: int | None,
                  as_json: bool) -> None:
    from asya_agents.observe.history import read_history
    from asya_agents.observe.watch import SPARK_SAMPLES, Watcher, watch

    def history() -> list[dict[str, Any]]:  # one more sample: the first rate needs it
        return read_history(ctx.state_dir, now=time.time(), last=SPARK_SAMPLES + 1)

    async def go() -> None:
        async with ctx.connected() as tr:
            watcher = Watcher(lambda: ctx.status(tr), history=history)
            await watch(watcher, interval=interval, count=count, as_json=as_json,
                        echo=click.echo)

    try:
        run(go())
    except KeyboardInterrupt:
        pass


@main.command()
@mesh_options
@click.option("--status", "status_", type=click.Choice(["succeeded", "failed", "paused"]),
              default=None, help="Only envelopes that ended so")
@click.option("--limit", type=int, default=None, help="At most N records")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output")
@click.option("--id", "envelope_id", default=None,
              help="Show this envelope's path (or every piece of this root) hop by hop")
def results(mesh: Path, transport: str | None, state_dir: Path | None, status_: str | None,
            limit: int | None, as_json: bool, envelope_id: str | None) -> None:
    """Ended envelopes with their payloads and, for failures, the reason.

    With --id: the full path of that envelope (or of every fan-out piece of that root)
    through the mesh, with the queue wait and handler time of each hop.
    """
    from rich.console import Console

    from asya_agents.observe.paths import paths_of, render_paths, results_table

    store = open_mesh(mesh, transport, state_dir).results()
    if envelope_id is not None:
        paths = paths_of(store, envelope_id, status=status_, limit=limit)
        if not paths:
            raise click.BadParameter(f"no ended envelope {envelope_id!r}", param_hint="--id")
        if as_json:
            click.echo(json.dumps(paths, indent=2))
        else:
            Console().print(render_paths(paths))
        return
    records = store.results(status=status_, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
    else:
        Console().print(results_table(records))


@main.command()
@mesh_options
@click.argument("envelope_id", required=False)
@click.option("--unfinished", is_flag=True,
              help="Send every replay that was recorded but never sent (its sender died)")
def replay(mesh: Path, transport: str | None, state_dir: Path | None,
           envelope_id: str | None, unfinished: bool) -> None:
    """Send a failed envelope back to the actor where it failed, as a first attempt.

    The replay is recorded before it is sent: from then on the envelope is no longer
    listed as failed, and its next end (however fast) replaces the failure. A replay
    that could not be sent stays recorded; run the same command again to send it.
    """
    from asya_agents.crew import finish_replays, replay_failed
    from asya_agents.errors import StoreError, TransportError

    if (envelope_id is None) == (not unfinished):
        raise click.UsageError("give an ENVELOPE_ID or --unfinished (not both)")
    ctx = open_mesh(mesh, transport, state_dir)

    async def push(envelope_id: str) -> Envelope:
        async with ctx.connected() as tr:
            return await replay_failed(ctx.results(), tr, envelope_id)

    async def sweep() -> list[str]:
        async with ctx.connected() as tr:
            return await finish_replays(ctx.results(), tr)

    if envelope_id is None:
        done = run(sweep())
        click.echo(f"sent {len(done)} unfinished replay(s)" +
                   (f": {', '.join(done)}" if done else ""))
        return
    try:
        envelope = run(push(envelope_id))
    except StoreError as exc:
        raise click.BadParameter(str(exc), param_hint="ENVELOPE_ID") from exc
    except TransportError as exc:
        raise TransportError(f"the replay of {envelope_id} is recorded but was not sent "
                             f"({exc}); run `asya replay {mesh} {envelope_id}` again to "
                             "send it") from exc
    click.echo(f"replayed {envelope_id} to {envelope.route.curr}")

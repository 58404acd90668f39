"""``asya``: the one entry point (see ``docs/cli.md``).

Every command that reads a mesh takes the mesh folder. Connection settings come from
flags or ``ASYA_*`` variables (``settings.py``); ``--json`` output is for scripts and
stays stable.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from asya_agents.envelope import Envelope
from asya_agents.errors import AsyaError
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.settings import Settings
from asya_agents.stores import ResultStore, open_result_store
from asya_agents.transports import Outgoing, Transport, open_transport

__all__ = ["main"]


class _Context:
    """What every mesh command needs, resolved once from flags, env and mesh.yaml."""

    def __init__(self, mesh: Path, transport: str | None, state_dir: Path | None) -> None:
        self.settings = Settings()
        self.loaded: LoadedMesh = load_mesh(mesh)
        self.kind = transport or self.settings.mesh.transport or self.loaded.mesh.spec.transport
        self.state_dir = self.loaded.state_dir(state_dir or self.settings.mesh.state_dir)

    def transport(self) -> Transport:
        return open_transport(self.kind, settings=self.settings, state_dir=self.state_dir,
                              mesh=self.loaded.name)

    def store(self) -> ResultStore:
        return open_result_store(self.settings.store.url, state_dir=self.state_dir)


def _mesh_options(fn: Any) -> Any:
    fn = click.option("--state-dir", type=click.Path(path_type=Path), default=None,
                      help="State folder [ASYA_STATE_DIR; MESH/.asya]")(fn)
    fn = click.option("--transport", type=click.Choice(["embedded", "rabbitmq", "sqs"]),
                      default=None, help="Override mesh.yaml's transport [ASYA_TRANSPORT]")(fn)
    return click.argument("mesh", type=click.Path(exists=True, file_okay=False, path_type=Path))(fn)


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


# -- up -------------------------------------------------------------------------------


@main.command()
@_mesh_options
def up(mesh: Path, transport: str | None, state_dir: Path | None) -> None:
    """Run MESH on this machine until SIGINT/SIGTERM.

    Each actor runs in its own processes, scaled 0..N from its queue depth with KEDA's
    semantics (the manifest's spec.scaling). Stopping drains in-flight work first.
    """
    from asya_agents.crew import crew_scaling
    from asya_agents.observe.logs import configure_logging
    from asya_agents.supervisor import Supervisor

    ctx = _Context(mesh, transport, state_dir)
    configure_logging(actor="supervisor", fmt=ctx.settings.mesh.log_format,
                      level=ctx.settings.mesh.log_level)

    async def run() -> None:
        tr = ctx.transport()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Supervisor(ctx.loaded, tr, transport_kind=ctx.kind, state_dir=ctx.state_dir,
                             metrics_port=ctx.settings.mesh.metrics_port,
                             metrics_host=ctx.settings.mesh.metrics_host,
                             crew=crew_scaling(ctx.settings.store.url)).run(stop)
        finally:
            await tr.close()

    click.echo(f"mesh {ctx.loaded.name} on {ctx.kind} (state: {ctx.state_dir}); Ctrl-C stops")
    asyncio.run(run())


# -- send -----------------------------------------------------------------------------


def _parse_payload(_: click.Context, __: click.Parameter, value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}") from exc


@main.command()
@_mesh_options
@click.option("--payload", required=True, callback=_parse_payload, help="JSON payload")
@click.option("--route", default=None, help="Comma-separated actors [mesh.yaml's route]")
@click.option("--count", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--wait", is_flag=True, help="Show progress until every envelope has ended")
@click.option("--timeout", default=None, type=float, help="Give up waiting after SECONDS")
def send(mesh: Path, transport: str | None, state_dir: Path | None, payload: Any,
         route: str | None, count: int, wait: bool, timeout: float | None) -> None:
    """Enqueue COUNT envelopes with PAYLOAD at the head of the route."""
    ctx = _Context(mesh, transport, state_dir)
    actors = [a.strip() for a in route.split(",")] if route else ctx.loaded.route
    unknown = [a for a in actors if a not in ctx.loaded.actor_names]
    if unknown:
        raise click.BadParameter(f"unknown actor(s) {', '.join(unknown)}", param_hint="--route")
    envelopes = [Envelope.create(payload, actors) for _ in range(count)]

    async def push() -> None:
        tr = ctx.transport()
        try:
            await tr.ensure_queues(sorted(ctx.loaded.actor_names))
            for start in range(0, len(envelopes), 500):
                await tr.send([Outgoing(e.route.curr, e.encode())
                               for e in envelopes[start:start + 500]])
        finally:
            await tr.close()

    asyncio.run(push())
    ids = [e.id for e in envelopes]
    click.echo(f"sent {count} envelope(s) to {actors[0]}: {', '.join(ids[:5])}"
               + (" …" if count > 5 else ""))
    if wait:
        failed = _wait(ctx.store(), ids, timeout)
        sys.exit(1 if failed else 0)


def _wait(store: ResultStore, ids: list[str], timeout: float | None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    deadline = None if timeout is None else time.monotonic() + timeout
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("ended", total=len(ids))
        while True:
            done = sum(1 for w in store.ended_weight(ids).values() if w >= 1 - 1e-9)
            bar.update(task, completed=done)
            if done == len(ids):
                break
            if deadline is not None and time.monotonic() > deadline:
                click.secho(f"timed out: {len(ids) - done} envelope(s) still running",
                            fg="yellow", err=True)
                sys.exit(3)
            time.sleep(0.2)
    counts = {"succeeded": 0, "failed": 0, "paused": 0}
    wanted = set(ids)
    for rec in store.results():
        if rec.root_id in wanted:
            counts[rec.status] = counts.get(rec.status, 0) + 1
    click.echo(", ".join(f"{v} {k}" for k, v in counts.items()))
    return counts["failed"]


# -- status / results / replay ------------------------------------------------------------


def _read_supervisor(state_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if time.time() - data.get("updated", 0) < 10 else {}


@main.command()
@_mesh_options
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
    throughput and errors per second of each actor, read from its replicas' /metrics.
    """
    ctx = _Context(mesh, transport, state_dir)
    if watch:
        _watch_status(ctx, interval=interval, count=count, as_json=as_json)
        return
    sup = _read_supervisor(ctx.state_dir).get("actors", {})

    async def gather() -> dict[str, Any]:
        tr = ctx.transport()
        try:
            out = {}
            for name in [*ctx.loaded.actors, "happy-end", "error-end"]:
                st = await tr.stats(name)
                rep = sup.get(name, {})
                out[name] = {"depth": st.depth, "in_flight": st.in_flight,
                             "delayed": st.delayed, "replicas": rep.get("replicas", 0),
                             "metrics": rep.get("metrics", [])}
            return out
        finally:
            await tr.close()

    actors = asyncio.run(gather())
    totals = ctx.store().totals()
    report: dict[str, Any] = {"mesh": ctx.loaded.name, "transport": ctx.kind, "running": bool(sup),
              "actors": actors,
              "totals": {"succeeded": totals.succeeded, "failed": totals.failed,
                         "paused": totals.paused, "duplicates": totals.duplicates}}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mesh {ctx.loaded.name} ({ctx.kind})"
                  + ("" if sup else " — supervisor not running"))
    for col in ("actor", "depth", "in flight", "delayed", "replicas"):
        table.add_column(col, justify="left" if col == "actor" else "right")
    for name, row in actors.items():
        table.add_row(name, str(row["depth"]), str(row["in_flight"]), str(row["delayed"]),
                      str(row["replicas"]))
    console = Console()
    console.print(table)
    console.print(", ".join(f"{k} {v}" for k, v in report["totals"].items()))


def _watch_status(ctx: _Context, *, interval: float, count: int | None, as_json: bool) -> None:
    from asya_agents.observe.watch import Watcher, watch

    async def run() -> None:
        tr = ctx.transport()
        watcher = Watcher(ctx.loaded.name, ctx.kind, [*ctx.loaded.actors, "happy-end",
                                                      "error-end"], tr, ctx.store(),
                          lambda: _read_supervisor(ctx.state_dir))
        try:
            await watch(watcher, interval=interval, count=count, as_json=as_json,
                        echo=click.echo)
        finally:
            await tr.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


@main.command()
@_mesh_options
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
    ctx = _Context(mesh, transport, state_dir)
    if envelope_id is not None:
        from asya_agents.observe.paths import describe_path, render_paths

        found = [r for r in ctx.store().results(status=status_)
                 if envelope_id in (r.id, r.root_id)][:limit]
        if not found:
            raise click.BadParameter(f"no ended envelope {envelope_id!r}", param_hint="--id")
        paths = [describe_path(r.to_json(), r.envelope) for r in found]
        if as_json:
            click.echo(json.dumps(paths, indent=2))
            return
        from rich.console import Console

        Console().print(render_paths(paths))
        return
    records = ctx.store().results(status=status_, limit=limit)
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    for col in ("id", "status", "path", "payload / error"):
        table.add_column(col)
    for rec in records:
        path = " → ".join([*rec.route.get("prev", []), rec.route.get("curr", "")])
        detail = (f"{rec.error['type'].rsplit('.', 1)[-1]}: {rec.error['message']}"
                  if rec.error else json.dumps(rec.payload))
        table.add_row(rec.id, rec.status, path, detail[:120])
    Console().print(table)


@main.command()
@_mesh_options
@click.argument("envelope_id")
def replay(mesh: Path, transport: str | None, state_dir: Path | None, envelope_id: str) -> None:
    """Send a failed envelope back to the actor where it failed, as a first attempt."""
    ctx = _Context(mesh, transport, state_dir)
    store = ctx.store()
    rec = store.get(envelope_id)
    if rec is None or rec.status != "failed":
        raise click.BadParameter(f"no failed envelope {envelope_id!r}", param_hint="ENVELOPE_ID")
    from asya_agents.crew import replay_failed

    async def push() -> Envelope:
        tr = ctx.transport()
        try:
            return await replay_failed(store, tr, envelope_id)
        finally:
            await tr.close()

    envelope = asyncio.run(push())
    click.echo(f"replayed {envelope_id} to {envelope.route.curr}")


# -- Kubernetes: render / crd / operator ------------------------------------------------


@main.command()
@click.argument("mesh", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder to write into")
@click.option("--transport", type=click.Choice(["rabbitmq", "sqs"]), default=None,
              help="Broker on the cluster [mesh.yaml's, if rabbitmq or sqs; else rabbitmq]")
@click.option("--image", "runtime_image", default="asya-runtime:latest", show_default=True,
              help="Image of crew actors, the console, and actors without spec.image")
@click.option("--image-root", default="/app", show_default=True,
              help="Where the image holds the project tree")
@click.option("--project-root", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Folder that the image holds at --image-root [cwd]")
@click.option("--queue-prefix", default="asya", show_default=True)
@click.option("--sqs-region", default="us-east-1", show_default=True)
@click.option("--sqs-endpoint", default=None, help="SQS endpoint URL (LocalStack, moto)")
@click.option("--overrides", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="AsyncActor documents merged over the mesh's actors")
@click.option("--flavors", "flavor_dirs", multiple=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="More folders of Flavor files, for --overrides")
def render(mesh: Path, out_dir: Path, transport: str | None, runtime_image: str,
           image_root: str, project_root: Path | None, queue_prefix: str, sqs_region: str,
           sqs_endpoint: str | None, overrides: Path | None,
           flavor_dirs: tuple[Path, ...]) -> None:
    """Write Kubernetes manifests for MESH into a kustomize folder.

    Per actor a Deployment and a KEDA ScaledObject; per mesh the mesh ConfigMap, a
    ServiceAccount, a TriggerAuthentication (reading a Secret), the crew actors and the
    review console. Same input, same bytes.
    """
    from asya_agents.k8s.render import (
        RenderOptions,
        apply_overrides,
        render_mesh,
        write_rendered,
    )
    from asya_agents.manifest import load_flavors

    loaded = load_mesh(mesh)
    if overrides is not None:
        loaded = apply_overrides(loaded, overrides, load_flavors(flavor_dirs))
    declared = loaded.mesh.spec.transport
    kind = transport or (declared if declared in ("rabbitmq", "sqs") else "rabbitmq")
    options = RenderOptions(
        transport=kind,  # type: ignore[arg-type]
        runtime_image=runtime_image, image_root=image_root, project_root=project_root,
        queue_prefix=queue_prefix, sqs_region=sqs_region, sqs_endpoint=sqs_endpoint,
    )
    written = write_rendered(render_mesh(loaded, options), out_dir)
    click.echo(f"wrote {len(written)} files for mesh {loaded.name} ({kind}) to {out_dir}")


@main.command()
@click.option("-o", "--output", "out_dir", default=None,
              type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per CRD into this folder instead of printing")
def crd(out_dir: Path | None) -> None:
    """Print the CustomResourceDefinitions (AsyncActor, Flavor)."""
    from asya_agents.k8s.crd import crd_documents, dump_yaml

    docs = crd_documents()
    if out_dir is None:
        click.echo(dump_yaml(docs), nl=False)
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    for doc in docs:
        (out_dir / f"{doc['metadata']['name']}.yaml").write_text(dump_yaml([doc]))
    click.echo(f"wrote {len(docs)} CRDs to {out_dir}")


@main.command()
@click.option("--transport", type=click.Choice(["rabbitmq", "sqs"]), default="rabbitmq",
              show_default=True, help="Broker the actors use")
@click.option("--namespace", "namespaces", multiple=True,
              help="Watch only these namespaces [all]")
@click.option("--image", "runtime_image", default="asya-runtime:latest", show_default=True,
              help="Image of crew actors, the console, and actors without spec.image")
@click.option("--liveness", default=None, help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
def operator(transport: str, namespaces: tuple[str, ...], runtime_image: str,
             liveness: str | None) -> None:
    """Run the operator that reconciles AsyncActor resources (needs kopf)."""
    from asya_agents.k8s.operator import run_operator

    run_operator(transport=transport, namespaces=list(namespaces), runtime_image=runtime_image,
                 liveness=liveness)


# -- review: the console ----------------------------------------------------------------


class _ReviewGroup(click.Group):
    """``asya review MESH`` opens the console; ``asya review hash-password`` is a tool.
    A first argument that names no subcommand is the mesh of ``open``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["open", *args]
        return super().parse_args(ctx, args)


def _console_file(name: str) -> Path:
    """A file of the console (``ui/``), found beside this package: the library never
    imports the console, it runs it."""
    path = Path(__file__).resolve().parents[1] / "ui" / name
    if not path.is_file():
        raise AsyaError(f"the review console is not installed beside asya_agents ({path} is "
                        "missing); run `asya review` from a checkout of the project")
    return path


@main.group(cls=_ReviewGroup)
def review() -> None:
    """The review console: `asya review MESH` opens it in a browser.

    Reviewers sign in with credentials from ASYA_REVIEWERS ("name:hash,…") or
    ASYA_REVIEWERS_FILE; `asya review hash-password NAME` writes an entry.
    """


@review.command("open")
@_mesh_options
@click.option("--address", default=None, help="Listen address [ASYA_CONSOLE_ADDRESS; 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port [ASYA_CONSOLE_PORT; 8501]")
@click.option("--headless", is_flag=True, help="Do not open a browser")
def review_open(mesh: Path, transport: str | None, state_dir: Path | None, address: str | None,
                port: int | None, headless: bool) -> None:
    """Serve the review console of MESH (needs streamlit)."""
    import importlib.util
    import subprocess

    if importlib.util.find_spec("streamlit") is None:
        raise AsyaError("the review console needs streamlit: pip install 'asya-agents[ui]'")
    settings = Settings().console
    cmd = [sys.executable, "-m", "streamlit", "run", str(_console_file("app.py")),
           "--server.address", address or settings.address,
           "--server.port", str(port or settings.port),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    if headless:
        cmd += ["--server.headless", "true"]
    cmd += ["--", "--mesh", str(mesh.resolve())]
    if state_dir is not None:
        cmd += ["--state-dir", str(state_dir.resolve())]
    if transport is not None:
        cmd += ["--transport", transport]
    try:
        code = subprocess.call(cmd)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


@review.command("hash-password")
@click.argument("name", required=False)
def review_hash_password(name: str | None) -> None:
    """Print a NAME:hash entry for ASYA_REVIEWERS (reads the password from the terminal,
    or one line of stdin)."""
    import subprocess

    cmd = [sys.executable, str(_console_file("auth.py")), "hash-password"]
    sys.exit(subprocess.call(cmd + ([name] if name else [])))


# -- demo -------------------------------------------------------------------------------


@main.command()
@click.option("--photos", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="Your own folder of photos [the bundled coffee photo, "
                                 "degraded in several ways]")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("asya-demo"), show_default=True,
              help="Where the photos, the report and the mesh state go")
@click.option("--mesh", "mesh_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), default=None, help="The food-image mesh folder [mesh/food-image]")
@click.option("--timeout", default=300.0, show_default=True, help="Give up after SECONDS")
def demo(photos: Path | None, out: Path, mesh_dir: Path | None, timeout: float) -> None:
    """The food-image pipeline end to end on this machine: no broker, no GPU, no key.

    Photos go through enhance -> judge -> upload; the judge accepts, loops back with
    stronger settings, or leaves a photo for review. Prints the verdicts and the path of
    a before/after report. With ASYA_LLM_API_KEY or OPENAI_API_KEY set, an LLM judges.
    """
    from asya_agents.demo import run_demo

    run_demo(out=out, photos=photos, mesh=mesh_dir, timeout=timeout, echo=click.echo)

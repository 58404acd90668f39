"""The commands around a mesh that run something beside it: ``review`` (the console)
and ``demo`` (the food-image pipeline end to end).

``asya review`` runs Streamlit as a child process. The child stops with the command,
whatever stops it: SIGTERM (``kill``, a pod being deleted), SIGINT (Ctrl-C) and SIGHUP
are forwarded to the child's process group, and on any way out the command waits for
the group, terminating and then killing what is left; on Linux the child also gets
SIGTERM if the command itself is killed outright. Nothing is left serving on the port.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import click

from asya_agents.cli.app import main, mesh_options
from asya_agents.errors import AsyaError, ConfigError
from asya_agents.settings import ConsoleSettings, Settings

__all__ = ["demo", "review", "run_child"]

class _ReviewGroup(click.Group):
    """``asya review MESH`` opens the console; ``asya review hash-password`` is a tool.
    A first argument that names no subcommand is the mesh of ``open``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["open", *args]
        return super().parse_args(ctx, args)


#: The checkout this package runs from: the console (``ui/``) and the meshes (``mesh/``)
#: live beside it. The library never imports them; it runs them.
PROJECT = Path(__file__).resolve().parents[2]


def _project_file(*parts: str, command: str) -> Path:
    path = PROJECT.joinpath(*parts)
    if not path.is_file():
        raise AsyaError(f"{path} is missing: `asya {command}` runs from a checkout of the "
                        "project (make install)")
    return path


def _console_file(name: str) -> Path:
    return _project_file("ui", name, command="review")


#: Seconds a child has to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _death_signal(parent: int) -> Callable[[], None]:
    """What the child runs before exec: ask Linux for SIGTERM when the parent dies, even
    by SIGKILL (``PR_SET_PDEATHSIG``); a no-op elsewhere. Resolved here, in the parent,
    so the forked child imports nothing."""
    prctl: Any = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def in_child() -> None:
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before that took effect
            os._exit(1)

    return in_child


def run_child(cmd: list[str], *, own_group: bool = True,
              env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` until it ends; its exit code (128 + N for a signal N).

    ``own_group``: the child leads a process group of its own, and SIGTERM, SIGINT and
    SIGHUP sent to this process are forwarded to that group. Off for a child that reads
    the terminal (a password prompt), which then shares ours and gets Ctrl-C from it.
    Either way the child is stopped (SIGTERM, then SIGKILL after :data:`STOP_GRACE`)
    before this returns or raises."""
    child = subprocess.Popen(cmd, env=env, start_new_session=own_group,
                             preexec_fn=_death_signal(os.getpid()))

    def forward(signum: int, _frame: FrameType | None) -> None:
        _signal(child, signum, own_group)

    previous = {s: signal.signal(s, forward) for s in _FORWARDED} if own_group else {}
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the child too: it shares our group
        code = -signal.SIGINT
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _stop(child, own_group)
    return 128 - code if code < 0 else code


def _signal(child: subprocess.Popen[bytes], signum: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(child.pid, signum)
        else:
            child.send_signal(signum)


def _stop(child: subprocess.Popen[bytes], group: bool) -> None:
    """Make sure the child (and, for a group, whatever it started) is gone."""
    if group:
        _signal(child, signal.SIGTERM, group)  # stragglers of an exited leader too
    elif child.poll() is None:
        child.terminate()
    try:
        child.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        _signal(child, signal.SIGKILL, group)
        child.wait()
    if group:
        _signal(child, signal.SIGKILL, group)


@contextlib.contextmanager
def _streamlit_secrets(console: ConsoleSettings, *, port: int) -> Iterator[list[str]]:
    """With single sign-on configured: Streamlit's ``[auth]`` settings in a private
    temporary file (0600 in a 0700 folder, removed afterwards), as the options that
    point Streamlit at it. Secrets never reach the command line or the logs."""
    if not console.oidc_enabled:
        yield []
        return
    auth = _auth_section(console, port=port)
    with tempfile.TemporaryDirectory(prefix="asya-console-") as folder:
        path = Path(folder) / "secrets.toml"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("[auth]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                           for k, v in auth.items()))
        yield ["--secrets.files", str(path)]


def _auth_section(console: ConsoleSettings, *, port: int) -> dict[str, str]:
    missing = [f"ASYA_CONSOLE_{name.upper()}" for name in ("oidc_client_id",
               "oidc_client_secret", "oidc_allow") if not getattr(console, name)]
    if missing:
        raise ConfigError(f"single sign-on (ASYA_CONSOLE_OIDC_METADATA_URL) also needs "
                          f"{', '.join(missing)}; without an allow-list nobody could review")
    import secrets

    return {
        "redirect_uri": console.oidc_redirect_uri or f"http://localhost:{port}/oauth2callback",
        "cookie_secret": console.oidc_cookie_secret or secrets.token_hex(32),
        "client_id": str(console.oidc_client_id),
        "client_secret": str(console.oidc_client_secret),
        "server_metadata_url": str(console.oidc_metadata_url),
    }


@main.group(cls=_ReviewGroup)
def review() -> None:
    """The review console: `asya review MESH` opens it in a browser.

    Reviewers sign in with credentials from ASYA_REVIEWERS ("name:hash,…") or
    ASYA_REVIEWERS_FILE (`asya review hash-password NAME` writes an entry), or through
    an OpenID Connect provider (ASYA_CONSOLE_OIDC_*).
    """


@review.command("open")
@mesh_options
@click.option("--address", default=None, help="Listen address [ASYA_CONSOLE_ADDRESS; 127.0.0.1]")
@click.option("--port", type=int, default=None, help="Port [ASYA_CONSOLE_PORT; 8501]")
@click.option("--headless", is_flag=True, help="Do not open a browser")
def review_open(mesh: Path, transport: str | None, state_dir: Path | None, address: str | None,
                port: int | None, headless: bool) -> None:
    """Serve the review console of MESH (needs streamlit); stops with it."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        raise AsyaError("the review console needs streamlit: pip install 'asya-agents[ui]'")
    settings = Settings().console
    port = port or settings.port
    cmd = [sys.executable, "-m", "streamlit", "run", str(_console_file("app.py")),
           "--server.address", address or settings.address, "--server.port", str(port),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal"]
    if headless:
        cmd += ["--server.headless", "true"]
    args = ["--", "--mesh", str(mesh.resolve())]
    if state_dir is not None:
        args += ["--state-dir", str(state_dir.resolve())]
    if transport is not None:
        args += ["--transport", transport]
    with _streamlit_secrets(settings, port=port) as secrets_options:
        code = run_child([*cmd, *secrets_options, *args])
    sys.exit(code)


@review.command("hash-password")
@click.argument("name", required=False)
def review_hash_password(name: str | None) -> None:
    """Print a NAME:hash entry for ASYA_REVIEWERS (reads the password from the terminal,
    or one line of stdin)."""
    cmd = [sys.executable, str(_console_file("auth.py")), "hash-password"]
    # The same terminal (the prompt reads it), so the child shares our process group.
    sys.exit(run_child(cmd + ([name] if name else []), own_group=False))


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
@click.option("--serve/--no-serve", default=None,
              help="When photos wait for review, keep the mesh serving until Ctrl-C, so "
                   "that approved photos go on to accepted/ [on a terminal: serve; "
                   "otherwise print the command that serves]")
@click.option("--candidates", default=3, show_default=True, type=click.IntRange(1, 16),
              help="Best-of-N: enhance N candidates of each photo, judge each, keep the "
                   "best (1: the single route enhance -> judge -> upload)")
@click.option("--serve-only", is_flag=True,
              help="Send nothing: serve the mesh of an earlier run in --out until Ctrl-C")
def demo(photos: Path | None, out: Path, mesh_dir: Path | None, timeout: float,
         serve: bool | None, candidates: int, serve_only: bool) -> None:
    """The food-image pipeline end to end on this machine: no broker, no GPU, no key.

    Each photo is enhanced as N candidates, each judged, the best kept (--candidates 1:
    enhance -> judge -> upload); the judge accepts it, loops back with stronger
    settings, or leaves it for review. Prints the verdicts and the path of
    a before/after report, then, while photos wait for review, keeps the mesh serving
    (and prints the review console's command) until Ctrl-C; run from a script (no
    terminal), it prints the command that serves instead. With ASYA_LLM_API_KEY or
    OPENAI_API_KEY set, an LLM judges.
    """
    import importlib.util

    if serve_only and photos is not None:
        raise click.UsageError("--serve-only sends no photos: leave out --photos")
    path = _project_file("mesh", "food-image", "food_demo.py", command="demo")
    spec = importlib.util.spec_from_file_location("food_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["food_demo"] = module
    spec.loader.exec_module(module)
    if serve_only:
        module.serve_demo(out=out, mesh=mesh_dir, echo=click.echo)
        return
    if serve is None:  # a person at a terminal can review; a script must not hang
        serve = sys.stdin.isatty()
    module.run_demo(out=out, photos=photos, mesh=mesh_dir, timeout=timeout, serve=serve,
                    candidates=candidates, echo=click.echo)

"""The commands around a mesh that run something beside it: ``review`` (the console)
and ``demo`` (the food-image pipeline end to end)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from asya_agents.cli.app import main, mesh_options
from asya_agents.errors import AsyaError
from asya_agents.settings import Settings

__all__ = ["demo", "review"]

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


@main.group(cls=_ReviewGroup)
def review() -> None:
    """The review console: `asya review MESH` opens it in a browser.

    Reviewers sign in with credentials from ASYA_REVIEWERS ("name:hash,…") or
    ASYA_REVIEWERS_FILE; `asya review hash-password NAME` writes an entry.
    """


@review.command("open")
@mesh_options
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
    import importlib.util

    path = _project_file("mesh", "food-image", "food_demo.py", command="demo")
    spec = importlib.util.spec_from_file_location("food_demo", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["food_demo"] = module
    spec.loader.exec_module(module)
    module.run_demo(out=out, photos=photos, mesh=mesh_dir, timeout=timeout, echo=click.echo)

"""``asya new``: start a mesh from a pattern, or an actor from a template.

A data scientist starts from something that runs: ``asya new mesh NAME --from PATTERN``
copies a pattern mesh of the checkout (``mesh/patterns/*``, each with an
``example.json``) and ``asya new actor NAME --template T`` writes an actor folder from
the templates beside this module (``templates/actor/T``), the ready-made actors
(``llm``, ``judge``, ``review``, ``enhance``) among them. Either comes with a test that
passes as written, so the first change is made against a green test.

What is written points back at the checkout it came from: a mesh's ``pythonPath`` and
an actor's test reach the ready-made actors (``actors/``) there, and a mesh gets its
own copy of the shared flavors. Nothing is written when the name is bad, the target
exists or the template is unknown; a mesh that does not load once written is removed.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from string import Template

import click

from asya_agents.cli.app import main
from asya_agents.errors import AsyaError
from asya_agents.manifest import load_mesh

__all__ = ["ACTOR_TEMPLATES", "ActorTemplate", "check_name", "listing", "mesh_patterns", "new",
           "new_actor", "new_mesh"]

#: The checkout this package runs from: the patterns (``mesh/patterns``), the flavors
#: and the ready-made actors live beside it.
PROJECT = Path(__file__).resolve().parents[2]
TEMPLATES = Path(__file__).resolve().parent / "templates"
_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")


@dataclass(frozen=True)
class ActorTemplate:
    summary: str
    handler: str  # the handler path, with ${module} and ${Class}
    more: str = ""
    files: tuple[str, ...] = ("handler.py",)  # beside actor.yaml, README and the test


ACTOR_TEMPLATES: dict[str, ActorTemplate] = {
    "function": ActorTemplate("A plain function in payload mode (the default).",
                              "${module}.handler.handle"),
    "class": ActorTemplate("A class built once per replica with `spec.config`, a method "
                           "called per message.", "${module}.handler.${Class}.run"),
    "router": ActorTemplate("An envelope-mode actor that rewrites the rest of the route.",
                            "${module}.handler.${Class}.route"),
    "gather": ActorTemplate("A gather (`spec.fanIn`): one call per fan-out group, the "
                            "children's payloads in order.", "${module}.handler.gather",
                            files=("handler.py", "split.py")),
    "llm": ActorTemplate("The ready-made llm actor (actors/llm): one model call through "
                         "litellm, set up in `spec.config`, and its offline stand-in.",
                         "actors.llm.handler.LLM.run",
                         "Every config key: `actors/llm/README.md` in the checkout."),
    "judge": ActorTemplate("The ready-made judge (actors/judge), judging text answers.",
                           "actors.judge.handler.Judge.judge",
                           "It runs no code of this folder; every config key: "
                           "`actors/judge/README.md`.", files=()),
    "review": ActorTemplate("The built-in review actor: parks envelopes for a person.",
                            "asya_agents.review.park",
                            "It runs no user code; every config key: "
                            "`actors/review/README.md`.", files=()),
    "enhance": ActorTemplate("The ready-made photo enhancer (actors/enhance), CPU form.",
                             "actors.enhance.handler.Enhancer.enhance",
                             "It runs no code of this folder; every config key: "
                             "`actors/enhance/README.md`.", files=()),
}

_FILE_ROLES = {"handler.py": "the handler", "split.py": "a fan-out its test feeds it from",
               "actor.yaml": "the AsyncActor manifest", "onemesh.py":
               "the one-actor mesh its test runs", "__init__.py": "makes it importable"}


def check_name(name: str) -> str:
    """``name`` if it can be an actor's or a mesh's name and a Python package's."""
    if not _NAME.match(name):
        raise AsyaError(f"bad name {name!r}: use lower-case letters, digits and '-', "
                        f"starting with a letter, at most 40 characters (e.g. my-agent)")
    module = name.replace("-", "_")
    if keyword.iskeyword(module) or module in ("actors", "asya_agents", "mesh", "test"):
        raise AsyaError(f"bad name {name!r}: {module!r} is reserved in Python or here")
    return module


def _target(name: str, into: Path | None) -> Path:
    target = (into or Path.cwd()) / name
    if target.exists():
        raise AsyaError(f"{target} already exists: pick another name or remove it")
    return target


def mesh_patterns() -> dict[str, Path]:
    """The patterns ``--from`` takes: folders under ``mesh/patterns`` with an example."""
    root = PROJECT / "mesh" / "patterns"
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir())
            if (p / "mesh.yaml").is_file() and (p / "example.json").is_file()}


def _unknown(kind: str, name: str, known: list[str]) -> AsyaError:
    return AsyaError(f"unknown {kind} {name!r}: choose one of {', '.join(known)} "
                     f"(asya new --list)")


def _render(text: str, **fields: str) -> str:
    return Template(text).substitute(fields)


def _rewrite_mesh_yaml(path: Path, *, name: str, checkout: str) -> None:
    text = path.read_text()
    for key, value in (("name", name), ("flavorPaths", "[flavors]"),
                       ("pythonPath", f"[., {json.dumps(checkout)}]")):
        text, count = re.subn(rf"^(\s+){key}: .*$", rf"\g<1>{key}: {value}", text, count=1,
                              flags=re.M)
        if not count:
            raise AsyaError(f"{path}: no `{key}:` line to set")
    path.write_text(text)


def new_mesh(name: str, *, pattern: str, into: Path | None = None) -> Path:
    """Copy the pattern into ``into/name``, renamed, with its flavors and a test."""
    module = check_name(name)
    patterns = mesh_patterns()
    if pattern not in patterns:
        raise _unknown("pattern", pattern, list(patterns))
    target = _target(name, into)
    shutil.copytree(patterns[pattern], target,
                    ignore=shutil.ignore_patterns(".asya", "__pycache__", "*.pyc"))
    try:
        shutil.copytree(PROJECT / "mesh" / "flavors", target / "flavors")
        _rewrite_mesh_yaml(target / "mesh.yaml", name=name,
                           checkout=os.path.relpath(PROJECT, target.resolve()))
        test = _render((TEMPLATES / "mesh" / "test_mesh.py.tmpl").read_text(),
                       name=name, pattern=pattern)
        (target / f"test_{module}.py").write_text(test)
        with (target / "README.md").open("a") as readme:
            readme.write(f"\n---\nMade by `asya new mesh {name} --from {pattern}`: "
                         f"`pytest {name}/` runs its test.\n")
        load_mesh(target)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target


def new_actor(name: str, *, template: str = "function", into: Path | None = None) -> Path:
    """Write ``into/<name as a package>``: handler, actor.yaml, README, a test."""
    module = check_name(name)
    if importlib.util.find_spec(module) is not None:
        raise AsyaError(f"bad name {name!r}: a module {module!r} is already importable "
                        f"here, and the actor's package would clash with it")
    if template not in ACTOR_TEMPLATES:
        raise _unknown("template", template, list(ACTOR_TEMPLATES))
    spec = ACTOR_TEMPLATES[template]
    target = _target(module, into)
    fields = {"name": name, "module": module, "template": template,
              "Class": "".join(part.capitalize() for part in module.split("_"))}
    source = TEMPLATES / "actor" / template
    files = {"__init__.py": f'"""The {name} actor (asya new actor --template {template})."""\n',
             "actor.yaml": _render((source / "actor.yaml.tmpl").read_text(), **fields),
             "onemesh.py": _render((TEMPLATES / "actor" / "onemesh.py.tmpl").read_text(),
                                   **fields),
             f"test_{module}.py": _render((source / "test.py.tmpl").read_text(), **fields)}
    for file in spec.files:
        files[file] = _render((source / f"{file}.tmpl").read_text(), **fields)
    listing = "\n".join(f"| `{f}` | {_FILE_ROLES.get(f, 'its test')} |" for f in sorted(files))
    files["README.md"] = _render(
        (TEMPLATES / "actor" / "README.md.tmpl").read_text(), **fields,
        summary=spec.summary, handler=_render(spec.handler, **fields), more=spec.more,
        files=listing)
    target.mkdir(parents=True)
    for file, text in files.items():
        (target / file).write_text(text)
    return target


def listing() -> str:
    lines = ["Meshes (asya new mesh NAME --from PATTERN):"]
    for pattern, folder in mesh_patterns().items():
        first = (folder / "README.md").read_text().splitlines()[0].lstrip("# ")
        lines.append(f"  {pattern:<14} {first}")
    lines.append("Actors (asya new actor NAME --template TEMPLATE):")
    lines += [f"  {name:<14} {t.summary}" for name, t in ACTOR_TEMPLATES.items()]
    return "\n".join(lines)


class _NewGroup(click.Group):
    """``asya new --list`` lists; ``asya new mesh|actor ...`` writes."""


@main.group(cls=_NewGroup, invoke_without_command=True)
@click.option("--list", "show", is_flag=True, help="Show the patterns and templates.")
@click.pass_context
def new(ctx: click.Context, show: bool) -> None:
    """Start a mesh from a pattern, or an actor from a template."""
    if show:
        click.echo(listing())
    elif ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


_INTO = click.option("--dir", "into", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Parent folder [current folder]")


@new.command("mesh")
@click.argument("name")
@click.option("--from", "pattern", required=True, help="Pattern to start from (--list)")
@_INTO
def mesh_cmd(name: str, pattern: str, into: Path | None) -> None:
    """Write mesh folder NAME from a pattern, with a test that passes."""
    target = new_mesh(name, pattern=pattern, into=into)
    click.echo(f"wrote {target} (from {pattern}); test it: pytest {target}; "
               f"run it: asya up {target}")


@new.command("actor")
@click.argument("name")
@click.option("--template", default="function", show_default=True,
              help="Template to start from (--list)")
@_INTO
def actor_cmd(name: str, template: str, into: Path | None) -> None:
    """Write actor folder NAME (handler, actor.yaml, README, a test)."""
    target = new_actor(name, template=template, into=into)
    click.echo(f"wrote {target} ({template}); test it: pytest {target}")

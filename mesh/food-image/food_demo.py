"""``asya demo``: the food-image pipeline end to end on this machine, in a minute.

What users came for, with nothing to install beyond the package: no broker (the
embedded transport), no GPU (the ``pillow`` enhancer), no API key (the judge's heuristic
backend; with ``ASYA_LLM_API_KEY`` or ``OPENAI_API_KEY`` set it asks the LLM instead).
The photographs ship inside a dependency: scikit-image's ``coffee`` (public domain), of
which the demo makes degraded variants (dark, cold cast, flat, blurred) so that the
enhancer has work to do and the judge has something to reject; ``--photos DIR`` uses
your own instead.

It runs the real ``mesh/food-image`` folder (where this module lives: the demo knows the
flagship's actors, the library does not) through :class:`~asya_agents.testing.LocalMesh`
(the same runtime code as ``asya up``), with two overrides: the upload goes to the
demo's output folder, and the judge's backend is chosen from the settings. The handlers
are loaded by path, as a replica loads them; nothing here imports ``actors``.
``asya demo`` loads this file by its path and calls :func:`run_demo`.

Outputs, all under ``--out``: the photos before and after, ``accepted/`` (what upload
stored), ``report.html`` and ``contact-sheet.png`` (before/after with the verdicts), and
the mesh state in ``.asya/``, where the photos left for review wait for
``asya review``.
"""

from __future__ import annotations

import html
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.errors import ConfigError
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.settings import Settings

__all__ = ["DemoRow", "default_mesh", "degraded_variants", "prepare_mesh", "run_demo"]

_IMAGE_TYPES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
_HINT = "asya demo needs pillow, numpy and scikit-image: pip install 'asya-agents[demo]'"


@dataclass
class DemoRow:
    """One photo's trip through the mesh."""

    name: str
    note: str
    before: Path
    outcome: str = "running"
    after: Path | None = None
    score: float | None = None
    verdict: str | None = None
    loops: int = 0
    reasons: list[str] = field(default_factory=list)
    history: list[float] = field(default_factory=list)


def default_mesh() -> Path:
    """``mesh/food-image``: the folder this module lives in."""
    return Path(__file__).resolve().parent


# -- photographs ---------------------------------------------------------------------------


def degraded_variants() -> list[tuple[str, str, Any]]:
    """(name, what was done, PIL image): the coffee photograph as shot and spoiled in
    ways a phone camera spoils food photos."""
    try:
        import numpy as np
        from PIL import Image, ImageFilter
        from skimage import data
    except ImportError as exc:
        raise ConfigError(f"{_HINT} ({exc})") from exc
    base = data.coffee()  # type: ignore[no-untyped-call]  # bundled: no download
    arr = base.astype(np.float32)

    def img(a: Any) -> Any:
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    photo = Image.fromarray(base)
    return [
        ("coffee", "as shot", photo),
        ("coffee-dark", "underexposed by 2 stops", img(arr * 0.3)),
        ("coffee-cold", "cold white balance", img(arr * [0.7, 0.9, 1.45] + [0, 5, 35])),
        ("coffee-flat", "low contrast, hazy", img((arr - 128) * 0.4 + 150)),
        ("coffee-soft", "slightly out of focus", photo.filter(ImageFilter.GaussianBlur(1.3))),
        ("coffee-blurred", "badly out of focus", photo.filter(ImageFilter.GaussianBlur(5))),
        ("coffee-dark-blurred", "dark and out of focus",
         img(arr * 0.35).filter(ImageFilter.GaussianBlur(3))),
    ]


def prepare_photos(out: Path, photos: Path | None) -> list[DemoRow]:
    """Write the demo's input photos into ``out/photos``."""
    folder = out / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    if photos is None:
        for name, note, image in degraded_variants():
            path = folder / f"{name}.png"
            image.save(path)
            rows.append(DemoRow(name, note, path))
        return rows
    found = sorted(p for p in photos.iterdir() if p.suffix.lower() in _IMAGE_TYPES)
    if not found:
        raise ConfigError(f"{photos}: no photos ({', '.join(_IMAGE_TYPES)}) in this folder")
    for src in found:
        dst = folder / src.name
        shutil.copyfile(src, dst)
        rows.append(DemoRow(src.stem, "your photo", dst))
    return rows


# -- the mesh ------------------------------------------------------------------------------


def prepare_mesh(mesh: Path, *, out: Path, settings: Settings) -> tuple[LoadedMesh, str]:
    """The food-image mesh with the upload pointed at ``out/accepted`` and the judge's
    backend picked from the settings; returns it and a description of the judge."""
    if not (mesh / "mesh.yaml").is_file():
        raise ConfigError(f"{mesh}: not a mesh folder (no mesh.yaml); pass --mesh "
                          "path/to/mesh/food-image")
    loaded = load_mesh(mesh)
    for name in ("enhance", "judge", "upload"):
        if name not in loaded.actors:
            raise ConfigError(f"{mesh}: the demo needs an actor named {name!r}")
    loaded.actors["upload"].spec.config["output"] = (out / "accepted").resolve().as_uri()
    judge = loaded.actors["judge"].spec.config
    if settings.llm.api_key:
        judge.update(backend="llm", model=judge.get("model") or settings.llm.model,
                     api_key=settings.llm.api_key,
                     api_base=judge.get("api_base") or settings.llm.api_base)
        return loaded, f"LLM judge ({judge['model']})"
    judge["backend"] = "heuristic"
    return loaded, "heuristic judge (image statistics; set OPENAI_API_KEY for an LLM)"


def run_demo(*, out: Path, photos: Path | None = None, mesh: Path | None = None,
             settings: Settings | None = None, timeout: float = 300.0,
             echo: Callable[[str], None] = print) -> list[DemoRow]:
    """Run the demo; return one row per photo (the report is written under ``out``)."""
    from rich.console import Console

    from asya_agents.testing import LocalMesh

    settings = settings or Settings()
    console = Console()
    out = out.resolve()
    state = out / ".asya"
    if state.exists():
        shutil.rmtree(state)  # a fresh mesh each run: the demo's own state only
    rows = prepare_photos(out, photos)
    loaded, judge = prepare_mesh(mesh or default_mesh(), out=out, settings=settings)
    echo(f"food-image mesh: enhance (pillow, CPU) -> {judge} -> upload; "
         f"{len(rows)} photo(s) from {out / 'photos'}")
    with LocalMesh(loaded, state_dir=state) as local:
        ids = {local.send({"image_url": row.before.as_uri(), "photo": row.name}): row
               for row in rows}
        _wait(local, list(ids), timeout, console)
        for env_id, row in ids.items():
            _fill(row, local.store.get(env_id))
    _print_table(rows, console)
    html_path, sheet = write_report(rows, out)
    waiting = sum(1 for r in rows if r.outcome == "review")
    echo(f"report: {html_path}\ncontact sheet: {sheet}")
    if waiting:
        echo(f"{waiting} photo(s) wait for a person: asya review {loaded.path} "
             f"--state-dir {state}")
    return rows


def _wait(local: Any, ids: list[str], timeout: float, console: Any) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    deadline = time.monotonic() + timeout
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("photos through the mesh", total=len(ids))
        while True:
            done = sum(1 for w in local.store.ended_weight(ids).values() if w >= 1 - 1e-9)
            bar.update(task, completed=done)
            if done == len(ids):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - done} photo(s) still in the mesh after "
                                   f"{timeout:.0f}s")
            time.sleep(0.05)


def _fill(row: DemoRow, record: Any) -> None:
    if record is None:
        return
    payload = record.payload if isinstance(record.payload, dict) else {}
    verdict = payload.get("verdict") or {}
    row.outcome = {"succeeded": "accepted", "paused": "review"}.get(record.status, "failed")
    row.score, row.verdict = verdict.get("score"), verdict.get("verdict")
    row.loops = int(payload.get("judge_loops", 0))
    row.reasons = list(verdict.get("reasons", []))
    row.history = [h["score"] for h in payload.get("judge_history", [])]
    if record.error:
        row.reasons = [f"{record.error.get('type', '').rsplit('.', 1)[-1]}: "
                       f"{record.error.get('message', '')}"]
    if payload.get("enhanced_url", "").startswith("file://"):
        from urllib.parse import unquote, urlsplit

        row.after = Path(unquote(urlsplit(payload["enhanced_url"]).path))


def _print_table(rows: list[DemoRow], console: Any) -> None:
    from rich.table import Table

    colours = {"accepted": "green", "review": "yellow", "failed": "red"}
    table = Table(title="verdicts")
    for col in ("photo", "degraded", "scores (per loop)", "verdict", "outcome", "why"):
        table.add_column(col)
    for r in rows:
        scores = " -> ".join(f"{s:.2f}" for s in r.history) or "-"
        table.add_row(r.name, r.note, scores, r.verdict or "-",
                      f"[{colours.get(r.outcome, 'white')}]{r.outcome}[/]",
                      "; ".join(r.reasons)[:80])
    console.print(table)
    counts = {k: sum(1 for r in rows if r.outcome == k) for k in ("accepted", "review",
                                                                   "failed")}
    console.print(", ".join(f"{v} {k}" for k, v in counts.items()))


# -- the report ----------------------------------------------------------------------------


def write_report(rows: list[DemoRow], out: Path) -> tuple[Path, Path]:
    """``report.html`` and ``contact-sheet.png`` in ``out``: before/after per photo."""
    sheet = out / "contact-sheet.png"
    contact_sheet(rows, sheet)
    page = out / "report.html"
    page.write_text(_html(rows, out))
    return page, sheet


def contact_sheet(rows: list[DemoRow], path: Path, *, thumb: int = 280) -> None:
    from PIL import Image, ImageDraw

    label_h, pad = 46, 8
    width = 2 * thumb + 3 * pad
    sheet = Image.new("RGB", (width, len(rows) * (thumb * 2 // 3 + label_h + pad) + pad),
                      "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for row in rows:
        height = 0
        for col, src in enumerate((row.before, row.after)):
            if src is None or not src.exists():
                continue
            with Image.open(src) as img:
                small = img.convert("RGB")
                small.thumbnail((thumb, thumb * 2 // 3))
                sheet.paste(small, (pad + col * (thumb + pad), y))
                height = max(height, small.height)
        height = height or thumb * 2 // 3
        score = f"{row.score:.2f}" if row.score is not None else "-"
        draw.text((pad, y + height + 4), f"{row.name} ({row.note})", fill="black")
        draw.text((pad, y + height + 20),
                  f"{row.outcome.upper()}  verdict {row.verdict or '-'}  score {score}  "
                  f"loops {row.loops}", fill=_COLOURS.get(row.outcome, "black"))
        y += height + label_h + pad
    sheet.crop((0, 0, width, y)).save(path)


_COLOURS = {"accepted": "#1a7f37", "review": "#9a6700", "failed": "#cf222e"}


def _html(rows: list[DemoRow], out: Path) -> str:
    def rel(p: Path | None) -> str:
        if p is None:
            return ""
        try:
            return html.escape(p.resolve().relative_to(out).as_posix())
        except ValueError:
            return html.escape(p.resolve().as_uri())

    body = []
    for r in rows:
        after = f'<img src="{rel(r.after)}">' if r.after else "<em>no result</em>"
        scores = " &rarr; ".join(f"{s:.2f}" for s in r.history) or "-"
        body.append(
            f'<tr><td><img src="{rel(r.before)}"><br>{html.escape(r.name)}<br>'
            f'<small>{html.escape(r.note)}</small></td><td>{after}</td>'
            f'<td><b style="color:{_COLOURS.get(r.outcome, "black")}">{r.outcome}</b><br>'
            f'verdict: {html.escape(r.verdict or "-")}<br>scores: {scores}<br>'
            f'loops: {r.loops}<ul>'
            + "".join(f"<li>{html.escape(x)}</li>" for x in r.reasons) + "</ul></td></tr>")
    return (
        "<!doctype html><meta charset=utf-8><title>asya demo: food photos</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:6px}"
        "img{max-width:360px}</style><h1>food-image mesh: before and after</h1>"
        "<p>enhance &rarr; judge &rarr; upload. Accepted photos were copied to "
        "<code>accepted/</code>; photos marked <b>review</b> wait for a person "
        "(<code>asya review</code>).</p><table><tr><th>before</th><th>after</th>"
        "<th>verdict</th></tr>" + "".join(body) + "</table>")

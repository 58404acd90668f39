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
(the same runtime code as ``asya up``), with three overrides: the upload goes to the
demo's output folder, that folder is added to the mesh's storage roots (the photos,
their enhancements and the accepted copies live there), and the judge's backend is
chosen from the settings. The handlers
are loaded by path, as a replica loads them; nothing here imports ``actors``.
``asya demo`` loads this file by its path and calls :func:`run_demo`.

By default each photo goes along :data:`BEST_OF_ROUTE`: N candidates enhanced, each
judged, the best kept (``candidates=1``: mesh.yaml's single route). While photos wait
for review, ``serve`` keeps the mesh running after the batch (until Ctrl-C), so that a
decision taken in the console goes on, and ``serve_demo`` serves the mesh of an earlier
run; a reviewer's approval ends in ``accepted/`` either way.

Outputs, all under ``--out``: the photos before and after, ``accepted/`` (what upload
stored), ``report.html`` and ``contact-sheet.png`` (before/after with the verdicts and
which candidate won), and the mesh state in ``.asya/``, where the photos left for
review wait for ``asya review``.
"""

from __future__ import annotations

import contextlib
import html
import json
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from asya_agents.errors import ConfigError
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.settings import Settings

__all__ = ["DemoRow", "default_mesh", "degraded_variants", "prepare_mesh", "review_command",
           "run_demo", "serve_command", "serve_demo"]

#: The best-of-N route through the food-image mesh (the single one is mesh.yaml's).
BEST_OF_ROUTE = ["candidates", "enhance", "score", "best", "decide", "upload"]
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
    #: best-of-N: ``payload["best_of"]`` (which candidate won and why), if it ran
    best_of: dict[str, Any] | None = None

    def best_line(self) -> str:
        """Best-of-N in one line: each candidate's score in fan-out order, the kept one
        starred."""
        if not self.best_of:
            return "-"
        won = self.best_of.get("winner")
        return " ".join(f"{'*' if c.get('index') == won else ''}{c.get('score', 0):.2f}"
                        for c in self.best_of.get("candidates", []))


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


def prepare_mesh(mesh: Path, *, out: Path, settings: Settings,
                 candidates: int = 1) -> tuple[LoadedMesh, str]:
    """The food-image mesh with the upload pointed at ``out/accepted``, ``out`` among
    its storage roots and the judge's backend picked from the settings (for ``judge``
    and, best-of-N, ``score``); returns it and a description of the judge.
    ``candidates`` > 1 needs the best-of-N actors (:data:`BEST_OF_ROUTE`)."""
    if not (mesh / "mesh.yaml").is_file():
        raise ConfigError(f"{mesh}: not a mesh folder (no mesh.yaml); pass --mesh "
                          "path/to/mesh/food-image")
    loaded = load_mesh(mesh)
    needed = ["enhance", "judge", "upload"] + (BEST_OF_ROUTE if candidates > 1 else [])
    for name in dict.fromkeys(needed):
        if name not in loaded.actors:
            hint = " (best-of-N; --candidates 1 runs without it)" if candidates > 1 else ""
            raise ConfigError(f"{mesh}: the demo needs an actor named {name!r}{hint}")
    loaded.mesh.spec.storage.roots.append(str(out.resolve()))
    loaded.actors["upload"].spec.config["output"] = (out / "accepted").resolve().as_uri()
    scorers = [loaded.actors[name].spec.config for name in ("judge", "score")
               if name in loaded.actors]
    if settings.llm.api_key:
        for judge in scorers:
            judge.update(backend="llm", model=judge.get("model") or settings.llm.model,
                         api_key=settings.llm.api_key,
                         api_base=judge.get("api_base") or settings.llm.api_base)
        return loaded, f"LLM judge ({scorers[0]['model']})"
    for judge in scorers:
        judge["backend"] = "heuristic"
    return loaded, "heuristic judge (image statistics; set OPENAI_API_KEY for an LLM)"


def run_demo(*, out: Path, photos: Path | None = None, mesh: Path | None = None,
             settings: Settings | None = None, timeout: float = 300.0, serve: bool = False,
             candidates: int = 3, stop: threading.Event | None = None,
             echo: Callable[[str], None] = print) -> list[DemoRow]:
    """Run the demo; return one row per photo (the report is written under ``out``).

    ``candidates``: 1 sends each photo along mesh.yaml's route (enhance, judge,
    upload); more sends it along :data:`BEST_OF_ROUTE`, which enhances that many
    candidates of it, scores each and keeps the best.

    ``serve``: when photos wait for review, keep the mesh running after the batch, so
    that what a reviewer approves goes on to ``accepted/`` (and what is sent back goes
    round again), until Ctrl-C, SIGTERM or ``stop`` is set; the report is rewritten then.
    """
    from asya_agents.testing import LocalMesh

    settings = settings or Settings()
    console = _console()
    out = out.resolve()
    state = out / ".asya"
    if state.exists():
        shutil.rmtree(state)  # a fresh mesh each run: the demo's own state only
    rows = prepare_photos(out, photos)
    mesh = (mesh or default_mesh()).resolve()
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ConfigError(f"candidates must be a whole number >= 1, got {candidates!r}")
    loaded, judge = prepare_mesh(mesh, out=out, settings=settings, candidates=candidates)
    route = BEST_OF_ROUTE if candidates > 1 else None
    extra = {"candidates": candidates} if route else {}
    shape = (f"best of {candidates}: candidates -> enhance (pillow, CPU) -> {judge} each "
             f"-> best -> decide" if route else f"enhance (pillow, CPU) -> {judge}")
    echo(f"food-image mesh: {shape} -> upload; {len(rows)} photo(s) from "
         f"{out / 'photos'}")
    with LocalMesh(loaded, state_dir=state) as local:
        ids = {local.send({"image_url": row.before.as_uri(), "photo": row.name, **extra},
                          route=route): row for row in rows}
        _save_rows(state, ids)
        _wait(local, list(ids), timeout, console)
        for env_id, row in ids.items():
            _fill(row, local.store.get(env_id))
        _print_table(rows, console)
        html_path, sheet = write_report(rows, out)
        echo(f"report: {html_path}\ncontact sheet: {sheet}")
        waiting = sum(1 for r in rows if r.outcome == "review")
        if not waiting:
            return rows
        echo(f"{waiting} photo(s) wait for a person; open them in the review console "
             f"with:\n  {review_command(out, mesh)}")
        if not serve:
            echo(f"nothing serves the mesh now: approved photos go on to accepted/ once "
                 f"it runs again, with:\n  {serve_command(out, mesh)}")
            return rows
        _serve(local, ids, out=out, mesh=mesh, stop=stop, echo=echo, console=console)
    return rows


def serve_demo(*, out: Path, mesh: Path | None = None, settings: Settings | None = None,
               stop: threading.Event | None = None,
               echo: Callable[[str], None] = print) -> list[DemoRow]:
    """Serve the mesh of an earlier ``run_demo`` in ``out`` (its state, nothing reset,
    no photo sent) until Ctrl-C, SIGTERM or ``stop``, so that review decisions go on;
    then rewrite the report. Which envelope is which photo, the run wrote down
    (:data:`ROWS_FILE`)."""
    from asya_agents.testing import LocalMesh

    out = out.resolve()
    state = out / ".asya"
    rows = _load_rows(state)
    mesh = (mesh or default_mesh()).resolve()
    loaded, judge = prepare_mesh(mesh, out=out, settings=settings or Settings())
    echo(f"food-image mesh on {state} ({judge})")
    with LocalMesh(loaded, state_dir=state) as local:
        for env_id, row in rows.items():
            _fill(row, local.store.get(env_id))
        echo(f"{sum(1 for r in rows.values() if r.outcome == 'review')} photo(s) wait for "
             f"a person; open them in the review console with:\n  {review_command(out, mesh)}")
        _serve(local, rows, out=out, mesh=mesh, stop=stop, echo=echo, console=_console())
    return list(rows.values())


def review_command(out: Path, mesh: Path) -> str:
    """The command that opens the demo's photos in the review console (it reads them
    within the mesh's roots, so the demo's folder is added)."""
    return (f"ASYA_BLOB_ROOTS={shlex.quote(str(out))} asya review {shlex.quote(str(mesh))} "
            f"--state-dir {shlex.quote(str(out / '.asya'))}")


def serve_command(out: Path, mesh: Path) -> str:
    """The command that serves the demo's mesh (with the demo's upload folder and
    roots, which ``asya up`` on the bare mesh folder would not have)."""
    extra = "" if mesh == default_mesh() else f" --mesh {shlex.quote(str(mesh))}"
    return f"asya demo --out {shlex.quote(str(out))}{extra} --serve-only"


def _console() -> Any:
    from rich.console import Console

    return Console()


#: Which envelope is which photo, for ``serve_demo`` (in the demo's state folder).
ROWS_FILE = "demo-photos.json"


def _save_rows(state: Path, rows: dict[str, DemoRow]) -> None:
    (state / ROWS_FILE).write_text(json.dumps(
        {env_id: {"name": r.name, "note": r.note, "before": str(r.before)}
         for env_id, r in rows.items()}, indent=1))


def _load_rows(state: Path) -> dict[str, DemoRow]:
    path = state / ROWS_FILE
    try:
        saved = json.loads(path.read_text())
        return {env_id: DemoRow(str(r["name"]), str(r["note"]), Path(r["before"]))
                for env_id, r in saved.items()}
    except FileNotFoundError:
        raise ConfigError(f"{state.parent}: no demo ran here (no {path}); run "
                          f"`asya demo --out {state.parent}` first") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a demo's list of photos ({exc}); run `asya demo "
                          f"--out {state.parent}` again") from exc


def _file(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


def _serve(local: Any, rows: dict[str, DemoRow], *, out: Path, mesh: Path,
           stop: threading.Event | None, echo: Callable[[str], None], console: Any) -> None:
    """Keep ``local`` running until asked to stop; say what each decision led to."""
    stop = stop or threading.Event()
    echo(f"serving the mesh until Ctrl-C: approved photos go on to {out / 'accepted'}, "
         f"sent-back ones round the mesh again (later: {serve_command(out, mesh)})")
    with _stopping_on_signals(stop):
        try:
            while not stop.wait(0.25):
                _changes(local, rows, out, echo)
        except KeyboardInterrupt:
            pass
    _changes(local, rows, out, echo)
    _print_table(list(rows.values()), console)
    html_path, _ = write_report(list(rows.values()), out)
    echo(f"stopped serving; report: {html_path}")


def _changes(local: Any, rows: dict[str, DemoRow], out: Path,
             echo: Callable[[str], None]) -> None:
    """Refresh each row from its record and say where the ones that moved went."""
    for env_id, row in rows.items():
        record = local.store.get(env_id)
        if record is None:  # a decision reopened it: it runs again
            if row.outcome != "running":
                row.outcome = "running"
                echo(f"{row.name}: decided in review, on its way")
            continue
        before = row.outcome
        _fill(row, record)
        if row.outcome == before:
            continue
        if row.outcome == "accepted":
            uploaded = record.payload.get("uploaded_url", "") \
                if isinstance(record.payload, dict) else ""
            where = _file(uploaded) if uploaded.startswith("file://") else uploaded
            echo(f"{row.name}: accepted -> {where}")
        elif row.outcome == "review":
            echo(f"{row.name}: waits for review again ({'; '.join(row.reasons)[:100]})")
        else:
            echo(f"{row.name}: {row.outcome} ({'; '.join(row.reasons)[:100]})")


@contextlib.contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` while serving (in the main thread; elsewhere the
    caller's ``stop`` is the only way out), so the mesh drains before the demo ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, lambda *_: stop.set())
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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
    best = payload.get("best_of")
    row.best_of = best if isinstance(best, dict) else None
    if record.error:
        row.reasons = [f"{record.error.get('type', '').rsplit('.', 1)[-1]}: "
                       f"{record.error.get('message', '')}"]
    if payload.get("enhanced_url", "").startswith("file://"):
        row.after = _file(payload["enhanced_url"])


def _print_table(rows: list[DemoRow], console: Any) -> None:
    from rich.table import Table

    colours = {"accepted": "green", "review": "yellow", "failed": "red"}
    table = Table(title="verdicts")
    best_of = any(r.best_of for r in rows)
    for col in ("photo", "degraded", *(["candidates (*: kept)"] if best_of else []),
                "scores (per loop)", "verdict", "outcome", "why"):
        table.add_column(col)
    for r in rows:
        scores = " -> ".join(f"{s:.2f}" for s in r.history) or "-"
        table.add_row(r.name, r.note, *([r.best_line()] if best_of else []), scores,
                      r.verdict or "-", f"[{colours.get(r.outcome, 'white')}]{r.outcome}[/]",
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


def contact_sheet(rows: list[DemoRow], path: Path, *, thumb: int = 320) -> None:
    """One row per photo: before, after, and the verdict beside them in words (the
    outcome in its colour, the score per loop, the top reasons), in a real font."""
    from PIL import Image, ImageDraw

    fonts = _fonts()
    pad, panel = 12, 380
    width = 2 * thumb + panel + 4 * pad
    blocks = [_row_block(row, fonts, thumb=thumb, panel=panel, pad=pad) for row in rows]
    sheet = Image.new("RGB", (width, sum(b.height for b in blocks) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y = pad
    for block in blocks:
        sheet.paste(block, (0, y))
        y += block.height
        draw.line([(pad, y - pad // 2), (width - pad, y - pad // 2)], fill="#d0d7de")
    sheet.save(path)


def _fonts() -> dict[str, Any]:
    """DejaVu Sans (matplotlib ships it) when installed, else Pillow's own scalable font
    (Pillow >= 10.1), else its bitmap font: title, body and caption sizes."""
    import importlib.util

    from PIL import ImageFont

    spec = importlib.util.find_spec("matplotlib")
    folder = (Path(next(iter(spec.submodule_search_locations or [])), "mpl-data", "fonts",
                   "ttf") if spec else None)
    sizes = {"title": 19, "body": 15, "caption": 13}
    if folder and (folder / "DejaVuSans.ttf").is_file():
        bold = folder / "DejaVuSans-Bold.ttf"
        return {name: ImageFont.truetype(str(bold if name == "title" and bold.is_file()
                                             else folder / "DejaVuSans.ttf"), size)
                for name, size in sizes.items()}
    try:
        return {name: ImageFont.load_default(size=size) for name, size in sizes.items()}
    except TypeError:  # Pillow < 10.1: one bitmap size
        return dict.fromkeys(sizes, ImageFont.load_default())


def _wrap(draw: Any, text: str, font: Any, width: int) -> list[str]:
    """``text`` in lines no wider than ``width`` pixels, broken between words."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _row_block(row: DemoRow, fonts: dict[str, Any], *, thumb: int, panel: int,
               pad: int) -> Any:
    from PIL import Image, ImageDraw

    scores = " -> ".join(f"{v:.2f}" for v in row.history) or "-"
    loops = f", {row.loops} loop(s) back to enhance" if row.loops else ""
    lines: list[tuple[str, str, str]] = [  # (text, font, colour)
        (row.name, "title", "#1f2328"), (row.note, "body", "#57606a"),
        (f"{row.outcome.upper()}  (verdict {row.verdict or '-'})", "title",
         _COLOURS.get(row.outcome, "#1f2328")),
        (f"score {scores}{loops}", "body", "#1f2328")]
    if row.best_of and row.best_of.get("why"):
        lines.append((f"kept: {row.best_of['why']}", "body", "#0969da"))
    lines += [(f"- {reason}", "body", "#1f2328") for reason in row.reasons[:3]]
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text: list[tuple[str, str, str]] = []
    for line, font, colour in lines:
        text += [(part, font, colour)
                 for part in _wrap(scratch, line, fonts[font], panel - pad) or [""]]
    heights = [int(fonts[f].size * 1.35) if hasattr(fonts[f], "size") else 14
               for _, f, _ in text]
    caption = int(getattr(fonts["caption"], "size", 11) * 1.5)
    photo_h = thumb * 2 // 3
    block = Image.new("RGB", (2 * thumb + panel + 4 * pad,
                              max(photo_h + caption, sum(heights) + 4) + pad), "white")
    draw = ImageDraw.Draw(block)
    for col, (label, src) in enumerate((("before", row.before), ("after", row.after))):
        x = pad + col * (thumb + pad)
        draw.text((x, 0), label if src else f"{label}: no result", font=fonts["caption"],
                  fill="#57606a")
        if src is not None and src.exists():
            with Image.open(src) as img:
                small = img.convert("RGB")
                small.thumbnail((thumb, photo_h))
                block.paste(small, (x, caption))
    y, x = 0, 2 * thumb + 3 * pad
    for (part, font, colour), height in zip(text, heights, strict=True):
        draw.text((x, y), part, font=fonts[font], fill=colour)
        y += height
    return block


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
            f'loops: {r.loops}'
            + (f'<br>kept: {html.escape(str(r.best_of.get("why")))}' if r.best_of else "")
            + '<ul>'
            + "".join(f"<li>{html.escape(x)}</li>" for x in r.reasons) + "</ul></td></tr>")
    return (
        "<!doctype html><meta charset=utf-8><title>asya demo: food photos</title>"
        "<style>body{font-family:sans-serif;margin:2em}td{vertical-align:top;padding:6px}"
        "img{max-width:360px}</style><h1>food-image mesh: before and after</h1>"
        "<p>enhance &rarr; judge &rarr; upload. Accepted photos were copied to "
        "<code>accepted/</code>; photos marked <b>review</b> wait for a person "
        "(<code>asya review</code>).</p><table><tr><th>before</th><th>after</th>"
        "<th>verdict</th></tr>" + "".join(body) + "</table>")

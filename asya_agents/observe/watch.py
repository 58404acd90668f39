"""``asya status MESH --watch``: a live view of the mesh, refreshing in place.

Each refresh takes the mesh's status snapshot (:mod:`asya_agents.status`: queues,
replicas and their ``/metrics`` URLs, the result store's totals) and every replica's
counters; throughput and errors per actor are rates between two samples (see
:class:`~asya_agents.observe.scrape.Rates`), so the first refresh shows none. With
``--json`` each refresh is one JSON object on its own line, for scripts. Below the
table, the history the supervisor keeps (:mod:`asya_agents.observe.history`) as one
line of sparklines per actor, full from the first refresh however long ago the view
was opened. Plain ``asya status`` prints the same table without the rates
(:func:`status_table`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asya_agents.observe.history import Point, series, sparkline
from asya_agents.observe.scrape import Rates, Samples, scrape, total

__all__ = ["SPARK_SAMPLES", "Watcher", "history_table", "render", "sparklines", "status_table",
           "watch"]

_SUCCEEDED = "asya_envelopes_succeeded_total"
#: Samples of the history a sparkline shows (a minute at the supervisor's pace).
SPARK_SAMPLES = 30
_FAILED = "asya_envelopes_failed_total"


@dataclass
class Watcher:
    """Takes samples of one mesh and turns them into reports with rates."""

    #: Takes a status snapshot (``asya status --json``'s object).
    snapshot: Callable[[], Awaitable[dict[str, Any]]]
    clock: Callable[[], float] = time.monotonic
    scrape: Callable[[str], Samples | None] = field(default=lambda url: scrape(url, timeout=1.0))
    #: Reads the supervisor's history ring (:func:`~asya_agents.observe.history.read_history`).
    history: Callable[[], list[dict[str, Any]]] = list
    #: Samples a sparkline shows, the latest last.
    width: int = SPARK_SAMPLES
    _rates: Rates = field(default_factory=Rates)
    _known: dict[Any, float] = field(default_factory=dict)

    async def report(self) -> dict[str, Any]:
        """One refresh: the snapshot, plus per actor ``throughput`` and ``errors`` (per
        second, ``None`` until a second sample) and the store's ``rates``."""
        report = await self.snapshot()
        rows: dict[str, dict[str, Any]] = report["actors"]
        counters = await self._counters(rows)
        totals = report["totals"]
        ended: dict[Any, float] = {("store", "succeeded"): float(totals["succeeded"]),
                                   ("store", "failed"): float(totals["failed"])}
        rates = self._rates.update(self.clock(), {**counters, **ended})
        for name, row in rows.items():
            row["throughput"] = _sum(rates, name, _SUCCEEDED)
            row["errors"] = _sum(rates, name, _FAILED)
        report["rates"] = {"succeeded": rates.get(("store", "succeeded")),
                           "failed": rates.get(("store", "failed"))}
        report["history"] = sparklines(self.history(), width=self.width)
        return report

    async def _counters(self, rows: dict[str, dict[str, Any]]) -> dict[Any, float]:
        urls = [(name, url) for name, row in rows.items() for url in row["metrics"]]
        found = await asyncio.gather(*(asyncio.to_thread(self.scrape, url) for _, url in urls))
        counters: dict[Any, float] = {}
        for (name, url), samples in zip(urls, found, strict=True):
            for metric in (_SUCCEEDED, _FAILED):
                key = (name, url, metric)
                if samples is not None:
                    counters[key] = _actor_total(samples, metric, name)
                elif key in self._known:  # a scrape that timed out: no news, not a reset
                    counters[key] = self._known[key]
        self._known = counters
        return counters


def _actor_total(samples: Samples, metric: str, actor: str) -> float:
    return total(samples, metric).get(actor, 0.0)


def _sum(rates: dict[Any, float], actor: str, metric: str) -> float | None:
    picked = [v for k, v in rates.items() if k[0] == actor and k[-1] == metric]
    return float(sum(picked)) if picked or rates else None


#: What a sparkline shows per actor: the heading, and the value of a point.
_SPARKS: dict[str, Callable[[Point], float | None]] = {
    "depth": lambda p: p.depth, "in flight": lambda p: p.in_flight,
    "replicas": lambda p: p.replicas, "done/s": lambda p: p.succeeded_per_s,
    "errors/s": lambda p: p.failed_per_s,
}


def sparklines(samples: list[dict[str, Any]], *, width: int) -> dict[str, Any]:
    """The last ``width`` samples of the history as sparklines: ``samples`` and
    ``seconds`` (how many, and how much time they span) and per actor, per quantity,
    the ``line`` and its ``latest`` and ``max`` values (``None`` while nothing is known;
    a rate needs the sample before, so one more sample is read than is shown)."""
    tail = samples[-width:]
    points = {(p.actor, p.at): p for p in series(samples[-width - 1:])}
    names = list(dict.fromkeys(name for s in tail for name in s["actors"]))
    actors = {}
    for name in names:
        row = [points.get((name, s["at"])) for s in tail]
        actors[name] = {key: _spark([None if p is None else get(p) for p in row], width)
                        for key, get in _SPARKS.items()}
    seconds = tail[-1]["at"] - tail[0]["at"] if len(tail) > 1 else 0.0
    return {"samples": len(tail), "seconds": round(seconds, 1), "actors": actors}


def _spark(values: list[float | None], width: int) -> dict[str, Any]:
    known = [v for v in values if v is not None]
    return {"line": sparkline(values, width=width),
            "latest": values[-1] if values else None,
            "max": max(known) if known else None}


def status_table(report: dict[str, Any]) -> Any:
    """A rich renderable of a status snapshot: the plain ``asya status`` view."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_title(report))
    for col in ("actor", "depth", "in flight", "delayed", "replicas", "restarts"):
        table.add_column(col, justify="left" if col == "actor" else "right")
    for name, row in report["actors"].items():
        looping = row.get("crash_looping", False)
        table.add_row(name, str(row["depth"]), str(row["in_flight"]), str(row["delayed"]),
                      Text(f"{row['replicas']} crash-looping" if looping else
                           str(row["replicas"]), style="red" if looping else ""),
                      str(row.get("restarts", 0)))
    lines = [Text(", ".join(f"{k} {v}" for k, v in report["totals"].items()))]
    lines += [_crash_line(name, row) for name, row in report["actors"].items()
              if row.get("crash_looping")]
    lines += [Text(f"{name}: rate limit {row['rate_limit']}", style="yellow")
              for name, row in report["actors"].items() if row.get("rate_limit")]
    lines += [_groups_line(name, groups) for name, groups in report.get("fan_in", {}).items()]
    return Group(table, *lines)


def _groups_line(name: str, groups: dict[str, Any]) -> Any:
    """A fanIn actor's open groups: how many, the oldest's age, the oldest few."""
    from rich.text import Text

    oldest = ", ".join(f"{g['group']} ({g['members']} in, {g['received']}, {g['age']:.0f}s)"
                       for g in groups.get("groups", [])[:3])
    return Text(f"{name}: {groups['open']} open group(s), oldest {groups['oldest_age']:.0f}s"
                f"{': ' + oldest if oldest else ''}")


def _crash_line(name: str, row: dict[str, Any]) -> Any:
    """What kills a crash-looping actor's replicas, and when the next one starts."""
    from rich.text import Text

    wait = row.get("next_restart_in")
    when = f", next start in {wait:g}s" if wait else ""
    return Text(f"{name} is crash-looping ({row.get('restarts', 0)} restarts{when}): "
                f"{row.get('last_error') or 'no error recorded'}", style="red")


def render(report: dict[str, Any]) -> Any:
    """A rich renderable of one :meth:`Watcher.report`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    table = Table(title=_title(report))
    for col in ("actor", "depth", "in flight", "delayed", "replicas", "done/s", "errors/s"):
        table.add_column(col, justify="left" if col == "actor" else "right")
    for name, row in report["actors"].items():
        errors = row["errors"]
        table.add_row(name, str(row["depth"]), str(row["in_flight"]), str(row["delayed"]),
                      str(row["replicas"]), _rate(row["throughput"]),
                      Text(_rate(errors), style="red" if errors else ""))
    totals, rates = report["totals"], report["rates"]
    line = (f"succeeded {totals['succeeded']} ({_rate(rates['succeeded'])}/s), "
            f"failed {totals['failed']} ({_rate(rates['failed'])}/s), "
            f"paused {totals['paused']}, duplicates {totals['duplicates']}")
    return Group(table, Text(line), history_table(report.get("history")))


def history_table(history: dict[str, Any] | None) -> Any:
    """The sparklines of :func:`sparklines`: per actor one line per quantity, with its
    latest and largest values (a line is scaled to the largest)."""
    from rich.table import Table
    from rich.text import Text

    if not history or not history["actors"]:
        return Text("no history yet: `asya up` records a sample every few seconds",
                    style="dim")
    table = Table(title=f"history: the last {history['seconds']:g} s "
                        f"({history['samples']} samples)", title_justify="left")
    for col in ("actor", "", "over time", "now", "max"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("now", "max")
                         else "left")
    for name, sparks in history["actors"].items():
        for i, key in enumerate(_SPARKS):
            spark = sparks[key]
            table.add_row(name if i == 0 else "", key, spark["line"],
                          _value(key, spark["latest"]), _value(key, spark["max"]),
                          end_section=i == len(_SPARKS) - 1)
    return table


def _value(key: str, value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if key.endswith("/s") else f"{value:g}"


def _title(report: dict[str, Any]) -> str:
    return (f"mesh {report['mesh']} ({report['transport']})"
            + ("" if report["running"] else " — supervisor not running"))


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


async def watch(watcher: Watcher, *, interval: float, count: int | None, as_json: bool,
                echo: Callable[[str], None]) -> None:
    """Refresh every ``interval`` seconds, ``count`` times (forever when ``None``)."""
    from rich.live import Live

    done = 0
    live = None if as_json else Live(auto_refresh=False)
    try:
        if live is not None:
            live.start()
        while count is None or done < count:
            report = await watcher.report()
            if live is None:
                echo(json.dumps(report))
            else:
                live.update(render(report), refresh=True)
            done += 1
            if count is None or done < count:
                await asyncio.sleep(interval)
    finally:
        if live is not None:
            live.stop()

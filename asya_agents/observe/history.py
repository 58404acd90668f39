"""The mesh's recent past: a bounded ring of samples the local supervisor keeps.

A live view that samples only while it is open starts empty and forgets what happened
before. So the supervisor (``asya up``) takes a sample every :data:`INTERVAL` seconds
and keeps the last hour of them, at most :data:`KEEP`, in ``history.jsonl`` in the
mesh's state folder; the console's charts and ``asya status --watch``'s sparklines read that
file, show the past at once, and need no supervisor to read it (the file stays when
it stops, and a supervisor started again goes on from it).

A sample holds, per actor, what the supervisor knows (queue ``depth``, ``in_flight``,
``replicas``, ``desired``) and the hops its replicas counted on their ``/metrics``
(``succeeded``, ``failed``); and the result store's totals of ended envelopes. Counts
are stored as counters, never as rates: :func:`series` turns two successive samples of
one supervisor run into per-second rates, so a reader chooses its own resolution and a
restart (whose counters start again from zero) breaks the line instead of inventing a
spike. The file is JSON Lines (a header, then one sample a line, oldest first), so that
a reader that wants the last minute parses only that; it is replaced atomically on
every write (each sample is encoded once), and a reader never sees half a ring.

:class:`Recorder` is the supervisor's side: it scrapes the replicas in threads, off the
supervisor's loop, one sample at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asya_agents.observe.scrape import Samples, scrape, total

__all__ = [
    "HISTORY_FILE",
    "INTERVAL",
    "KEEP",
    "MAX_AGE",
    "Counters",
    "Point",
    "Recorder",
    "Ring",
    "read_history",
    "series",
    "sparkline",
    "thinned",
    "totals_series",
]

log = logging.getLogger("asya.history")

HISTORY_FILE = "history.jsonl"
#: Seconds between two samples.
INTERVAL = 2.0
#: Samples kept at most (an hour at :data:`INTERVAL`).
KEEP = 1800
#: Samples older than this many seconds are dropped.
MAX_AGE = 3600.0
_VERSION = 1
_SUCCEEDED = "asya_envelopes_succeeded_total"
_FAILED = "asya_envelopes_failed_total"
_COUNTS = ("depth", "in_flight", "replicas", "desired")


def read_history(state_dir: Path, *, now: float | None = None, max_age: float = MAX_AGE,
                 last: int | None = None) -> list[dict[str, Any]]:
    """The samples in ``state_dir``'s ring, oldest first; ``[]`` when there is no ring
    (no supervisor ever ran there) or it cannot be read. Samples older than
    ``max_age`` seconds before ``now`` are left out; with ``last``, only the last
    ``last`` samples are parsed (what a sparkline needs, not the hour)."""
    try:
        lines = (state_dir / HISTORY_FILE).read_text().splitlines()
    except OSError:
        return []
    if not lines or _header(lines[0]) is None:
        return []
    body = lines[1:] if last is None else lines[1:][-last:]
    samples = [s for s in map(_parse, body) if s is not None]
    if now is not None:
        samples = [s for s in samples if now - s["at"] <= max_age]
    return samples


def thinned(samples: list[dict[str, Any]], *, most: int) -> list[dict[str, Any]]:
    """At most about ``most`` of ``samples``, evenly spaced, the latest always kept: the
    counters make the rates between the kept ones the averages over what was left
    out, so a chart of an hour stays light."""
    step = -(-len(samples) // most) if most > 0 else 1
    if step <= 1:
        return samples
    return samples[::-1][::step][::-1]


def _header(line: str) -> dict[str, Any] | None:
    try:
        head = json.loads(line)
    except ValueError:
        return None
    return head if isinstance(head, dict) and head.get("version") == _VERSION else None


def _parse(line: str) -> dict[str, Any] | None:
    try:
        sample = json.loads(line)
    except ValueError:
        return None
    return sample if _valid(sample) else None


def _valid(sample: Any) -> bool:
    return isinstance(sample, dict) and isinstance(sample.get("at"), int | float) and \
        isinstance(sample.get("actors"), dict)


class Ring:
    """The ring as its one writer keeps it: the samples in memory, each with its line
    of JSON (encoded once), and the file replaced after each :meth:`add`. It starts
    from the file it finds, so a restarted supervisor keeps the history of the one
    before."""

    def __init__(self, state_dir: Path, *, keep: int = KEEP, max_age: float = MAX_AGE,
                 interval: float = INTERVAL) -> None:
        if keep < 2:
            raise ValueError(f"a history ring keeps at least 2 samples, not {keep}")
        self.path = state_dir / HISTORY_FILE
        self.keep, self.max_age, self.interval = keep, max_age, interval
        self._lines: deque[tuple[float, str]] = deque(
            ((s["at"], _encode(s)) for s in read_history(state_dir)), maxlen=keep)

    @property
    def samples(self) -> list[dict[str, Any]]:
        return [json.loads(line) for _, line in self._lines]

    def add(self, sample: dict[str, Any]) -> None:
        """Append ``sample`` (its ``at`` in seconds since the epoch), drop what is past
        :attr:`keep` samples or :attr:`max_age` seconds, and write the file."""
        if not _valid(sample):
            raise ValueError(f"a history sample needs 'at' and 'actors': {sample!r}")
        self._lines.append((float(sample["at"]), _encode(sample)))
        oldest = sample["at"] - self.max_age
        while self._lines[0][0] < oldest:
            self._lines.popleft()
        self.write()

    def write(self) -> None:
        """Replace the file atomically: a reader sees the old ring or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        head = json.dumps({"version": _VERSION, "interval": self.interval})
        tmp.write_text("\n".join([head, *(line for _, line in self._lines)]) + "\n")
        tmp.replace(self.path)


def _encode(sample: dict[str, Any]) -> str:
    return json.dumps(sample, separators=(",", ":"))


@dataclass
class Counters:
    """Hops counted per actor across its replicas, which come and go: each replica's
    counter is followed per URL, and only what it added since the last scrape is
    added, so the per-actor count never goes down while this supervisor runs. A URL
    seen for the first time, or whose counter went down (a new replica on a reused
    port), counts from zero; a URL that did not answer is no news."""

    _last: dict[tuple[str, str, str], float] = field(default_factory=dict)
    totals: dict[tuple[str, str], float] = field(default_factory=dict)

    def update(self, actor: str, url: str, samples: Samples | None) -> None:
        if samples is None:
            return
        for metric in (_SUCCEEDED, _FAILED):
            value = total(samples, metric).get(actor, 0.0)
            before = self._last.get((actor, url, metric), 0.0)
            added = value - before if value >= before else value
            self._last[(actor, url, metric)] = value
            key = (actor, metric)
            self.totals[key] = self.totals.get(key, 0.0) + added

    def of(self, actor: str) -> dict[str, float]:
        return {"succeeded": self.totals.get((actor, _SUCCEEDED), 0.0),
                "failed": self.totals.get((actor, _FAILED), 0.0)}


class Recorder:
    """The supervisor's side of the ring: :meth:`tick` every turn of its loop; every
    :attr:`interval` seconds it starts a sample in the background (scraping replicas
    and writing the file in threads, so that a slow replica never delays scaling)."""

    def __init__(self, state_dir: Path, *, totals: Callable[[], Mapping[str, int]] | None = None,
                 interval: float = INTERVAL, keep: int = KEEP, max_age: float = MAX_AGE,
                 scrape: Callable[[str], Samples | None] = lambda u: scrape(u, timeout=1.0),
                 clock: Callable[[], float] = time.time) -> None:
        self.ring = Ring(state_dir, keep=keep, max_age=max_age, interval=interval)
        self.totals, self.interval, self.scrape, self.clock = totals, interval, scrape, clock
        self.counters = Counters()
        self.run_id = clock()  # which supervisor run a sample belongs to
        self._next = 0.0
        self._task: asyncio.Task[None] | None = None

    def tick(self, status: Callable[[], dict[str, Any]]) -> None:
        """Start a sample of ``status()`` (the supervisor's status.json object) when one
        is due and none is still being taken."""
        now = self.clock()
        if now < self._next or (self._task is not None and not self._task.done()):
            return
        self._next = now + self.interval
        self._task = asyncio.ensure_future(self.record(status()))

    async def record(self, status: dict[str, Any]) -> None:
        """Take one sample of ``status`` and write the ring; a failure is logged, never
        raised (the history is for people, the supervisor goes on without it)."""
        try:
            sample = await self.sample(status)
            await asyncio.to_thread(self.ring.add, sample)
        except Exception as exc:
            log.warning("no history sample: %s", exc)

    async def sample(self, status: dict[str, Any]) -> dict[str, Any]:
        actors: dict[str, dict[str, Any]] = status.get("actors", {})
        urls = [(name, url) for name, row in actors.items() for url in row.get("metrics", [])]
        found = await asyncio.gather(*(asyncio.to_thread(self.scrape, u) for _, u in urls))
        for (name, url), samples in zip(urls, found, strict=True):
            self.counters.update(name, url, samples)
        rows = {name: {**{k: int(row.get(k, 0)) for k in _COUNTS}, **self.counters.of(name)}
                for name, row in actors.items()}
        totals = dict(await asyncio.to_thread(self.totals)) if self.totals else None
        return {"at": float(status.get("updated", self.clock())), "run": self.run_id,
                "actors": rows, "totals": totals}

    async def aclose(self) -> None:
        """Wait for a sample being taken (the supervisor is stopping)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


@dataclass(frozen=True)
class Point:
    """One actor at one sample: the counts, and the rates since the sample before
    (``None`` at the first sample of a supervisor run)."""

    at: float
    actor: str
    depth: int
    in_flight: int
    replicas: int
    succeeded_per_s: float | None
    failed_per_s: float | None


def series(samples: list[dict[str, Any]]) -> list[Point]:
    """Every actor's :class:`Point` per sample, in sample order."""
    out: list[Point] = []
    before: dict[str, Any] | None = None
    for sample in samples:
        same_run = before is not None and before.get("run") == sample.get("run") and \
            sample["at"] > before["at"]
        for actor, row in sample["actors"].items():
            prev = before["actors"].get(actor) if same_run and before else None
            dt = sample["at"] - before["at"] if same_run and before else 0.0
            out.append(Point(sample["at"], actor, int(row.get("depth", 0)),
                             int(row.get("in_flight", 0)), int(row.get("replicas", 0)),
                             _rate(prev, row, "succeeded", dt),
                             _rate(prev, row, "failed", dt)))
        before = sample
    return out


def totals_series(samples: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Ended envelopes per second (``succeeded/s``, ``failed/s``) and the error rate
    between successive samples of one run that both hold the result store's totals."""
    out: list[dict[str, float]] = []
    for a, b in itertools.pairwise(samples):
        ta, tb, dt = a.get("totals"), b.get("totals"), b["at"] - a["at"]
        if not ta or not tb or a.get("run") != b.get("run") or dt <= 0:
            continue
        ok = max(tb["succeeded"] - ta["succeeded"], 0)
        bad = max(tb["failed"] - ta["failed"], 0)
        out.append({"at": b["at"], "succeeded/s": ok / dt, "failed/s": bad / dt,
                    "error rate": bad / (ok + bad) if ok + bad else 0.0})
    return out


def _rate(prev: Mapping[str, Any] | None, row: Mapping[str, Any], key: str,
          dt: float) -> float | None:
    if prev is None or dt <= 0 or key not in row or key not in prev:
        return None
    now, then = float(row[key]), float(prev[key])
    return (now - then if now >= then else now) / dt


_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float | None], *, width: int = 30) -> str:
    """The last ``width`` values as unicode blocks, scaled from zero to their largest
    (all zero is a flat bottom line); a missing value is a space."""
    tail = list(values)[-width:]
    top = max((v for v in tail if v is not None), default=0.0)
    return "".join(" " if v is None else
                   _BLOCKS[round(max(v, 0.0) / top * (len(_BLOCKS) - 1)) if top > 0 else 0]
                   for v in tail)

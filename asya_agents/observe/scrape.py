"""Reading ``/metrics`` back: a small parser of the Prometheus text format and rates.

``asya status --watch`` scrapes every replica the supervisor lists and turns successive
samples of the counters into rates per actor. Replicas come and go (scaling to zero),
so a counter is followed per URL: one that is new since the last sample, or that went
down (a restarted replica on a reused port), counts from zero. No dependency: the CLI
may run where prometheus-client is not installed.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Hashable, Mapping

__all__ = ["Rates", "Samples", "parse_metrics", "scrape", "total"]

#: (metric name, sorted label pairs) -> value
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> Samples:
    """Every sample of a Prometheus text exposition; comments and bad lines skipped."""
    out: Samples = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        try:
            value = float(match[3])
        except ValueError:
            continue
        labels = tuple(sorted((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                              for k, v in _LABEL.findall(match[2] or "")))
        out[(match[1], labels)] = value
    return out


def scrape(url: str, *, timeout: float = 2.0) -> Samples | None:
    """The samples at ``url``, or ``None`` when it does not answer (a replica that has
    just stopped is not an error for a live view)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return parse_metrics(resp.read().decode("utf-8", errors="replace"))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def total(samples: Samples, name: str, **match: str) -> dict[str, float]:
    """Sum of ``name`` per ``actor`` label over samples whose labels include ``match``."""
    sums: dict[str, float] = {}
    for (metric, labels), value in samples.items():
        if metric != name:
            continue
        named = dict(labels)
        if all(named.get(k) == v for k, v in match.items()):
            actor = named.get("actor", "")
            sums[actor] = sums.get(actor, 0.0) + value
    return sums


class Rates:
    """Per-second rates of counters between successive samples (time injected)."""

    def __init__(self) -> None:
        self._last: dict[Hashable, float] = {}
        self._at: float | None = None

    def update(self, now: float, counters: Mapping[Hashable, float]) -> dict[Hashable, float]:
        """Rates since the previous call; empty on the first call. A key absent from
        the previous sample, or whose value went down, is a counter that started from
        zero in between."""
        last, at = self._last, self._at
        self._last, self._at = dict(counters), now
        if at is None or now <= at:
            return {}
        elapsed = now - at
        rates = {}
        for key, value in counters.items():
            before = last.get(key, 0.0)
            rates[key] = (value - before if value >= before else value) / elapsed
        return rates

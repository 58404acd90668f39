"""Marks in the state folder about an actor's rate limit, for the supervisor and status.

:class:`ThrottleMarks` say "this actor is rate-limited". Adding replicas to an actor that
is held back by its rate limit or by 429s only adds processes that wait for the same
tokens (or earn more 429s). Replicas write the time until which their actor counts as
rate-limited into ``<state>/throttle/<actor>``; the supervisor, which shares the state
folder, reads it and asks the autoscaler to hold. One small file per actor, replaced
atomically; a replica writes it at most once a second, so the cost is nothing next to
the calls it throttles.

:class:`OutageMarks` say "this actor's shared rate-limit store is unreachable": one file
per replica (``<state>/ratelimit/<actor>/<replica>``, JSON with ``since``, ``error`` and
``updated``), rewritten on every failed try of the store and removed when it answers,
so that ``asya status`` shows the outage. A mark not rewritten for :data:`FRESH_FOR`
seconds is a dead replica's and is ignored.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FRESH_FOR", "Outage", "OutageMarks", "ThrottleMarks"]

#: Seconds an outage mark counts after its replica last rewrote it.
FRESH_FOR = 60.0


class ThrottleMarks:
    def __init__(self, state_dir: Path) -> None:
        self.folder = state_dir / "throttle"

    def mark(self, actor: str, until: float) -> None:
        """Record that ``actor`` is rate-limited until ``until`` (epoch seconds)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{actor}.{os.getpid()}"
        tmp.write_text(f"{until:.3f}")
        tmp.replace(self.folder / actor)

    def until(self, actor: str) -> float:
        """Epoch seconds until which ``actor`` counts as rate-limited (0: never was)."""
        with contextlib.suppress(OSError, ValueError):
            return float((self.folder / actor).read_text())
        return 0.0

    def limited(self, actor: str, *, now: float) -> bool:
        return self.until(actor) > now


@dataclass(frozen=True)
class Outage:
    """Since when (epoch seconds) an actor's rate-limit store is unreachable, and why."""

    since: float
    error: str

    def describe(self) -> str:
        """What ``asya status`` shows: ``store unreachable since <UTC time>: <error>``."""
        when = datetime.datetime.fromtimestamp(self.since, datetime.UTC)
        return f"store unreachable since {when.isoformat(timespec='seconds')}: {self.error}"


class OutageMarks:
    """The outage marks of one replica (``replica``: this host and process)."""

    def __init__(self, state_dir: Path, *, replica: str | None = None) -> None:
        self.folder = state_dir / "ratelimit"
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}"

    def mark(self, actor: str, *, since: float, error: str, now: float) -> None:
        """Record (again) that ``actor``'s store has failed since ``since``."""
        folder = self.folder / actor
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{self.replica}.tmp"
        tmp.write_text(json.dumps({"since": since, "error": error, "updated": now}))
        tmp.replace(folder / self.replica)

    def clear(self, actor: str) -> None:
        """This replica reaches the store again."""
        with contextlib.suppress(OSError):
            (self.folder / actor / self.replica).unlink()

    def read(self, actor: str, *, now: float) -> Outage | None:
        """The earliest outage any live replica of ``actor`` reports, if any."""
        found = []
        for path in sorted((self.folder / actor).glob("[!.]*")):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                data = json.loads(path.read_text())
                if now - float(data["updated"]) < FRESH_FOR:
                    found.append(Outage(float(data["since"]), str(data["error"])))
        return min(found, key=lambda o: o.since) if found else None

"""When the local supervisor restarts a dead replica: at once, or after a growing backoff.

A replica that dies after it *got going* (its handler loaded: a poison message killed
it, its sync handler overran its timeout, the OOM killer took it mid-batch) is replaced
at once. The messages it held come back, and the delivery limit
(``resiliency.maxDeliveries``) counts the deaths a poison message causes until it ends
that message at ``error-end``, which needs prompt restarts to get there.

A replica that dies before it got going (its class's ``__init__`` raises, a model does
not load, a setting is wrong) would die the same way again at once (one killed from
outside before it got going, by a signal and with no error of its own, did not fail and
is restarted at once like one that got going): restarting it in a
tight loop prints a traceback a hundred times a minute and helps nobody. So those
restarts wait, :attr:`RestartPolicy.initial` doubling up to
:attr:`RestartPolicy.maximum`, one replica at a time, and the actor counts as
*crash-looping* (``asya status`` shows it with the last error) until a replica has
stayed up for :attr:`RestartPolicy.stable_after`. Replicas that got going but die in a
burst (more than :attr:`RestartPolicy.burst` within :attr:`RestartPolicy.window`,
well above what a poison message costs) are backed off the same way.

How a replica says so: it writes ``replicas/<pid>.ready`` in the state folder once its
handler loaded, and ``replicas/<pid>.error`` (the one-line summary of what killed it)
before it exits on an error; the supervisor reads and removes both
(:func:`take_marks`). :class:`Restarts` is a pure function of the times it is told, so
tests drive it with a fake clock.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["RestartPolicy", "Restarts", "is_ready", "mark_ready", "record_error",
           "take_marks"]

#: The folder of the state folder where replicas leave their marks (and metrics URLs).
_MARKS = "replicas"


def _mark(state_dir: Path, pid: int, kind: str) -> Path:
    return state_dir / _MARKS / f"{pid}.{kind}"


def mark_ready(state_dir: Path, pid: int | None = None) -> None:
    """This replica got going: its handler loaded and its loop is about to turn."""
    path = _mark(state_dir, pid or os.getpid(), "ready")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def record_error(state_dir: Path, summary: str, pid: int | None = None) -> None:
    """Leave the one-line ``summary`` of what is killing this replica (capped)."""
    path = _mark(state_dir, pid or os.getpid(), "error")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(summary.split())[:1000])


def is_ready(state_dir: Path, pid: int) -> bool:
    return _mark(state_dir, pid, "ready").exists()


def take_marks(state_dir: Path, pid: int) -> tuple[bool, str | None]:
    """Whether replica ``pid`` (now gone) got going, and its error summary; both marks
    are removed."""
    ready = _mark(state_dir, pid, "ready")
    got_going = ready.exists()
    ready.unlink(missing_ok=True)
    error = _mark(state_dir, pid, "error")
    try:
        summary: str | None = error.read_text().strip() or None
    except OSError:
        summary = None
    error.unlink(missing_ok=True)
    return got_going, summary


@dataclass(frozen=True)
class RestartPolicy:
    """Seconds, all of them (see the module docstring)."""

    #: The first backoff; it doubles with each crash in a row.
    initial: float = 1.0
    #: The longest backoff.
    maximum: float = 60.0
    #: A replica up this long (after it got going) ends the crash loop.
    stable_after: float = 30.0
    #: Deaths of replicas that got going, within ``window``, restarted at once; more
    #: count as crashes. Three times the default ``maxDeliveries`` (10), so that a
    #: poison message reaches its delivery limit with prompt restarts.
    burst: int = 30
    window: float = 60.0


@dataclass
class Restarts:
    """The restart record of one actor's replicas, on a monotonic clock."""

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    #: Crashes in a row (deaths before getting going, or past the burst).
    failures: int = 0
    #: No replica starts before this time.
    not_before: float = 0.0
    last_error: str | None = None
    _deaths: deque[float] = field(default_factory=deque)

    @property
    def crash_looping(self) -> bool:
        return self.failures > 0

    def died(self, now: float, *, got_going: bool, error: str | None = None,
             killed: bool = False) -> float:
        """A replica died (not one told to stop); the seconds before the next start.

        ``killed``: it was killed from outside (SIGKILL, SIGTERM, SIGINT or SIGHUP from
        someone other than the supervisor, with no error of its own), so it did not fail:
        whether or not it got going, it is restarted at once, within the burst."""
        self.last_error = error or self.last_error
        self._deaths.append(now)
        while now - self._deaths[0] > self.policy.window:
            self._deaths.popleft()
        if (got_going or killed) and len(self._deaths) <= self.policy.burst:
            self.not_before = now
            return 0.0
        self.failures += 1
        delay = min(self.policy.initial * 2.0 ** min(self.failures - 1, 30),
                    self.policy.maximum)
        self.not_before = now + delay
        return delay

    def up(self, now: float, *, since: float) -> None:
        """A replica that got going has run since ``since``: long enough, and the crash
        loop is over."""
        if self.failures and now - since >= self.policy.stable_after:
            self.failures, self.not_before = 0, 0.0
            self._deaths.clear()

    def may_start(self, now: float) -> bool:
        return now >= self.not_before

    def next_start_in(self, now: float) -> float:
        return max(self.not_before - now, 0.0)

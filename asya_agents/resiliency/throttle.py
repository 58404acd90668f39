"""Marks that say "this actor is rate-limited", for the local autoscaler.

Adding replicas to an actor that is held back by its rate limit or by 429s only adds
processes that wait for the same tokens (or earn more 429s). Replicas write the time
until which their actor counts as rate-limited into ``<state>/throttle/<actor>``; the
supervisor, which shares the state folder, reads it and asks the autoscaler to hold.
One small file per actor, replaced atomically; a replica writes it at most once a
second, so the cost is nothing next to the calls it throttles.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["ThrottleMarks"]


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

"""KEDA's scaling semantics, for the local supervisor.

On Kubernetes, KEDA activates a deployment (0 -> 1) when the queue's metric passes the
activation threshold, the HPA sizes it to ``ceil(metric / queueLength)`` between 1 and
``maxReplicaCount``, scale-downs are smoothed by a stabilization window, and KEDA
returns it to 0 once the trigger has been inactive for ``cooldownPeriod``. ``asya up``
applies the same rules to the same manifest fields, so a mesh behaves alike on a laptop
and on a cluster. Time is injected: tests drive it with a fake clock.

One signal is added to the queue's count: a fast actor under steady low load (a 3 ms
step, a message every second or two) is almost never caught holding a message at a
poll, so its queue looks idle and the actor went to zero every ``cooldownPeriod``, to
pay a cold start on the next message. So replicas leave an :class:`ActivityMarks` mark
when they receive, and an actor whose replicas received since the last poll counts as
active (``busy``): it does not go to zero while messages keep arriving, as KEDA's
message-rate triggers would keep it.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from asya_agents.envelope import Envelope
from asya_agents.manifest import ScalingSpec
from asya_agents.seams import Observer

__all__ = ["ActivityMarks", "Autoscaler", "ScaleDecision"]

#: A replica rewrites its actor's activity mark at most this often (seconds).
_MARK_EVERY = 0.5


class ActivityMarks(Observer):
    """``<state>/activity/<actor>``: when a replica of the actor last received a message
    (epoch seconds). Replicas write it (an observer, at most twice a second), the
    supervisor reads it at each poll."""

    def __init__(self, state_dir: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.folder = state_dir / "activity"
        self._clock = clock
        self._written = 0.0

    def received(self, actor: str, envelope: Envelope | None) -> None:
        now = self._clock()
        if now - self._written < _MARK_EVERY:
            return
        self._written = now
        with contextlib.suppress(OSError):
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f".{actor}.{os.getpid()}"
            tmp.write_text(f"{now:.3f}")
            tmp.replace(self.folder / actor)

    def last(self, actor: str) -> float:
        """Epoch seconds a replica of ``actor`` last received (0: never)."""
        with contextlib.suppress(OSError, ValueError):
            return float((self.folder / actor).read_text())
        return 0.0


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    active: bool
    reason: str


class Autoscaler:
    """Desired replicas for one actor from its queue metric (ready + in flight)."""

    def __init__(self, spec: ScalingSpec, *, clock: Callable[[], float] = time.monotonic):
        self.spec = spec
        self._clock = clock
        self._last_active: float | None = None
        self._wishes: deque[tuple[float, int]] = deque()

    def decide(self, metric: int, current: int, *, hold: bool = False,
               busy: bool = False) -> ScaleDecision:
        """``hold`` (e.g. the actor is rate-limited) forbids adding replicas; ``busy``
        (its replicas received since the last poll) keeps it active, whatever the queue
        showed at this instant."""
        now = self._clock()
        spec = self.spec
        active = metric > spec.activationQueueLength or (busy and current > 0)
        if active:
            self._last_active = now
        if not active and current == 0:
            return self._remember(now, spec.minReplicaCount, False, "inactive")
        idle_for = math.inf if self._last_active is None else now - self._last_active
        if not active and spec.minReplicaCount == 0 and idle_for >= spec.cooldownPeriod:
            self._wishes.clear()
            return ScaleDecision(0, False, f"inactive for {idle_for:.0f}s >= cooldownPeriod")
        wish = math.ceil(metric / spec.queueLength)
        wish = max(spec.minReplicaCount, 1, min(wish, spec.maxReplicaCount))
        if hold and wish > current:
            wish = max(current, 1 if active else 0, spec.minReplicaCount)
            return self._remember(now, wish, active, "held: not adding replicas")
        return self._remember(now, wish, active, f"metric {metric} / target {spec.queueLength}")

    def _remember(self, now: float, wish: int, active: bool, reason: str) -> ScaleDecision:
        """Scale up at once; scale down only to the highest wish within the window."""
        self._wishes.append((now, wish))
        window = self.spec.scaleDownStabilization
        while self._wishes and now - self._wishes[0][0] > window:
            self._wishes.popleft()
        stable = max(w for _, w in self._wishes)
        if stable > wish:
            return ScaleDecision(stable, active, f"{reason}; stabilizing at {stable}")
        return ScaleDecision(wish, active, reason)

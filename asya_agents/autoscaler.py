"""KEDA's scaling semantics, for the local supervisor.

On Kubernetes, KEDA activates a deployment (0 -> 1) when the queue's metric passes the
activation threshold, the HPA sizes it to ``ceil(metric / queueLength)`` between 1 and
``maxReplicaCount``, scale-downs are smoothed by a stabilization window, and KEDA
returns it to 0 once the trigger has been inactive for ``cooldownPeriod``. ``asya up``
applies the same rules to the same manifest fields, so a mesh behaves alike on a laptop
and on a cluster. Time is injected: tests drive it with a fake clock.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from asya_agents.manifest import ScalingSpec

__all__ = ["Autoscaler", "ScaleDecision"]


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

    def decide(self, metric: int, current: int, *, hold: bool = False) -> ScaleDecision:
        """``hold`` (e.g. the actor is rate-limited) forbids adding replicas."""
        now = self._clock()
        spec = self.spec
        active = metric > spec.activationQueueLength
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

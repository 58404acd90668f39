"""A simulated provider and actor on a fake clock, driving the real brakes.

The provider allows ``rate`` calls a second with a token bucket of ``burst`` (beyond:
429 at once, with ``retry-after-ms`` until the next token), answers a granted call after
``latency`` seconds. Each replica is a :class:`ResilientAdmission` over one shared
store, stepped every ``step`` seconds the way the runtime's receive loop uses it: wait
out a Retry-After pause, take as many calls as its limit has free from the pace, send
them. A message answered 429 comes back to the queue after its Retry-After. What is
measured is what the benchmark measures at its provider: answers a second from the
first to the last answer, over ``rate``, and the share of calls answered 429.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from asya_agents.fakes import _Bucket as Bucket  # the fake provider's own bucket
from asya_agents.resiliency.adaptive import AdaptiveLimit
from asya_agents.resiliency.admission import ResilientAdmission
from asya_agents.resiliency.shared import LocalState, SharedBrakes
from asya_agents.resiliency.spec import AdaptiveConcurrencySpec
from tests.conftest import FakeClock


class RateLimited(Exception):
    """A provider's 429, with the headers a client library exposes."""

    status_code = 429

    def __init__(self, wait: float) -> None:
        super().__init__("429: rate limit exceeded")
        self.headers = {"retry-after-ms": str(max(1, round(wait * 1000)))}


@dataclass
class SimReplica:
    admission: ResilientAdmission
    adaptive: AdaptiveLimit
    shared: SharedBrakes
    starts: float = 0.0
    inflight: list[float] = field(default_factory=list)
    refused_once: bool = False


@dataclass
class SimResult:
    served: float  # answers/s over the serving window, over the rate
    share_429: float
    calls: int
    answered: int
    seconds: float  # first send to last answer
    paces: list[tuple[float, float | None]]  # the shared pace once a second
    refused_at: list[float] = field(default_factory=list)  # seconds from the first call


class _Sim:
    """One run's state: the provider, the replicas, the queue and what was measured."""

    def __init__(self, *, rate: float, burst: float | None, replicas: int, latency: float,
                 spec: AdaptiveConcurrencySpec, concurrency: int, joins: list[float] | None,
                 jitter: float, seed: int, detect: float, first_detect: float | None) -> None:
        self.clock = FakeClock(1_700_000_000.0)
        self.began = self.clock()
        self.store = LocalState()
        self.provider = Bucket(rate, burst if burst is not None else max(rate / 5, 1.0),
                               self.clock)
        self.latency, self.jitter, self.rng = latency, jitter, random.Random(seed)
        self.detect, self.first_detect, self.concurrency = detect, first_detect, concurrency
        self.reps: list[SimReplica] = []
        for i in range(replicas):
            adaptive = AdaptiveLimit(spec, ceiling=concurrency, clock=self.clock)
            shared = SharedBrakes(self.store, actor="sim", adaptive=adaptive,
                                  max_replicas=replicas, clock=self.clock)
            adm = ResilientAdmission(actor="sim", adaptive=adaptive, shared=shared,
                                     clock=self.clock)
            self.reps.append(SimReplica(adm, adaptive, shared,
                                        starts=self.began + (joins[i] if joins else 0.0)))
        self.backlog = 0
        self.retries: list[float] = []  # when a 429'd message is back in the queue
        self.refused: list[tuple[float, int, float, float]] = []  # heard, replica, wait, sent
        self.answers: list[float] = []
        self.refused_at: list[float] = []
        self.sent = 0

    def busy(self) -> bool:
        return bool(self.backlog or self.retries or self.refused or
                    any(r.inflight for r in self.reps))

    def hear(self, now: float) -> None:
        """429s reach their replicas' brakes, retries come back, answers arrive."""
        while self.refused and self.refused[0][0] <= now:
            _, index, wait, went = heapq.heappop(self.refused)
            self.reps[index].admission.outcome(RateLimited(wait), went)
        while self.retries and self.retries[0] <= now:
            heapq.heappop(self.retries)
            self.backlog += 1
        for rep in self.reps:
            done = [t for t in rep.inflight if t <= now]
            if done:
                rep.inflight = [t for t in rep.inflight if t > now]
                for _ in done:
                    rep.admission.outcome(None)
                    self.answers.append(now)

    async def send(self, index: int, rep: SimReplica, now: float) -> None:
        """One turn of a replica's receive loop."""
        if now < rep.starts or rep.admission._paused_until > now:
            return
        free = rep.admission.limit(self.concurrency) - len(rep.inflight)
        if free <= 0:
            return
        if rep.adaptive.unsent_refused:
            await rep.shared.refresh()
        granted, _wait = await rep.admission.try_acquire(free)
        if not granted:
            return
        use = min(granted, self.backlog)
        await rep.admission.release(granted - use)
        self.backlog -= use
        for _ in range(use):
            self.sent += 1
            wait = self.provider.take()
            if wait <= 0:
                rep.inflight.append(now + self.latency * (1 + self.jitter * self.rng.random()))
                continue
            self.refused_at.append(now)
            late = self.detect
            if self.first_detect is not None and not rep.refused_once:
                late, rep.refused_once = self.first_detect, True
            heapq.heappush(self.refused, (now + late, index, wait, now))
            heapq.heappush(self.retries, now + late + wait)


async def simulate(*, rate: float, calls: int, replicas: int = 1, latency: float = 0.3,
                   burst: float | None = None, spec: AdaptiveConcurrencySpec | None = None,
                   concurrency: int = 16, step: float = 0.005, joins: list[float] | None = None,
                   lead: float = 2.0, jitter: float = 0.3, seed: int = 1,
                   detect: float = 0.0, first_detect: float | None = None,
                   limit: float = 600.0) -> SimResult:
    """``calls`` messages arrive ``lead`` seconds after the replicas start (which ask
    for work meanwhile, from an empty queue); ``joins`` (seconds) when each replica
    starts (all at 0 by default: pinned replicas); each answer takes ``latency`` times
    up to ``1 + jitter``; a 429 reaches the replica's brakes ``detect`` seconds after
    the provider answered it (the client library's own time to raise it), the first one
    of each replica ``first_detect`` (litellm builds its error types on the first)."""
    spec = spec or AdaptiveConcurrencySpec(cooldown=2.0, paceMargin=0.9, paceGrowth=0.01,
                                           pauseOnRetryAfter=60.0, minConcurrency=1)
    sim = _Sim(rate=rate, burst=burst, replicas=replicas, latency=latency, spec=spec,
               concurrency=concurrency, joins=joins, jitter=jitter, seed=seed,
               detect=detect, first_detect=first_detect)
    began, arrival = sim.began, sim.began + lead
    paces: list[tuple[float, float | None]] = []
    next_mark = began
    while (arrival or sim.busy()) and sim.clock() - began < limit:
        sim.clock.advance(step)
        now = sim.clock()
        if arrival and now >= arrival:
            sim.backlog, arrival = calls, 0.0
        if now >= next_mark:
            paces.append((round(now - began), sim.store.data.get("pace", {}).get("pace")))
            next_mark += 1.0
        sim.hear(now)
        for index, rep in enumerate(sim.reps):
            await sim.send(index, rep, now)
    answers = sim.answers
    window = (answers[-1] - answers[0]) if len(answers) > 1 else 0.0
    return SimResult(served=len(answers) / window / rate if window else 0.0,
                     share_429=len(sim.refused_at) / sim.sent if sim.sent else 0.0,
                     calls=sim.sent, answered=len(answers),
                     seconds=(answers[-1] - began - lead) if answers else 0.0, paces=paces,
                     refused_at=[round(t - began - lead, 2) for t in sim.refused_at])


def table(results: dict[Any, SimResult]) -> str:
    return "\n".join(f"{k}: served {r.served:.3f} 429 {r.share_429:.1%} calls {r.calls} "
                     f"in {r.seconds:.1f}s" for k, r in results.items())

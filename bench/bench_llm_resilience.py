"""Benchmark: an LLM-calling actor against a provider's rate limit, with resiliency as
configuration versus retries in the worker.

A local OpenAI-compatible provider (asya_agents.fakes.FakeLLMProvider) allows R calls/s
and answers 429 with Retry-After beyond that. A judge-like handler calls it through
litellm (``num_retries=0``), N messages in all. Designs, all in this one run, all with
the same concurrency (4 processes x 16 calls in flight):

- ``asya``: ``asya up`` on the embedded transport, the actor on the ``llm-resilient``
  flavor, scaled 0..4 replicas by the local autoscaler. The handler only raises; retries
  are delayed redeliveries, 429s cut the replica's concurrency and pause it for the
  Retry-After. Run twice: as the flavor comes (the provider's limit unknown) and with
  ``rateLimit: {perSecond: R}`` (the account's limit known, shared by all replicas).
- ``before``: the same calls in 4 worker processes x 16 threads, each retrying in the
  worker with exponential backoff that sleeps (tenacity's ``wait_exponential`` plus
  random jitter, 8 attempts); and the same sleeping honouring Retry-After instead (as
  litellm's own retries do).

Printed per design: completions/s over the serving window (first to last completion)
as a fraction of R, the share of calls answered 429, the time to drain the backlog from
the first send (the asya rows include replicas starting from zero, litellm's import
included), and envelopes lost (sent and never ended; must be 0).

    python bench/bench_llm_resilience.py [--count 2000] [--rate 50] [--latency 0.3]
                                         [--only asya,...] [--replicas N]
    python bench/bench_llm_resilience.py --goal [--rate 20] [--replicas 1,2,4]
                                         [--seconds 20,120]

``--replicas N`` pins the asya actor at N replicas. ``--goal`` runs only the asya design
with the limit unknown, once per replica count and run length (``--seconds`` of calls
at R: ``count = R x seconds``), and prints a table against the goal: at least 0.95 of R
served and at most 2 % of calls answered 429. The replicas share the learned pace (and
the breaker) through the mesh's SQLite store, as on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PROCESSES, THREADS = 4, 16
_API_BASE = "BENCH_LLM_API_BASE"


def _litellm() -> Any:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
    import litellm

    return litellm


def _ask(litellm: Any, api_base: str, n: int) -> dict[str, Any]:
    reply = litellm.completion(
        model="openai/judge", api_base=api_base, api_key="x", num_retries=0,
        messages=[{"role": "user", "content": f"score photo {n}"}],
    )
    verdict: dict[str, Any] = json.loads(reply.choices[0].message.content)
    return verdict


class Judge:
    """The actor's handler (``bench_llm_resilience.Judge.judge``): one call, no retries.
    It loads litellm as the project's LLM actors do (``actors.llm.client``: offline
    mode, and one error raised at startup so that litellm has built its error types
    before the first 429 comes)."""

    def __init__(self) -> None:
        from actors.llm.client import load_litellm

        self.litellm = load_litellm()
        self.api_base = os.environ[_API_BASE]

    def judge(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "verdict": _ask(self.litellm, self.api_base, payload["n"])}


# -- asya: asya up with the llm-resilient flavor ---------------------------------------


def _write_mesh(folder: Path, rate_limit: float | None, replicas: int | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "mesh.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: Mesh\nmetadata: {name: llm-bench}\n"
        f"spec:\n  route: [judge]\n  pythonPath: ['{HERE}', '{ROOT}']\n"
        f"  flavorPaths: ['{ROOT / 'mesh' / 'flavors'}']\n")
    # A burst of 0.1 s of calls: below the provider's own (0.2 s), enough that a replica
    # waking a few ms late does not waste the actor's tokens.
    burst = max(1, round(rate_limit / 10)) if rate_limit else 0
    limit = f"\n    rateLimit: {{perSecond: {rate_limit:g}, burst: {burst}}}" if rate_limit else ""
    # --replicas N pins the actor at N replicas (from before the first send), so that
    # N replicas learn the provider's limit together from the first call.
    pinned = f"  scaling: {{minReplicaCount: {replicas}, maxReplicaCount: {replicas}}}\n" \
        if replicas else ""
    (folder / "actors.yaml").write_text(
        "apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: judge}\n"
        "spec:\n  handler: bench_llm_resilience.Judge.judge\n  flavors: [llm-resilient]\n"
        f"{pinned}  resiliency:\n    actorTimeout: 30s{limit}\n")
    return folder


def run_asya(count: int, api_base: str, rate_limit: float | None,
             replicas: int | None = None) -> dict[str, float]:
    from asya_agents.envelope import Envelope
    from asya_agents.stores import SQLiteResultStore
    from asya_agents.transports import Outgoing
    from asya_agents.transports.embedded import EmbeddedTransport

    work = Path(tempfile.mkdtemp(prefix="asya-llm-bench-"))
    mesh, state = _write_mesh(work / "mesh", rate_limit, replicas), work / "state"
    env = {**os.environ, "ASYA_LOG_LEVEL": "ERROR", _API_BASE: api_base}
    up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(mesh),
                           "--state-dir", str(state)], env=env)
    envelopes = [Envelope.create({"n": n}, ["judge"]) for n in range(count)]

    async def push() -> None:
        transport = EmbeddedTransport(state / "queues.db")
        for start in range(0, count, 500):
            await transport.send([Outgoing("judge", e.encode())
                                  for e in envelopes[start:start + 500]])
        await transport.close()

    try:
        time.sleep(2)  # the supervisor creates the queues
        began = time.time()
        asyncio.run(push())
        store = SQLiteResultStore(state / "results.db")
        deadline = began + 30 + 10 * count / 20
        while (store.totals().succeeded + store.totals().failed) < count and \
                time.time() < deadline:
            time.sleep(0.2)
        drained = time.time() - began
        records = store.results()
        ok = [r for r in records if r.status == "succeeded"]
        ended = {r.id for r in records}
        store.close()
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(120)
    return {"ok": len(ok), "drain": drained, "began": began, "failed": len(records) - len(ok),
            "lost": sum(1 for e in envelopes if e.id not in ended)}


# -- before: retries that sleep in the worker ------------------------------------------


def _tenacity_wait(attempt: int, error: Exception) -> float:
    """tenacity's wait_exponential(multiplier=1, max=60) + wait_random(0, 1)."""
    return min(60.0, 2.0 ** (attempt - 1)) + random.uniform(0, 1)


def _retry_after_wait(attempt: int, error: Exception) -> float:
    """Sleep what the provider asked (Retry-After), else exponential, as litellm does."""
    headers = getattr(getattr(error, "response", None), "headers", None) or {}
    asked = headers.get("retry-after-ms")
    if asked is not None:
        return float(asked) / 1000.0
    return _tenacity_wait(attempt, error)


def _call_with_retries(litellm: Any, api_base: str, n: int, wait: Any) -> float | None:
    for attempt in range(1, 9):
        try:
            _ask(litellm, api_base, n)
            return time.time()
        except (litellm.RateLimitError, litellm.InternalServerError,
                litellm.ServiceUnavailableError, litellm.APIConnectionError) as exc:
            if attempt == 8:
                return None
            time.sleep(wait(attempt, exc))
    return None


def _worker(items: list[int], api_base: str, policy: str, go: Any, out: Any) -> None:
    litellm = _litellm()
    wait = _retry_after_wait if policy == "retry-after" else _tenacity_wait
    go.wait()
    with ThreadPoolExecutor(THREADS) as pool:
        done = list(pool.map(lambda n: _call_with_retries(litellm, api_base, n, wait), items))
    out.put(done)


def run_before(count: int, api_base: str, policy: str) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    go, out = ctx.Event(), ctx.Queue()
    shares = [list(range(i, count, PROCESSES)) for i in range(PROCESSES)]
    procs = [ctx.Process(target=_worker, args=(s, api_base, policy, go, out))
             for s in shares]
    for proc in procs:
        proc.start()
    time.sleep(15)  # every worker has imported litellm before the clock starts
    began = time.time()
    go.set()
    done = [t for _ in procs for t in out.get()]
    drained = time.time() - began
    for proc in procs:
        proc.join()
    ok = [t for t in done if t is not None]
    # A call that ran out of attempts is gone: nothing recorded it anywhere.
    return {"ok": len(ok), "drain": drained, "began": began, "failed": len(done) - len(ok),
            "lost": len(done) - len(ok)}


# -- the run ------------------------------------------------------------------------------


class _Answers:
    """The provider's responder: answers like a judge and notes when it answered, so
    that every design is timed at the provider, the same way."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, request: dict[str, Any]) -> str:
        self.times.append(time.time())
        return json.dumps({"score": 0.9, "verdict": "accept"})


def _measure(rate: float, latency: float, run: Any) -> dict[str, float]:
    from asya_agents.fakes import FakeLLMProvider

    answers = _Answers()
    # A fresh provider per design: every design starts with the same full bucket.
    with FakeLLMProvider(rate=rate, burst=max(rate / 5, 1), latency=latency,
                         responder=answers) as llm:
        row: dict[str, float] = run(llm.base_url)
        stats = llm.stats
    row["calls"] = stats.requests
    row["share_429"] = stats.share_429
    row["window"] = max(answers.times) - min(answers.times) if answers.times else 0.0
    row["answered"] = len(answers.times)
    row["cold"] = min(answers.times) - row["began"] if answers.times else 0.0
    return row


def _print(rows: dict[str, dict[str, float]], rate: float, count: int) -> None:
    print(f"\n{count} messages, provider R = {rate:g} calls/s, "
          f"{PROCESSES} x {THREADS} in flight at most, {os.cpu_count()} cores")
    print(f"{'design':<48}{'rate/R':>8}{'429s':>8}{'drain s':>9}{'cold s':>8}{'lost':>6}"
          f"{'failed':>8}{'calls':>7}")
    for name, row in rows.items():
        frac = row["answered"] / row["window"] / rate if row["window"] else 0.0
        print(f"{name:<48}{frac:>8.3f}{row['share_429']:>8.1%}{row['drain']:>9.1f}"
              f"{row['cold']:>8.1f}{row['lost']:>6.0f}{row['failed']:>8.0f}{row['calls']:>7.0f}")
    print("rate/R: answers/s at the provider from its first to its last answer, over R;"
          " drain s: first send to last end; cold s: first send to first answer (asya:"
          " replicas start from zero and import litellm; before: workers started ahead)")


#: The issue-17 goal for the adaptive design, the limit unknown.
GOAL_SERVED, GOAL_429 = 0.95, 0.02


def run_goal(args: argparse.Namespace) -> None:
    """The adaptive design per replica count and run length, as one table."""
    counts = [int(n) for n in (args.replicas or "1,2,4").split(",")]
    lengths = [float(s) for s in args.seconds.split(",")]
    rows = []
    for seconds in lengths:
        for replicas in counts:
            count = round(args.rate * seconds)
            row = _measure(args.rate, args.latency,
                           lambda url, c=count, r=replicas: run_asya(c, url, None, r))
            served = row["answered"] / row["window"] / args.rate if row["window"] else 0.0
            rows.append((seconds, replicas, count, served, row))
            print(f"{seconds:g} s, {replicas} replicas: {row}", flush=True)
    print(f"\nadaptive pace and breaker shared by the replicas, limit unknown; provider R = "
          f"{args.rate:g} calls/s, {args.latency:g} s per answer, {os.cpu_count()} cores")
    print(f"{'run':>6}{'replicas':>9}{'calls':>7}{'served/R':>10}{'429s':>8}{'lost':>6}"
          f"{'failed':>8}{'drain s':>9}  goal (>= {GOAL_SERVED} R, <= {GOAL_429:.0%} 429)")
    for seconds, replicas, _count, served, row in rows:
        ok = served >= GOAL_SERVED and row["share_429"] <= GOAL_429 and row["lost"] == 0
        print(f"{seconds:>5g}s{replicas:>9}{row['calls']:>7.0f}{served:>10.3f}"
              f"{row['share_429']:>8.1%}{row['lost']:>6.0f}{row['failed']:>8.0f}"
              f"{row['drain']:>9.1f}  {'met' if ok else 'MISSED'}")
    print("served/R: answers/s at the provider from its first to its last answer, over R;"
          " calls: every request the provider saw, 429s included")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=50.0, help="provider calls/s (R)")
    parser.add_argument("--latency", type=float, default=0.3, help="seconds per answer")
    parser.add_argument("--only", default="", help="comma-separated design keys")
    parser.add_argument("--replicas", default=None,
                        help="pin the asya actor at this many replicas (default: 0..4, "
                        "scaled by the local autoscaler); with --goal a list: 1,2,4")
    parser.add_argument("--goal", action="store_true",
                        help="the adaptive asya design per replica count and run length")
    parser.add_argument("--seconds", default="20,120",
                        help="with --goal: run lengths in seconds of calls at R")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.goal:
        run_goal(args)
        return
    replicas = int(args.replicas) if args.replicas else None

    designs = {
        # Set a little under the account's limit, as any client-side limit: calls reach
        # the provider with a few ms of jitter, and its bucket has no slack at exactly R.
        "asya-limit": ("asya: llm-resilient + rateLimit 0.97 R (shared)",
                       lambda url: run_asya(args.count, url, 0.97 * args.rate, replicas)),
        "asya": ("asya: llm-resilient, limit unknown (adaptive)",
                 lambda url: run_asya(args.count, url, None, replicas)),
        "tenacity": ("before: exponential backoff sleeping in worker",
                     lambda url: run_before(args.count, url, "tenacity")),
        "retry-after": ("before: Retry-After slept in worker",
                        lambda url: run_before(args.count, url, "retry-after")),
    }
    chosen = [k for k in designs if not args.only or k in args.only.split(",")]
    rows = {}
    for key in chosen:
        name, run = designs[key]
        rows[name] = _measure(args.rate, args.latency, run)
        print(f"{name}: {rows[name]}", flush=True)
    _print(rows, args.rate, args.count)


if __name__ == "__main__":
    main()

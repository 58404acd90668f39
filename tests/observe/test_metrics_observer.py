"""The Prometheus observer: counts of a real run of the runtime, read from its registry.

The mesh runs in this event loop on the embedded transport; the registry is the one a
replica serves on /metrics (the server itself is checked in test_mesh_metrics.py).
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from asya_agents.envelope import Envelope, Hop
from asya_agents.observe.metrics import MetricsObserver, queue_wait, serve_metrics
from asya_agents.observe.wiring import Observers
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.seams import Admission, Decision
from asya_agents.transports.embedded import EmbeddedTransport
from tests.observe.harness import Recorder, RetryOnce, running


def _value(obs: MetricsObserver, name: str, **labels: str) -> float:
    return obs.registry.get_sample_value(name, labels) or 0.0


async def test_counts_match_what_the_mesh_did(tmp_path: Path) -> None:
    metrics = MetricsObserver(process=False)
    async with running(tmp_path, observer=Observers([metrics, Recorder()]),
                       failure={"flaky": RetryOnce()}) as mesh:
        # Given 2 roots fanning out into 4 + 3 children, the 4 failing once at `flaky`
        a = await mesh.send({"n": 4, "fail_first": True})
        b = await mesh.send({"n": 3})
        # When all have ended
        await mesh.join([a.id, b.id])
    # Then each actor counted what it received, what succeeded and what failed
    assert _value(metrics, "asya_envelopes_received_total", actor="fan") == 2
    assert _value(metrics, "asya_envelopes_succeeded_total", actor="fan") == 2
    assert _value(metrics, "asya_envelopes_received_total", actor="flaky") == 7 + 4
    assert _value(metrics, "asya_envelopes_failed_total", actor="flaky",
                  reason="handler-error") == 4
    assert _value(metrics, "asya_envelopes_retried_total", actor="flaky",
                  reason="handler-error") == 4
    assert _value(metrics, "asya_envelopes_succeeded_total", actor="flaky") == 7
    assert _value(metrics, "asya_envelopes_succeeded_total", actor="tail") == 7
    assert _value(metrics, "asya_envelopes_succeeded_total", actor="happy-end") == 7
    assert _value(metrics, "asya_envelopes_dead_lettered_total", actor="flaky",
                  reason="handler-error", target="error-end") == 0
    # the batch actor's batches add up to the 7 children
    assert _value(metrics, "asya_batch_size_sum", actor="tail") == 7
    assert _value(metrics, "asya_handler_duration_seconds_count", actor="flaky",
                  outcome="failed") == 4
    assert _value(metrics, "asya_queue_wait_seconds_count", actor="tail") == 7


def test_failures_split_into_retried_and_dead_lettered() -> None:
    metrics = MetricsObserver(process=False)
    env = Envelope.create({}, ["a"])
    err = ValueError("x")
    # Given one retried and two dead-lettered failures with different reasons
    metrics.failed("a", env, err, Decision("retry", delay=1.0, reason="rate-limited"), 0.1)
    metrics.failed("a", env, err, Decision("route", reason="timeout"), 2.0)
    metrics.failed("a", env, err, Decision("route", target="review", reason="bad"), 0.2)
    # Then the failure counters carry the reason, the dead letters the target too
    assert _value(metrics, "asya_envelopes_failed_total", actor="a", reason="rate-limited") == 1
    assert _value(metrics, "asya_envelopes_retried_total", actor="a",
                  reason="rate-limited") == 1
    assert _value(metrics, "asya_envelopes_dead_lettered_total", actor="a", reason="timeout",
                  target="error-end") == 1
    assert _value(metrics, "asya_envelopes_dead_lettered_total", actor="a", reason="bad",
                  target="review") == 1
    # and a message that is not an envelope is counted apart from received ones
    metrics.received("a", None)
    assert _value(metrics, "asya_envelopes_invalid_total", actor="a") == 1
    assert _value(metrics, "asya_envelopes_received_total", actor="a") == 0


def test_queue_wait_starts_when_the_previous_hop_ended() -> None:
    env = Envelope.create({}, ["a", "b"], now=100.0)
    assert queue_wait(env, 100.5) == 0.5
    env.meta.hops = [Hop(actor="a", started=101.0, ended=103.0)]
    assert queue_wait(env, 103.25) == 0.25
    env.meta.created, env.meta.hops = None, []
    assert queue_wait(env, 5.0) is None


class _Guarded(Admission):
    """An admission as the resiliency package would report it."""

    def limit(self, concurrency: int) -> int:
        return 3

    def breaker_state(self) -> str:
        return "open"

    def rate_limit_hits(self) -> int:
        return 17


async def test_gauges_read_the_runtime_and_its_admission_when_scraped(tmp_path: Path) -> None:
    # Given a runtime whose admission reports a lowered limit, an open breaker, hits
    transport = EmbeddedTransport(tmp_path / "q.db")
    cfg = RuntimeConfig(actor="judge", actors={"judge"}, concurrency=8, admission=_Guarded())
    runtime = Runtime(cfg, transport=transport, terminal=_noop)
    metrics = MetricsObserver()
    metrics.watch(runtime)
    # When /metrics is served and scraped over HTTP
    server = serve_metrics(metrics.registry, port=0)
    try:
        with urllib.request.urlopen(server.url, timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.close()
        await transport.close()
    # Then the gauges show them, and process metrics come along
    assert 'asya_concurrency_limit{actor="judge"} 3.0' in text
    assert 'asya_concurrency{actor="judge"} 8.0' in text
    assert 'asya_circuit_breaker_state{actor="judge"} 2.0' in text
    assert 'asya_rate_limit_hits_total{actor="judge"} 17.0' in text
    assert 'asya_envelopes_in_flight{actor="judge"} 0.0' in text
    assert "process_cpu_seconds_total" in text


async def _noop(envelope: Envelope) -> None:
    return None


class _Breaker:
    state = "half-open"


class _LikeResilient(Admission):
    """The shape of the resiliency package's admission: a breaker attribute and a
    rate-limited mark, without the two AdmissionReport methods."""

    breaker = _Breaker()

    def rate_limited(self) -> bool:
        return True


async def test_breaker_state_is_read_from_the_admissions_breaker(tmp_path: Path) -> None:
    transport = EmbeddedTransport(tmp_path / "q.db")
    cfg = RuntimeConfig(actor="judge", actors={"judge"}, admission=_LikeResilient())
    metrics = MetricsObserver(process=False)
    metrics.watch(Runtime(cfg, transport=transport, terminal=_noop))
    await transport.close()
    assert _value(metrics, "asya_circuit_breaker_state", actor="judge") == 1
    assert _value(metrics, "asya_rate_limited", actor="judge") == 1
    assert _value(metrics, "asya_rate_limit_hits_total", actor="judge") == 0

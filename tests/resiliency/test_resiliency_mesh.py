"""Resiliency through a whole mesh (asya_agents.testing.LocalMesh) on an injected clock:
retries are delayed redeliveries, the breaker parks the queue, the rate limit is shared
by replicas, timeouts cancel async handlers. The clock only moves when a test moves it,
so "not yet" is checked exactly rather than by sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_agents.errors import ManifestError
from asya_agents.manifest import load_mesh
from asya_agents.testing import LocalMesh

from .conftest import FakeClock, eventually, write_mesh

FLAKY = """
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: flaky}
spec:
  handler: res_steps.flaky
  handlerMode: envelope
  concurrency: 4
  resiliency:
    policies:
      unavailable: {match: ['5xx'], maxAttempts: 3, backoff: exponential,
                    initialInterval: 10s, onExhausted: review}
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: review}
spec:
  handler: asya_agents.review.park
---
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: echo}
spec: {handler: res_steps.echo}
"""


@pytest.fixture
def flaky_mesh(tmp_path: Path, clock: FakeClock) -> Iterator[LocalMesh]:
    folder = write_mesh(tmp_path / "mesh", FLAKY, route=["flaky", "echo"])
    with LocalMesh(folder, state_dir=tmp_path / "state", clock=clock) as mesh:
        yield mesh


def delayed(mesh: LocalMesh, actor: str) -> int:
    return int(mesh.queue_stats(actor).delayed)


def test_a_retry_waits_in_the_queue_not_in_the_replica(
    flaky_mesh: LocalMesh, clock: FakeClock
) -> None:
    # Given an envelope that fails with 503 on its first attempt
    first = flaky_mesh.send({"succeed_at": 2})
    eventually(lambda: delayed(flaky_mesh, "flaky") == 1)
    # When another envelope arrives while the first waits out its 10 s backoff
    other = flaky_mesh.send({"succeed_at": 1})
    flaky_mesh.join([other], timeout=10)
    # Then the replica served it at once: nobody slept through the backoff
    assert flaky_mesh.result(other).status == "succeeded"
    clock.advance(9.9)
    assert delayed(flaky_mesh, "flaky") == 1, "not before the backoff is over"
    clock.advance(0.2)
    flaky_mesh.join([first], timeout=10)
    record = flaky_mesh.result(first)
    assert record.payload["done_at_attempt"] == 2, "the attempt travelled in the envelope"
    assert [h["attempt"] for h in record.envelope["meta"]["hops"]] == [1, 2, 1]


def test_exhausted_attempts_hand_the_envelope_to_review(
    flaky_mesh: LocalMesh, clock: FakeClock
) -> None:
    # Given an envelope that always fails with 503 (3 attempts, 10 s then 20 s apart)
    env_id = flaky_mesh.send({"status": 503})
    for wait in (10.0, 20.0):
        eventually(lambda: delayed(flaky_mesh, "flaky") == 1)
        clock.advance(wait)
    # When its attempts are used up
    flaky_mesh.join([env_id], timeout=10)
    # Then it is parked at review, addressed to review, saying why
    record = flaky_mesh.result(env_id)
    assert record.status == "paused"
    assert record.route["curr"] == "review" and record.route["prev"] == ["flaky"]
    assert record.route["next"] == ["echo"], "approving it carries on with the route"
    error = record.envelope["meta"]["error"]
    assert error["reason"] == \
        "handler-error: attempts exhausted (3 of 3, policy 'unavailable')"
    assert error["attempt"] == 3 and "503" in error["message"]


BREAKER = """
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: down}
spec:
  handler: res_steps.down
  concurrency: 1
  resiliency:
    policies:
      network: {match: [builtins.ConnectionError], maxAttempts: 5, backoff: constant,
                initialInterval: 1s}
    circuitBreaker: {match: [builtins.ConnectionError], failureThreshold: 2,
                     openDuration: 30s}
"""


def test_an_open_breaker_leaves_messages_in_the_queue_with_their_attempts(
    tmp_path: Path, clock: FakeClock
) -> None:
    flag = tmp_path / "down.flag"
    flag.touch()
    folder = write_mesh(tmp_path / "mesh", BREAKER, route=["down"])
    with LocalMesh(folder, state_dir=tmp_path / "state", clock=clock) as mesh:
        # Given a dependency that is down: two failures open the breaker
        ids = [mesh.send({"flag": str(flag), "n": n}) for n in range(5)]
        eventually(lambda: delayed(mesh, "down") == 2)
        # Then the other three wait in the queue, untouched
        eventually(lambda: mesh.queue_stats("down").depth == 3)
        clock.advance(5.0)  # the two retries are due, but the breaker is open
        eventually(lambda: mesh.queue_stats("down").depth == 5)
        assert mesh.queue_stats("down").in_flight == 0
        # When the dependency is back and the open period is over, a probe succeeds
        flag.unlink()
        clock.advance(25.0)
        mesh.join(ids, timeout=20)
        # Then all were served; only the two that ran into the outage used an attempt
        attempts = sorted(len(mesh.result(i).envelope["meta"]["hops"]) for i in ids)
        assert attempts == [1, 1, 1, 2, 2]
        assert {mesh.result(i).status for i in ids} == {"succeeded"}


LIMITED = """
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: echo}
spec:
  handler: res_steps.echo
  concurrency: 8
  resiliency:
    rateLimit: {perSecond: 2, burst: 3}
"""


def test_the_rate_limit_holds_for_all_replicas_together(tmp_path: Path,
                                                        clock: FakeClock) -> None:
    folder = write_mesh(tmp_path / "mesh", LIMITED, route=["echo"])
    with LocalMesh(folder, state_dir=tmp_path / "state", clock=clock, replicas=3) as mesh:
        # Given three replicas of an actor limited to 2/s with a burst of 3
        ids = [mesh.send({"n": n}) for n in range(10)]

        def served() -> int:
            return sum(1 for i in ids if mesh.store.get(i) is not None)

        # While the clock stands still, the burst is all that passes
        eventually(lambda: served() == 3)
        eventually(lambda: mesh.queue_stats("echo").depth == 7)
        assert served() == 3
        # Each second lets two more through, whichever replica takes them
        clock.advance(1.0)
        eventually(lambda: served() == 5)
        clock.advance(1.5)
        eventually(lambda: served() == 8)
        assert mesh.queue_stats("echo").depth == 2
        assert (tmp_path / "state" / "limits.db").exists(), "the shared bucket"
        assert (tmp_path / "state" / "throttle" / "echo").exists(), "marked rate-limited"


TIMEOUT = """
apiVersion: asya.sh/v1alpha1
kind: AsyncActor
metadata: {name: slow}
spec:
  handler: res_steps.hang_once
  handlerMode: envelope
  resiliency:
    actorTimeout: 200ms
    policies:
      default: {maxAttempts: 2, backoff: constant, initialInterval: 5s, maxInterval: 5s}
"""


def test_actor_timeout_cancels_an_async_handler_and_counts_an_attempt(
    tmp_path: Path, clock: FakeClock
) -> None:
    folder = write_mesh(tmp_path / "mesh", TIMEOUT, route=["slow"])
    with LocalMesh(folder, state_dir=tmp_path / "state", clock=clock) as mesh:
        # Given a handler that hangs on its first attempt
        env_id = mesh.send({})
        # When actorTimeout cancels it, the retry waits its backoff in the queue
        eventually(lambda: delayed(mesh, "slow") == 1)
        clock.advance(5.0)
        mesh.join([env_id], timeout=10)
        # Then the second attempt answered
        assert mesh.result(env_id).payload == {"attempt": 2}


@pytest.mark.parametrize(
    ("resiliency", "field", "needle"),
    [
        ("{policies: {p: {maxAttemps: 3}}}", "spec.resiliency.policies.p.maxAttemps",
         "unknown field"),
        ("{policies: {p: {match: ['4x4']}}}", "spec.resiliency.policies.p.match", "neither"),
        ("{policies: {p: {backoff: fibonacci}}}", "spec.resiliency.policies.p.backoff",
         "exponential"),
        ("{policies: {p: {initialInterval: 10s, maxInterval: 1s}}}", "spec.resiliency.policies.p",
         "maxInterval (1s) is below initialInterval (10s)"),
        ("{policies: {p: {onExhausted: nowhere}}}",
         "spec.resiliency.policies.p.onExhausted", "unknown actor 'nowhere'"),
        ("{rateLimit: {perSecond: 0}}", "spec.resiliency.rateLimit.perSecond", "greater than 0"),
        ("{circuitBreaker: {openDuration: soon}}",
         "spec.resiliency.circuitBreaker.openDuration", "not a duration"),
    ],
)
def test_invalid_resiliency_fails_at_load_naming_file_and_field(
    tmp_path: Path, resiliency: str, field: str, needle: str
) -> None:
    actor = ("apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: echo}\n"
             f"spec:\n  handler: res_steps.echo\n  resiliency: {resiliency}\n")
    folder = write_mesh(tmp_path / "mesh", actor, route=["echo"])
    with pytest.raises(ManifestError) as caught:
        load_mesh(folder)
    assert caught.value.file == str(folder / "actors.yaml")
    assert caught.value.field == field
    assert needle in str(caught.value)


def test_every_flavor_loads_and_merges_under_the_actor(tmp_path: Path) -> None:
    actor = ("apiVersion: asya.sh/v1alpha1\nkind: AsyncActor\nmetadata: {name: echo}\n"
             "spec:\n  handler: res_steps.echo\n  flavors: [llm-resilient]\n"
             "  resiliency: {actorTimeout: 30s, rateLimit: {perSecond: 5}}\n")
    loaded = load_mesh(write_mesh(tmp_path / "mesh", actor, route=["echo"]))
    assert {"llm-resilient", "gpu", "cpu-fast"} <= set(loaded.flavors)
    res = loaded.actors["echo"].spec.resiliency
    assert res.actorTimeout == 30.0 and res.rateLimit is not None
    assert set(res.policies) == {"rate-limited", "transient", "default"}
    assert res.adaptiveConcurrency is not None and res.circuitBreaker is not None


def test_a_sync_overrun_retires_its_replica_and_the_retry_runs_on_another(
    tmp_path: Path, clock: FakeClock
) -> None:
    actors = TIMEOUT.replace("res_steps.hang_once", "res_steps.block_once")
    folder = write_mesh(tmp_path / "mesh", actors, route=["slow"])
    with LocalMesh(folder, state_dir=tmp_path / "state", clock=clock, replicas=2) as mesh:
        # Given two replicas and a sync handler that overruns actorTimeout once
        env_id = mesh.send({})
        eventually(lambda: delayed(mesh, "slow") == 1)
        # When the backoff is over
        clock.advance(5.0)
        mesh.join([env_id], timeout=10)
        # Then the retry was answered, as attempt 2, after a timeout on attempt 1
        record = mesh.result(env_id)
        assert record.payload == {"attempt": 2}
        assert [h["attempt"] for h in record.envelope["meta"]["hops"]] == [1, 2]
        # and the overrun replica stopped taking work (asya up replaces its process)
        # (LocalMesh starts the actor's replicas first, then the crew's)
        assert sum(run.done() for run in mesh._runs[:2]) == 1

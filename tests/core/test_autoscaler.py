"""The local autoscaler follows KEDA's semantics, driven by a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.autoscaler import ActivityMarks, Autoscaler
from asya_agents.manifest import ScalingSpec
from tests.conftest import FakeClock


def scaler(**fields: object) -> tuple[Autoscaler, FakeClock]:
    clock = FakeClock(1000.0)
    spec = ScalingSpec.model_validate({"minReplicaCount": 0, "maxReplicaCount": 5,
                                       "queueLength": 10, "cooldownPeriod": "60s",
                                       "scaleDownStabilization": "30s", **fields})
    return Autoscaler(spec, clock=clock), clock


def test_idle_queue_stays_at_zero() -> None:
    auto, _ = scaler()
    assert auto.decide(0, 0).replicas == 0


def test_activation_and_sizing_by_queue_length_capped_at_max() -> None:
    auto, _ = scaler()
    assert auto.decide(1, 0).replicas == 1
    assert auto.decide(25, 1).replicas == 3
    assert auto.decide(10_000, 3).replicas == 5


def test_activation_threshold_keeps_small_queues_at_zero() -> None:
    auto, _ = scaler(activationQueueLength=5)
    assert auto.decide(5, 0).replicas == 0
    assert auto.decide(6, 0).replicas == 1


def test_scale_down_waits_for_the_stabilization_window() -> None:
    auto, clock = scaler()
    assert auto.decide(50, 0).replicas == 5
    clock.now += 10
    assert auto.decide(10, 5).replicas == 5, "still within the window"
    clock.now += 31
    assert auto.decide(10, 5).replicas == 1


def test_scale_to_zero_only_after_cooldown_since_last_activity() -> None:
    auto, clock = scaler(scaleDownStabilization="0s")
    auto.decide(3, 0)
    clock.now += 59
    assert auto.decide(0, 1).replicas == 1, "inactive, but within cooldownPeriod"
    clock.now += 2
    decision = auto.decide(0, 1)
    assert decision.replicas == 0 and "cooldownPeriod" in decision.reason


def test_min_replicas_are_kept_when_idle() -> None:
    auto, clock = scaler(minReplicaCount=2)
    assert auto.decide(0, 0).replicas == 2
    clock.now += 1000
    assert auto.decide(0, 2).replicas == 2


def test_hold_adds_no_replicas_but_may_activate() -> None:
    auto, _ = scaler()
    assert auto.decide(100, 0, hold=True).replicas == 1
    assert auto.decide(100, 2, hold=True).replicas == 2


def test_replicas_that_keep_receiving_keep_a_fast_actor_from_zero() -> None:
    auto, clock = scaler(scaleDownStabilization="0s")
    auto.decide(3, 0)
    # Given a fast actor whose queue looks empty at every poll, for longer than the
    # cooldown, while its replica keeps receiving (a message now and then, in ms)
    for _ in range(120):
        clock.now += 1
        assert auto.decide(0, 1, busy=True).replicas == 1
    # Then it goes to zero only a cooldownPeriod after messages stop arriving
    clock.now += 59
    assert auto.decide(0, 1).replicas == 1
    clock.now += 2
    assert auto.decide(0, 1).replicas == 0
    assert auto.decide(0, 0, busy=True).replicas == 0, "no replica received anything"


def test_activity_marks_tell_the_supervisor_what_replicas_received(tmp_path: Path) -> None:
    clock = FakeClock(1_700_000_000.0)
    marks = ActivityMarks(tmp_path, clock=clock)
    assert marks.last("fast") == 0.0
    marks.received("fast", None)
    assert ActivityMarks(tmp_path).last("fast") == pytest.approx(clock.now, abs=0.01)
    clock.now += 0.1
    marks.received("fast", None)  # written at most twice a second
    assert ActivityMarks(tmp_path).last("fast") == pytest.approx(clock.now - 0.1, abs=0.01)
    clock.now += 1
    marks.received("fast", None)
    assert ActivityMarks(tmp_path).last("fast") == pytest.approx(clock.now, abs=0.01)

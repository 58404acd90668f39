"""When the supervisor restarts a dead replica: at once after it got going, with a growing
backoff when it dies before (crash-looping), driven by a fake clock; the marks replicas
leave; and how `asya status` shows a crash loop."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from rich.console import Console

from asya_agents.cli import main
from asya_agents.observe.watch import status_table
from asya_agents.restarts import (
    RestartPolicy,
    Restarts,
    is_ready,
    mark_ready,
    record_error,
    take_marks,
)
from tests.conftest import FakeClock


def crash(record: Restarts, clock: FakeClock, *, got_going: bool = False,
          error: str | None = "RuntimeError: weights not found") -> float:
    return record.died(clock(), got_going=got_going, error=error)


def test_a_replica_that_dies_before_getting_going_backs_off_doubling_to_a_cap() -> None:
    # Given an actor whose replicas fail in __init__
    clock, record = FakeClock(), Restarts(RestartPolicy(initial=1.0, maximum=60.0))
    delays = []
    for _ in range(9):
        # When each replica dies and the next starts as soon as it may
        delays.append(crash(record, clock))
        assert not record.may_start(clock())
        clock.advance(record.next_start_in(clock()))
        assert record.may_start(clock())
    # Then the waits double from 1 s and stop at the cap, and the actor is crash-looping
    assert delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert record.crash_looping and record.failures == 9
    assert record.last_error == "RuntimeError: weights not found"


def test_a_replica_that_got_going_is_restarted_at_once_every_time() -> None:
    # Given replicas that load fine and are then killed (a poison message, OOM)
    clock, record = FakeClock(), Restarts()
    for _ in range(10):  # the default maxDeliveries: each delivery kills one
        # When each dies shortly after it got going
        assert crash(record, clock, got_going=True, error="exit code -9") == 0.0
        # Then the next may start at once
        assert record.may_start(clock())
        clock.advance(3.0)
    assert not record.crash_looping and record.last_error == "exit code -9"


def test_a_prompt_restart_clears_a_pending_backoff() -> None:
    clock, record = FakeClock(), Restarts()
    crash(record, clock)
    clock.advance(1.0)
    crash(record, clock)  # 2 s to wait now
    assert crash(record, clock, got_going=True) == 0.0
    assert record.may_start(clock())


def test_replicas_that_get_going_but_die_in_a_burst_are_backed_off_too() -> None:
    # Given a policy allowing 3 deaths of running replicas within 10 s
    clock, record = FakeClock(), Restarts(RestartPolicy(burst=3, window=10.0))
    assert [crash(record, clock, got_going=True) for _ in range(3)] == [0, 0, 0]
    # When a 4th dies within the window, Then it counts as a crash
    assert crash(record, clock, got_going=True) == 1.0
    assert record.crash_looping
    # And deaths spread wider than the window stay prompt
    spread = Restarts(RestartPolicy(burst=3, window=10.0))
    for _ in range(10):
        assert crash(spread, clock, got_going=True) == 0.0
        clock.advance(4.0)


def test_a_replica_that_stays_up_ends_the_crash_loop() -> None:
    # Given a crash-looping actor whose last start got going
    clock, record = FakeClock(), Restarts(RestartPolicy(stable_after=30.0))
    crash(record, clock)
    crash(record, clock)
    started = clock()
    # When it has run for less than stable_after, Then it still counts as looping
    clock.advance(29.0)
    record.up(clock(), since=started)
    assert record.crash_looping
    # When it has stayed up long enough, Then the loop is over and backoff resets
    clock.advance(1.0)
    record.up(clock(), since=started)
    assert not record.crash_looping and record.failures == 0
    assert crash(record, clock) == 1.0


def test_marks_tell_whether_a_replica_got_going_and_why_it_died(tmp_path: Path) -> None:
    # Given a replica that got going, then recorded its error
    mark_ready(tmp_path, pid=41)
    record_error(tmp_path, "ValueError: bad\n  second line", pid=41)
    assert is_ready(tmp_path, 41) and not is_ready(tmp_path, 42)
    # When the supervisor takes its marks, Then it learns both and the files are gone
    assert take_marks(tmp_path, 41) == (True, "ValueError: bad second line")
    assert take_marks(tmp_path, 41) == (False, None)
    assert list((tmp_path / "replicas").iterdir()) == []


def test_asya_status_shows_a_crash_looping_actor_with_its_last_error() -> None:
    report = {"mesh": "m", "transport": "embedded", "running": True,
              "totals": {"succeeded": 0, "failed": 0, "paused": 0, "duplicates": 0},
              "actors": {
                  "heavy": {"depth": 1, "in_flight": 0, "delayed": 0, "replicas": 0,
                            "restarts": 4, "crash_looping": True, "next_restart_in": 8.0,
                            "last_error": "RuntimeError: weights not found: /nowhere"},
                  "fine": {"depth": 0, "in_flight": 0, "delayed": 0, "replicas": 1,
                           "restarts": 0, "crash_looping": False, "next_restart_in": None,
                           "last_error": None}}}
    console = Console(width=150, record=True)
    console.print(status_table(report))
    text = console.export_text()
    assert "0 crash-looping" in text
    assert ("heavy is crash-looping (4 restarts, next start in 8s): "
            "RuntimeError: weights not found: /nowhere") in text
    assert "fine is crash-looping" not in text


# -- a real `asya up` ------------------------------------------------------------------

CRASHLOOP = Path(__file__).parent / "meshes" / "crashloop"


def _status(state: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data


def _until(state: Path, what: str, ok: Callable[[dict[str, Any]], bool],
           timeout: float = 40.0) -> dict[str, Any]:
    """The first status.json for which ``ok`` holds (a real supervisor's clock runs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        actors = _status(state).get("actors", {})
        if actors and ok(actors):
            return dict(actors)
        time.sleep(0.1)
    raise AssertionError(f"{what}: never seen in {_status(state)}")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_asya_up_shows_a_crash_loop_and_restarts_a_replica_that_got_going_at_once(
        tmp_path: Path) -> None:
    # Given the crashloop mesh: `heavy`'s __init__ fails, `fine` gets going
    mesh, state = tmp_path / "crashloop", tmp_path / "state"
    shutil.copytree(CRASHLOOP, mesh, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    state.mkdir()
    with open(state / "up.log", "wb") as log:
        up = subprocess.Popen(
            [sys.executable, "-m", "asya_agents", "up", str(mesh), "--state-dir", str(state)],
            env={**os.environ, "ASYA_LOG_LEVEL": "WARNING"}, start_new_session=True,
            stdout=log, stderr=subprocess.STDOUT)
    try:
        # When it runs, Then `heavy` is crash-looping with its error, restarted with backoff
        actors = _until(state, "heavy crash-looping", lambda a: a["heavy"]["crash_looping"]
                        and a["heavy"]["restarts"] >= 2 and a["fine"]["replicas"] == 1)
        assert "weights not found: /nowhere/sdxl" in actors["heavy"]["last_error"]
        _until(state, "a backoff of 2 s or more", lambda a: (a["heavy"]["next_restart_in"]
                                                             or 0) > 1.0)
        result = CliRunner().invoke(main, ["status", str(mesh), "--state-dir", str(state),
                                           "--json"])
        row = json.loads(result.output)["actors"]["heavy"]
        assert row["crash_looping"] is True and row["restarts"] >= 2
        assert "weights not found" in row["last_error"]
        # And `fine`, killed after it got going, is replaced at once and is not looping
        [pid] = _status(state)["actors"]["fine"]["pids"]
        _until(state, "fine ready", lambda a: is_ready(state, pid))
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        actors = _until(state, "fine replaced", lambda a: a["fine"]["pids"] not in ([], [pid]))
        assert time.monotonic() - killed < 10
        assert actors["fine"]["crash_looping"] is False and actors["fine"]["restarts"] == 1
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
    text = (state / "up.log").read_text()
    # each failed start of `heavy` is one line, not a traceback a hundred times a minute
    assert "Traceback" not in text
    assert text.count("weights not found") >= 2


def test_a_replica_killed_from_outside_before_it_got_going_is_restarted_at_once() -> None:
    # Given replicas SIGKILLed while they start (a chaos test, the OOM killer, an operator)
    clock, record = FakeClock(), Restarts(RestartPolicy(burst=30, window=60.0))
    delays = []
    for _ in range(10):
        # When each is killed before it got going, with no error of its own
        delays.append(record.died(clock(), got_going=False, error="exit code -9",
                                  killed=True))
        clock.advance(2.0)
    # Then each is replaced at once and the actor is not crash-looping
    assert delays == [0.0] * 10 and not record.crash_looping
    # But kills in a tight loop past the burst still back off
    for _ in range(25):
        record.died(clock(), got_going=False, error="exit code -9", killed=True)
    assert record.crash_looping and record.next_start_in(clock()) > 0

"""End to end: ``asya up`` keeps the mesh's history, ``asya status --watch`` draws it.

A real supervisor runs the ``slow`` mesh (one ``nap`` replica) in a temporary state
folder; envelopes go in with ``asya send``; the supervisor's ``history.jsonl`` must then
count them, and ``asya status --watch`` (in a subprocess, once on a pseudo-terminal as a
person runs it and stops it with Ctrl-C) must show the history as sparklines, before
and after the supervisor stops.
"""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.observe.history import read_history

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]

SLOW = Path(__file__).parent / "meshes" / "slow"
SENT = 6
BLOCKS = set("▁▂▃▄▅▆▇█")


def _asya(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asya_agents", *args], env=env,
                          capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture(scope="module")
def mesh_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Any]]:
    """The slow mesh under `asya up`, with SENT naps done: (mesh, state, process)."""
    tmp = tmp_path_factory.mktemp("history")
    mesh, state = tmp / "slow", tmp / "state"
    shutil.copytree(SLOW, mesh, ignore=shutil.ignore_patterns(".asya", "__pycache__"))
    state.mkdir()
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING", "ASYA_STATE_DIR": str(state)}
    with open(state / "up.log", "wb") as log:
        up = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(mesh)],
                              env=env, start_new_session=True, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        sent = _asya("send", str(mesh), "--payload", json.dumps({"seconds": 0.05}),
                     "--count", str(SENT), "--wait", "--timeout", "60", env=env)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        yield mesh, state, up
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            try:
                up.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait()


def _until(state: Path, what: str, ok: Callable[[list[dict[str, Any]]], bool]
           ) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        samples = read_history(state)
        if ok(samples):
            return samples
        time.sleep(0.2)
    raise AssertionError(f"{what}: never seen in {read_history(state)[-3:]}")


def _naps_counted(samples: list[dict[str, Any]]) -> bool:
    """The ring counts every nap, and has two samples since (so the rate is known)."""
    counted = [i for i, s in enumerate(samples)
               if s["actors"].get("nap", {}).get("succeeded", 0) >= SENT]
    return bool(counted) and len(samples) - counted[0] >= 3


def test_the_supervisor_keeps_a_bounded_history_of_every_actor(
        mesh_up: tuple[Path, Path, Any]) -> None:
    _, state, _ = mesh_up
    # When the naps are done and the supervisor sampled on
    samples = _until(state, "the naps counted", _naps_counted)
    # Then each sample has every actor, crew included, with its counts and hops
    last = samples[-1]
    assert set(last["actors"]) == {"nap", "happy-end", "error-end"}
    assert last["actors"]["nap"]["replicas"] == 1
    assert last["actors"]["nap"]["succeeded"] == SENT
    assert last["totals"]["succeeded"] == SENT and last["totals"]["failed"] == 0
    # in time order, one run, a few seconds apart
    times = [s["at"] for s in samples]
    assert times == sorted(times) and len({s["run"] for s in samples}) == 1


def test_watch_shows_the_history_as_sparklines(mesh_up: tuple[Path, Path, Any]) -> None:
    mesh, state, _ = mesh_up
    _until(state, "the naps counted", _naps_counted)
    env = {**os.environ, "ASYA_STATE_DIR": str(state), "COLUMNS": "160"}
    # When the live view refreshes twice, as JSON and as text
    out = _asya("status", str(mesh), "--watch", "--json", "--count", "2",
                "--interval", "0.3", env=env)
    assert out.returncode == 0, out.stderr
    first, _ = (json.loads(line) for line in out.stdout.splitlines())
    shown = _asya("status", str(mesh), "--watch", "--count", "2", "--interval", "0.3",
                  env=env)
    assert shown.returncode == 0, shown.stderr
    # Then the first refresh already has the history: nap's hops done, as blocks
    nap = first["history"]["actors"]["nap"]
    assert first["history"]["samples"] >= 3
    assert nap["done/s"]["max"] > 0 and set(nap["done/s"]["line"]) <= BLOCKS | {" "}
    assert nap["replicas"]["line"].endswith("█") and nap["replicas"]["latest"] == 1
    assert "history: the last" in shown.stdout, shown.stdout
    lines, actor = {}, ""
    for line in shown.stdout.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 5 and BLOCKS & set(cells[2]):
            actor = cells[0] or actor
            lines[(actor, cells[1])] = cells[2:]
    assert set(lines) >= {("nap", "depth"), ("nap", "done/s"), ("happy-end", "replicas")}
    line, now, top = lines[("nap", "replicas")]
    assert line.endswith("█") and (now, top) == ("1", "1"), shown.stdout
    assert float(lines[("nap", "done/s")][2]) > 0


def test_watch_stops_cleanly_on_ctrl_c(mesh_up: tuple[Path, Path, Any]) -> None:
    mesh, state, _ = mesh_up
    _until(state, "the naps counted", _naps_counted)
    # Given `asya status --watch` on a terminal, refreshing until stopped
    leader, follower = pty.openpty()
    env = {**os.environ, "ASYA_STATE_DIR": str(state), "COLUMNS": "160", "TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "asya_agents", "status", str(mesh),
                             "--watch", "--interval", "0.3"], env=env, stdin=follower,
                            stdout=follower, stderr=follower, start_new_session=True)
    os.close(follower)
    try:
        screen = _read_until(leader, lambda text: "▁" in text or "█" in text)
        # When the person presses Ctrl-C
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        screen += _read_rest(leader)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)
    # Then it drew the sparklines, exits 0 without a traceback and gives the cursor back
    assert "nap" in screen
    assert code == 0 and "Traceback" not in screen, screen[-2000:]
    assert screen.rfind("\x1b[?25h") > screen.rfind("\x1b[?25l") >= 0


def test_the_history_outlives_the_supervisor(mesh_up: tuple[Path, Path, Any]) -> None:
    mesh, state, up = mesh_up
    _until(state, "the naps counted", _naps_counted)
    # When the supervisor stops
    up.send_signal(signal.SIGTERM)
    assert up.wait(60) == 0
    # Then the history stays for whoever reads it next
    env = {**os.environ, "ASYA_STATE_DIR": str(state)}
    out = _asya("status", str(mesh), "--watch", "--json", "--count", "1", env=env)
    [report] = [json.loads(line) for line in out.stdout.splitlines()]
    nap = report["history"]["actors"]["nap"]
    assert nap["done/s"]["max"] > 0 and nap["depth"]["line"]
    assert report["history"]["samples"] == min(len(read_history(state)), 30)


def _read_until(fd: int, done: Callable[[str], bool]) -> str:
    text = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not done(text):
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            text += os.read(fd, 65536).decode("utf-8", errors="replace")
    assert done(text), f"never drawn: {text[-2000:]!r}"
    return text


def _read_rest(fd: int) -> str:
    text = ""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            return text
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # the other end closed
            return text
        if not chunk:
            return text
        text += chunk.decode("utf-8", errors="replace")

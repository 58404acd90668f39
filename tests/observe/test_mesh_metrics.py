"""End to end: ``asya up`` as a real process tree, scraped over HTTP.

The example mesh runs on the embedded transport in a temporary state folder; envelopes
go in with ``asya send``; then every replica's /metrics (found through ``asya status
--json``) must count exactly what was sent, the supervisor's /metrics must show its
scaling decisions, the JSON logs of all replicas must carry one trace id per root
across every hop, and ``asya results --id`` must show the same trace and the path.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.observe.scrape import scrape, total
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TEXT = "Hi there. How are you? Fine."  # 3 sentences, one question
SENT = 6
#: What each actor of mesh/example must count for SENT texts of TEXT.
EXPECTED = {"split": SENT, "triage": 3 * SENT, "answer": SENT, "format": 3 * SENT,
            "happy-end": 3 * SENT}

_COUNTED = ("asya_envelopes_received_total", "asya_envelopes_succeeded_total",
            "asya_envelopes_failed_total", "asya_handler_duration_seconds_count")


def _asya(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "asya_agents", *args], env=env,
                          capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture(scope="module")
def mesh_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], Path]]:
    """One mesh for the tests of this module (starting one takes seconds)."""
    example_mesh = ROOT / "mesh" / "example"
    tmp_path = tmp_path_factory.mktemp("mesh-up")
    env = {**os.environ, "ASYA_STATE_DIR": str(tmp_path / "state"), "ASYA_LOG_FORMAT": "json",
           "ASYA_METRICS_PORT": "0"}
    log = tmp_path / "mesh.log"
    with log.open("w") as sink:
        # logs go to stderr (the replicas inherit it), the banner to stdout
        proc = subprocess.Popen([sys.executable, "-m", "asya_agents", "up", str(example_mesh)],
                                env=env, stdout=subprocess.DEVNULL, stderr=sink,
                                start_new_session=True)
    try:
        yield env, log
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _status(example_mesh: Path, env: dict[str, str]) -> dict[str, Any]:
    out = _asya("status", str(example_mesh), "--json", env=env)
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def _wait_for_urls(example_mesh: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """Every actor that handled something lists one URL per running replica."""
    deadline = time.monotonic() + 30
    while True:
        actors = _status(example_mesh, env)["actors"]
        urls = {name: row["metrics"] for name, row in actors.items()}
        if all(urls[a] and len(urls[a]) == actors[a]["replicas"] for a in EXPECTED):
            return urls
        assert time.monotonic() < deadline, f"replicas never listed their metrics: {actors}"
        time.sleep(0.2)


def _counts(urls: list[str], metric: str, actor: str) -> float:
    found = 0.0
    for url in urls:
        samples = scrape(url)
        assert samples is not None, f"{url} did not answer"
        found += total(samples, metric).get(actor, 0.0)
    return found


def test_running_mesh_counts_what_was_sent_and_keeps_one_trace_per_root(
    example_mesh: Path, mesh_up: tuple[dict[str, str], Path]
) -> None:
    env, log = mesh_up
    # Given a running mesh (counting from what its replicas counted so far)
    before = _status(example_mesh, env)["actors"]
    base = {(a, m): _counts(before[a]["metrics"], m, a) for a in EXPECTED for m in _COUNTED}
    # When SENT texts are sent and have all ended
    sent = _asya("send", str(example_mesh), "--payload", json.dumps({"text": TEXT}),
                 "--count", str(SENT), "--wait", "--timeout", "60", env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert f"{3 * SENT} succeeded, 0 failed" in sent.stdout
    # Then every replica's /metrics, listed by `asya status --json`, counts them exactly
    urls = _wait_for_urls(example_mesh, env)
    for actor, expected in EXPECTED.items():
        counted = {m: _counts(urls[actor], m, actor) - base[actor, m] for m in _COUNTED}
        assert counted == {"asya_envelopes_received_total": expected,
                           "asya_envelopes_succeeded_total": expected,
                           "asya_envelopes_failed_total": 0,
                           "asya_handler_duration_seconds_count": expected}, actor
    # and the supervisor's /metrics shows the autoscaler's decisions
    sup = json.loads((Path(env["ASYA_STATE_DIR"]) / "status.json").read_text())
    decisions = scrape(sup["metrics"])
    assert decisions is not None
    assert total(decisions, "asya_autoscaler_desired_replicas")["split"] >= 1
    assert total(decisions, "asya_autoscaler_scale_events_total", direction="up")["split"] >= 1

    # and each root kept one trace id across every hop, in every replica's log lines
    traces: dict[str, set[str]] = defaultdict(set)
    actors: dict[str, set[str]] = defaultdict(set)
    for line in log.read_text().splitlines():
        event = json.loads(line)  # every line is JSON
        if event.get("event") == "succeeded":
            traces[event["root_id"]].add(event["trace_id"])
            actors[event["root_id"]].add(event["actor"])
    roots = re.findall(r"\b[0-9a-f]{12}\b", sent.stdout.splitlines()[0])
    assert len(roots) == 5, sent.stdout  # `asya send` shows the first five ids
    for root in roots:
        assert len(traces[root]) == 1, f"{root} changed trace: {traces[root]}"
        assert actors[root] == set(EXPECTED), actors[root]
        # and `asya results --id` shows that trace and the path with timings per hop
        shown = _asya("results", str(example_mesh), "--id", root, "--json", env=env)
        pieces = json.loads(shown.stdout)
        assert len(pieces) == 3
        assert {p["trace_id"] for p in pieces} == traces[root]
        paths = sorted([h["actor"] for h in p["path"]] for p in pieces)
        assert paths == [["split", "triage", "answer", "format"],
                         ["split", "triage", "format"], ["split", "triage", "format"]]
        assert all(h["took"] >= 0 and h["waited"] >= 0 for p in pieces for h in p["path"])


def test_watch_prints_rates_per_actor(
    example_mesh: Path, mesh_up: tuple[dict[str, str], Path]
) -> None:
    env, _ = mesh_up
    sent = _asya("send", str(example_mesh), "--payload", json.dumps({"text": TEXT}),
                 "--wait", "--timeout", "60", env=env)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    _wait_for_urls(example_mesh, env)
    # When the live view refreshes twice (one JSON line per refresh)
    out = _asya("status", str(example_mesh), "--watch", "--json", "--count", "2",
                "--interval", "0.3", env=env)
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    # Then rates appear from the second refresh on, beside the queue and replica counts
    assert first["actors"]["split"]["throughput"] is None
    assert second["actors"]["split"]["throughput"] == 0.0  # nothing moved in between
    assert second["actors"]["split"]["replicas"] == 1
    assert second["totals"]["succeeded"] >= 3 and second["rates"]["succeeded"] == 0.0

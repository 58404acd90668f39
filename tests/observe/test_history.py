"""The history ring the supervisor keeps (``history.jsonl``), and what reads it: rates,
sparklines and ``asya status --watch``."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from asya_agents.observe.history import (
    HISTORY_FILE,
    Counters,
    Recorder,
    Ring,
    read_history,
    series,
    sparkline,
    thinned,
    totals_series,
)
from asya_agents.observe.scrape import Samples, parse_metrics
from asya_agents.observe.watch import Watcher, render, sparklines


def sample(at: float, *, depth: int = 0, done: float = 0.0, failed: float = 0.0,
           run: float = 1.0, totals: dict[str, int] | None = None) -> dict[str, Any]:
    row = {"depth": depth, "in_flight": 1, "replicas": 2, "desired": 2,
           "succeeded": done, "failed": failed}
    return {"at": at, "run": run, "actors": {"judge": row}, "totals": totals}


def _text(renderable: Any) -> str:
    console = Console(record=True, width=140)
    console.print(renderable)
    return console.export_text()


def test_the_ring_keeps_the_last_samples_by_count_and_by_age(tmp_path: Path) -> None:
    # Given a ring of 5 samples that forgets what is older than 20 s
    ring = Ring(tmp_path, keep=5, max_age=20.0)
    # When 8 samples 2 s apart go in, then one 30 s later
    for i in range(8):
        ring.add(sample(100.0 + 2 * i, depth=i))
    assert [s["actors"]["judge"]["depth"] for s in read_history(tmp_path)] == [3, 4, 5, 6, 7]
    ring.add(sample(144.0, depth=99))
    # Then only the last five stay, and then only what is younger than 20 s
    assert [s["at"] for s in read_history(tmp_path)] == [144.0]
    # and a reader can leave out what is older than it wants
    assert read_history(tmp_path, now=200.0, max_age=30.0) == []


def test_a_ring_needs_room_for_a_rate_and_samples_need_a_time(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 samples, not 1"):
        Ring(tmp_path, keep=1)
    with pytest.raises(ValueError, match="needs 'at' and 'actors'"):
        Ring(tmp_path).add({"actors": {}})


def test_a_reader_never_sees_half_a_ring(tmp_path: Path) -> None:
    # Given a writer adding 300 samples while a reader reads the file as fast as it can
    ring = Ring(tmp_path, keep=200)
    seen: list[int] = []
    broken: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                text = (tmp_path / HISTORY_FILE).read_text()
            except FileNotFoundError:
                continue
            lines = text.splitlines()
            try:
                assert json.loads(lines[0])["version"] == 1
                seen.append(len([json.loads(line)["at"] for line in lines[1:]]))
            except (ValueError, AssertionError, IndexError) as exc:
                broken.append(f"{exc!r} in {text[-80:]!r}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(300):
            ring.add(sample(1000.0 + i, depth=i))
    finally:
        done.set()
        reader.join()
    # Then every read was a whole ring, and no temporary file is left behind
    assert broken == [] and len(seen) > 0
    assert all(1 <= n <= 200 for n in seen)
    assert [p.name for p in tmp_path.iterdir()] == [HISTORY_FILE]


def test_a_restarted_supervisor_goes_on_from_the_ring_and_breaks_the_rates(
        tmp_path: Path) -> None:
    # Given a ring written by one supervisor run
    first = Ring(tmp_path)
    first.add(sample(100.0, done=10.0, run=1.0))
    first.add(sample(102.0, done=20.0, run=1.0))
    # When a new supervisor (another run, counters from zero) opens it and goes on
    second = Ring(tmp_path)
    second.add(sample(110.0, done=2.0, run=2.0))
    second.add(sample(112.0, done=6.0, run=2.0))
    # Then the history holds both runs
    samples = read_history(tmp_path)
    assert [s["at"] for s in samples] == [100.0, 102.0, 110.0, 112.0]
    # and a rate is known within a run only: no spike, no dip across the restart
    assert [p.succeeded_per_s for p in series(samples)] == [None, 5.0, None, 2.0]


def test_an_unreadable_or_foreign_ring_reads_as_no_history(tmp_path: Path) -> None:
    (tmp_path / HISTORY_FILE).write_text("{not json")
    assert read_history(tmp_path) == [] and Ring(tmp_path).samples == []
    (tmp_path / HISTORY_FILE).write_text('{"version": 99}\n{"at": 1.0, "actors": {}}\n')
    assert read_history(tmp_path) == []
    (tmp_path / HISTORY_FILE).write_text('{"version": 1}\n{"at": 1.0, "actors": {}}\n'
                                         '{"at": "x"}\n[]\n{"at": 3.0, "act')
    assert read_history(tmp_path) == [{"at": 1.0, "actors": {}}]  # the rest skipped
    assert Ring(tmp_path).samples == [{"at": 1.0, "actors": {}}]  # and a writer goes on


def test_a_reader_parses_only_the_samples_it_wants(tmp_path: Path) -> None:
    ring = Ring(tmp_path)
    for i in range(10):
        ring.add(sample(100.0 + i, depth=i))
    assert [s["at"] for s in read_history(tmp_path, last=3)] == [107.0, 108.0, 109.0]
    assert (tmp_path / HISTORY_FILE).read_text().count("\n") == 11  # header + 10


def test_a_long_history_is_thinned_evenly_keeping_the_latest() -> None:
    samples = [sample(float(i)) for i in range(10)]
    assert [s["at"] for s in thinned(samples, most=4)] == [0.0, 3.0, 6.0, 9.0]
    assert thinned(samples, most=10) == samples
    # rates between the kept samples are the averages over the ones left out
    counted = [sample(2.0 * i, done=float(i * i)) for i in range(7)]
    kept = thinned(counted, most=3)
    assert [p.succeeded_per_s for p in series(kept)] == [None, 1.5, 4.5]


def test_counters_follow_replicas_that_come_go_and_restart() -> None:
    counters = Counters()

    def page(done: int, failed: int = 0) -> Samples:
        return parse_metrics(f'asya_envelopes_succeeded_total{{actor="judge"}} {done}\n'
                             f'asya_envelopes_failed_total{{actor="judge",reason="x"}} '
                             f'{failed}\n')

    counters.update("judge", "http://a", page(5))
    counters.update("judge", "http://b", page(3, 1))
    counters.update("judge", "http://a", page(8))  # +3
    counters.update("judge", "http://b", None)  # did not answer: no news
    counters.update("judge", "http://b", page(2))  # restarted on the same port: +2
    assert counters.of("judge") == {"succeeded": 13.0, "failed": 1.0}
    assert counters.of("upload") == {"succeeded": 0.0, "failed": 0.0}


async def test_the_recorder_samples_the_supervisors_status_and_the_replicas(
        tmp_path: Path) -> None:
    # Given a recorder whose replica pages and store totals the test hands in
    pages = [parse_metrics('asya_envelopes_succeeded_total{actor="judge"} 4\n'),
             parse_metrics('asya_envelopes_succeeded_total{actor="judge"} 10\n')]
    ended = [{"succeeded": 1, "failed": 0}, {"succeeded": 5, "failed": 1}]
    recorder = Recorder(tmp_path, totals=lambda: ended.pop(0), scrape=lambda _: pages.pop(0))
    status = {"updated": 500.0, "actors": {
        "judge": {"replicas": 1, "desired": 2, "depth": 7, "in_flight": 3,
                  "metrics": ["http://127.0.0.1:1/metrics"]},
        "upload": {"replicas": 0, "desired": 0, "depth": 0, "in_flight": 0, "metrics": []}}}
    # When it records two samples 2 s apart
    await recorder.record(status)
    await recorder.record({**status, "updated": 502.0})
    # Then the ring holds what the supervisor knew, the hops counted, the store's totals
    first, second = read_history(tmp_path)
    assert first["actors"]["judge"] == {"depth": 7, "in_flight": 3, "replicas": 1,
                                        "desired": 2, "succeeded": 4.0, "failed": 0.0}
    assert second["actors"]["upload"]["succeeded"] == 0.0
    assert [p.succeeded_per_s for p in series([first, second]) if p.actor == "judge"] == \
        [None, 3.0]
    assert totals_series([first, second]) == [
        {"at": 502.0, "succeeded/s": 2.0, "failed/s": 0.5, "error rate": 0.2}]


async def test_a_failing_sample_is_logged_and_the_supervisor_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, int]:
        raise OSError("results.db is locked")

    recorder = Recorder(tmp_path, totals=broken)
    await recorder.record({"updated": 1.0, "actors": {}})
    assert "no history sample: results.db is locked" in caplog.text
    assert read_history(tmp_path) == []


def test_sparklines_scale_from_zero_to_the_largest_value() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([None, 2.0, 4.0]) == " ▅█"
    assert sparkline([7, 7, 0, 7], width=2) == "▁█"  # the last two, scaled to them


def test_watch_draws_the_rings_history_as_sparklines_per_actor(tmp_path: Path) -> None:
    # Given a ring: judge's backlog grows, then drains at 2 hops a second
    ring = Ring(tmp_path)
    depths = [0, 2, 4, 8, 16, 8, 4, 0]
    for i, depth in enumerate(depths):
        ring.add(sample(1000.0 + 2 * i, depth=depth, done=4.0 * i))
    # When the last five samples become sparklines
    history = sparklines(read_history(tmp_path), width=5)
    # Then each line shows the history, scaled to its own largest value
    judge = history["actors"]["judge"]
    assert (history["samples"], history["seconds"]) == (5, 8.0)
    assert judge["depth"] == {"line": "▅█▅▃▁", "latest": 0, "max": 16}
    assert judge["done/s"] == {"line": "█████", "latest": 2.0, "max": 2.0}
    # and the live view prints them under the table
    report = {"mesh": "m", "transport": "embedded", "running": False,
              "actors": {"judge": {"depth": 0, "in_flight": 0, "delayed": 0, "replicas": 0,
                                   "throughput": None, "errors": None}},
              "totals": {"succeeded": 0, "failed": 0, "paused": 0, "duplicates": 0},
              "rates": {"succeeded": None, "failed": None}, "history": history}
    text = _text(render(report))
    assert "history: the last 8 s (5 samples)" in text
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in text.splitlines()
            if any(b in line for b in "▁▅█")]
    assert rows == [["judge", "depth", "▅█▅▃▁", "0", "16"],
                    ["", "in flight", "█████", "1", "1"],
                    ["", "replicas", "█████", "2", "2"],
                    ["", "done/s", "█████", "2.0", "2.0"],
                    ["", "errors/s", "▁▁▁▁▁", "0.0", "0.0"]]


async def test_the_watcher_reads_the_history_from_the_first_refresh(tmp_path: Path) -> None:
    ring = Ring(tmp_path)
    for i in range(3):
        ring.add(sample(10.0 + i, depth=i))

    async def snapshot() -> dict[str, Any]:
        return {"actors": {}, "totals": {"succeeded": 0, "failed": 0}}

    watcher = Watcher(snapshot, history=lambda: read_history(tmp_path), clock=lambda: 0.0)
    report = await watcher.report()
    assert report["history"]["actors"]["judge"]["depth"]["line"] == "▁▅█"
    assert "no history yet" in _text(render({**report, "mesh": "m", "transport": "x",
                                             "running": False, "history": None,
                                             "totals": {"succeeded": 0, "failed": 0,
                                                        "paused": 0, "duplicates": 0}}))

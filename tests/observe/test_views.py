"""What ``asya status --watch`` and ``asya results --id`` compute from samples and hops."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

from asya_agents.envelope import Envelope, Hop
from asya_agents.observe.paths import describe_path, hop_timings, render_paths
from asya_agents.observe.scrape import Rates, Samples, parse_metrics, total
from asya_agents.observe.watch import Watcher, render
from asya_agents.status import snapshot
from asya_agents.stores import SQLiteResultStore
from asya_agents.transports import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport

EXPOSITION = """\
# HELP asya_envelopes_failed_total Hops that failed, by reason
# TYPE asya_envelopes_failed_total counter
asya_envelopes_failed_total{actor="judge",reason="timeout"} 3.0
asya_envelopes_failed_total{actor="judge",reason="handler-error"} 2.0
asya_envelopes_failed_total{actor="say \\"hi\\"",reason="x"} 1.0
process_cpu_seconds_total 1.5
not a metric line
"""


def test_the_text_format_is_read_back_and_summed_per_actor() -> None:
    samples = parse_metrics(EXPOSITION)
    assert samples[("process_cpu_seconds_total", ())] == 1.5
    assert total(samples, "asya_envelopes_failed_total") == {"judge": 5.0, 'say "hi"': 1.0}
    assert total(samples, "asya_envelopes_failed_total", reason="timeout") == {"judge": 3.0}


def test_rates_follow_counters_that_come_go_and_restart() -> None:
    rates = Rates()
    # Given a first sample, no rate can be known yet
    assert rates.update(10.0, {"a": 5.0, "b": 100.0}) == {}
    # When 2 s later `a` grew by 4, `b` restarted (went down) and `c` appeared
    got = rates.update(12.0, {"a": 9.0, "b": 6.0, "c": 3.0})
    # Then a restarted or new counter counts from zero
    assert got == {"a": 2.0, "b": 3.0, "c": 1.5}


def test_hop_timings_split_queue_wait_from_handler_time() -> None:
    env = Envelope.create({}, ["a", "b"], now=100.0)
    env.meta.hops = [Hop(actor="a", started=100.5, ended=101.0),
                     Hop(actor="b", started=103.0, ended=103.25, attempt=2)]
    first, second = hop_timings(env.to_dict())
    assert (first.waited, first.took, first.at) == (0.5, 0.5, 0.5)
    assert (second.waited, second.took, second.at, second.attempt) == (2.0, 0.25, 3.0, 2)
    record = {"id": env.id, "status": "succeeded", "recorded_at": 104.0, "error": None}
    described = describe_path(record, env.to_dict())
    assert described["total"] == 4.0 and len(described["path"]) == 2
    assert described["trace_id"] == env.headers["traceparent"].split("-")[1]
    text = _text(render_paths([described]))
    assert "succeeded in 4.00s" in text and "250.0ms" in text and "2.00s" in text


def _text(renderable: Any) -> str:
    console = Console(record=True, width=120)
    console.print(renderable)
    return console.export_text()


def test_the_live_view_shows_rates_once_known() -> None:
    row = {"depth": 7, "in_flight": 2, "delayed": 1, "replicas": 3, "metrics": []}
    report = {"mesh": "m", "transport": "embedded", "running": True,
              "actors": {"judge": {**row, "throughput": 12.5, "errors": 0.5},
                         "upload": {**row, "throughput": None, "errors": None}},
              "totals": {"succeeded": 10, "failed": 1, "paused": 0, "duplicates": 0},
              "rates": {"succeeded": 2.0, "failed": None}}
    text = _text(render(report))
    judge = next(line for line in text.splitlines() if "judge" in line)
    upload = next(line for line in text.splitlines() if "upload" in line)
    assert [cell.strip() for cell in judge.split("│")[1:-1]] == \
        ["judge", "7", "2", "1", "3", "12.5", "0.5"]
    assert upload.count("–") == 2
    assert "succeeded 10 (2.0/s), failed 1 (–/s)" in text


async def test_watcher_rates_come_from_successive_scrapes(tmp_path: Path) -> None:
    # Given a queue with 2 ready messages, one replica of `judge` and a clock we move
    transport = EmbeddedTransport(tmp_path / "q.db")
    await transport.ensure_queues(["judge"])
    await transport.send([Outgoing("judge", b"{}"), Outgoing("judge", b"{}")])
    store = SQLiteResultStore(tmp_path / "results.db")
    url = "http://replica/metrics"
    pages: list[Samples | None] = [
        parse_metrics('asya_envelopes_succeeded_total{actor="judge"} 10\n'),
        parse_metrics('asya_envelopes_succeeded_total{actor="judge"} 20\n'
                      'asya_envelopes_failed_total{actor="judge",reason="timeout"} 4\n'),
        None,  # the third scrape times out
    ]
    now = [100.0]
    supervisor = {"actors": {"judge": {"replicas": 1, "metrics": [url]}}}
    watcher = Watcher(lambda: snapshot(mesh="m", transport_kind="embedded", actors=["judge"],
                                       transport=transport, store=store,
                                       supervisor=supervisor),
                      clock=lambda: now[0], scrape=lambda _: pages.pop(0))
    try:
        # When it reports three times, 2 s apart
        reports = []
        for _ in range(3):
            reports.append(await watcher.report())
            now[0] += 2.0
    finally:
        await transport.close()
        store.close()
    rows = [r["actors"]["judge"] for r in reports]
    # Then queue and replicas come from the transport and the supervisor
    assert (rows[0]["depth"], rows[0]["replicas"]) == (2, 1)
    # and throughput and errors are rates between scrapes; a failed scrape is no news
    assert (rows[0]["throughput"], rows[0]["errors"]) == (None, None)
    assert (rows[1]["throughput"], rows[1]["errors"]) == (5.0, 2.0)
    assert (rows[2]["throughput"], rows[2]["errors"]) == (0.0, 0.0)

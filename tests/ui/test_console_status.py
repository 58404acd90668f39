"""The mesh status page and the console's back end: queue counts per actor, totals,
throughput from samples of the result store, the latest errors, and replay."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from asya_agents.envelope import Envelope, ErrorInfo
from asya_agents.observe.history import Ring
from asya_agents.stores import open_result_store
from asya_agents.transports import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport
from tests.ui.conftest import MESH, Parking
from tests.ui.test_console_flows import plain, queued, signed_in, texts
from ui.console import Console, ConsoleConfig, Sample, rates


def fail_one(parking: Parking, *, reason: str = "attempts-exhausted") -> str:
    """An envelope that failed at `judge`, recorded as error-end records it."""
    env = Envelope.create({"image_url": "file:///nowhere.png"}, ["enhance", "judge", "upload"])
    env = env.advanced()
    env.meta.error = ErrorInfo(type="builtins.KeyError", message="'enhanced_url'",
                               traceback="Traceback (most recent call last): ...",
                               actor="judge", attempt=3, reason=reason)
    store = open_result_store(parking.store_url, state_dir=parking.state_dir)
    try:
        store.record("failed", env.to_dict())
    finally:
        store.close()
    return env.id


def enqueue(parking: Parking, actor: str, count: int) -> None:
    async def send() -> None:
        tr = EmbeddedTransport(parking.state_dir / "queues.db")
        try:
            await tr.send([Outgoing(actor, Envelope.create({}, [actor]).encode())
                           for _ in range(count)])
        finally:
            await tr.close()

    asyncio.run(send())


def test_status_page_shows_queues_totals_and_errors_and_replays(console_env: Parking) -> None:
    # Given a backlog on enhance, an item in review and a failure at judge
    enqueue(console_env, "enhance", 3)
    console_env.park("soup")
    failed = fail_one(console_env)
    at = signed_in("alice")
    # When alice opens the status page
    at.switch_page("views/status.py").run()
    # Then she sees the depth of each queue, the totals and the error with its reason
    rows = at.dataframe[0].value.set_index("name")
    assert list(rows.index) == ["enhance", "judge", "review", "upload", "happy-end", "error-end"]
    assert rows.loc["enhance", "depth"] == 3 and rows.loc["judge", "depth"] == 0
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Failed"] == "1" and metrics["Paused"] == "1"
    assert metrics["Waiting for review"] == "1"
    [title] = [plain(e.label) for e in at.expander]
    assert title.startswith(f"`{failed}` · at judge · KeyError")
    assert any("attempts-exhausted" in plain(m.value) for m in at.markdown)
    # When she replays it
    at.button(key=f"replay-{failed}").click().run()
    # Then it is back on judge's queue as a first attempt, and no longer listed as failed
    assert any(f"{failed}: replayed to judge" in s for s in texts(at.success))
    [again] = [e for e in queued(console_env.state_dir, "judge") if e["id"] == failed]
    assert again["meta"]["attempt"] == 1 and again["meta"]["error"] is None  # type: ignore[index]
    assert not at.expander and {m.label: m.value for m in at.metric}["Failed"] == "0"


def test_a_rejection_in_review_is_listed_but_not_replayable(console_env: Parking) -> None:
    rejected = fail_one(console_env, reason="rejected-in-review")
    at = signed_in("alice")
    at.switch_page("views/status.py").run()
    assert [e.label.split(" ")[0] for e in at.expander] == [f"`{rejected}`"]
    assert not [b for b in at.button if b.key == f"replay-{rejected}"]
    assert any("not replayable" in c.value for c in at.caption)


def test_sign_out_returns_to_the_sign_in_form(console_env: Parking) -> None:
    at = signed_in("bob")
    at.button(key="sign-out").click().run()
    assert "reviewer" not in at.session_state
    assert at.text_input(key="sign-in-name")
    fresh = AppTest.from_file(str(at._script_path), default_timeout=30).run()
    assert not [b for b in fresh.button if b.key == "sign-out"]


def test_throughput_and_error_rate_come_from_samples_of_the_totals(console_env: Parking) -> None:
    # Given a console whose clock the test moves
    now = [1000.0]
    console = Console(ConsoleConfig(MESH, state_dir=console_env.state_dir,
                                    store_url=console_env.store_url), clock=lambda: now[0])
    try:
        console.sample()
        for i in range(8):  # 8 envelopes end in 2 seconds: 6 succeed, 2 fail
            env = Envelope.create({"i": i}, ["upload"]).to_dict()
            console.results.record("succeeded" if i < 6 else "failed", env)
        now[0] += 2.0
        samples = console.sample()
        now[0] += 0.5
        assert len(console.sample(min_interval=1.0)) == 2  # too soon for another sample
    finally:
        console.close()
    [point] = rates(samples)
    assert point["succeeded/s"] == 3.0 and point["failed/s"] == 1.0
    assert point["error rate"] == 0.25


def test_rates_skip_a_reset_counter_and_equal_times() -> None:
    points = rates([Sample(0, 10, 0), Sample(0, 12, 0), Sample(1, 0, 0), Sample(3, 4, 4)])
    assert [(p["succeeded/s"], p["failed/s"], p["error rate"]) for p in points] == [
        (0.0, 0.0, 0.0), (2.0, 2.0, 0.5)]


def test_text_from_handlers_is_shown_literally() -> None:
    from ui.console import md_escape

    assert md_escape("![pixel](http://x/y.png) *bold*") == \
        "\\!\\[pixel\\]\\(http\\:\u2060\\/\\/x\\/y\\.png\\) \\*bold\\*"


def _supervisor_history(state_dir: Path, *, now: float, samples: int = 30) -> None:
    """A ring as `asya up` writes it: a backlog on enhance drained by 1..3 replicas."""
    ring = Ring(state_dir)
    for i in range(samples):
        depth = max(40 - 3 * i, 0)
        rows = {name: {"depth": 0, "in_flight": 0, "replicas": 0, "desired": 0,
                       "succeeded": 0.0, "failed": 0.0}
                for name in ("enhance", "judge", "upload", "happy-end", "error-end")}
        rows["enhance"] = {"depth": depth, "in_flight": min(i, 3), "replicas": min(i, 3),
                           "desired": min(i, 3), "succeeded": 3.0 * i, "failed": 0.0}
        ring.add({"at": now - 2.0 * (samples - i), "run": 1.0, "actors": rows,
                  "totals": {"succeeded": 3 * i, "failed": i // 3}})


def chart_specs(at: AppTest) -> dict[str, tuple[dict[str, Any], Any]]:
    """Every Altair chart on the page by title: its Vega-Lite spec and its data (the
    frame Streamlit sends beside the spec, as Arrow)."""
    import pyarrow as pa

    found = {}
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        [dataset] = element.proto.datasets
        found[spec["title"]] = (spec, pa.ipc.open_stream(dataset.data.data).read_all()
                                .to_pandas())
    return found


def test_charts_show_the_supervisors_history_on_first_render(console_env: Parking) -> None:
    # Given a supervisor that sampled the mesh for a minute before anyone looked
    now = time.time()
    _supervisor_history(console_env.state_dir, now=now)
    at = signed_in("alice")
    # When alice opens the status page for the first time
    at.switch_page("views/status.py").run()
    # Then every chart is there at once, drawn over real time
    charts = chart_specs(at)
    assert set(charts) == {"Queue depth", "In flight", "Replicas", "Hops done per second",
                           "Ended per second", "Error rate (failed / ended)"}
    for title, (spec, data) in charts.items():
        x = spec["encoding"]["x"]
        assert x["type"] == "temporal" and x["axis"]["format"] == "%H:%M:%S", title
        assert str(data["time"].dtype).startswith("datetime64"), title
        assert data["time"].max().timestamp() == pytest.approx(now - 2.0, abs=0.01)
    # with whole numbers on the axes of counts, two decimals at most on rates
    for title in ("Queue depth", "In flight", "Replicas"):
        y = charts[title][0]["encoding"]["y"]
        assert (y["axis"]["format"], y["axis"]["tickMinStep"]) == (",d", 1), title
    for title in ("Hops done per second", "Ended per second"):
        assert charts[title][0]["encoding"]["y"]["axis"]["format"] == ",.2~f", title
    assert charts["Error rate (failed / ended)"][0]["encoding"]["y"]["axis"]["format"] \
        == ".0%"
    # and the history's numbers: enhance's backlog drains from 40, 1.5 hops a second
    depth = charts["Queue depth"][1]
    enhance = depth[depth["actor"] == "enhance"]["depth"].tolist()
    assert enhance[:3] == [40, 37, 34] and enhance[-1] == 0 and len(enhance) == 30
    hops = charts["Hops done per second"][1]
    assert set(hops[hops["actor"] == "enhance"]["succeeded_per_s"]) == {1.5}
    ended = charts["Ended per second"][1]
    assert set(ended[ended["ended"] == "succeeded/s"]["per second"]) == {1.5}
    assert any("The last 58 s as the local supervisor sampled it" in c.value
               for c in at.caption)


def test_without_a_supervisor_the_page_says_where_the_charts_come_from(
        console_env: Parking) -> None:
    at = signed_in("alice")
    at.switch_page("views/status.py").run()
    assert not chart_specs(at)
    assert any("No history from a local supervisor" in c.value for c in at.caption)

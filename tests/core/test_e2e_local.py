"""End to end: `asya up` as a subprocess on the embedded transport.

1,000 envelopes through the example mesh (fan-out, route rewrite) while replicas are
SIGKILLed at random: every envelope ends exactly once with the right payload.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.stores import SQLiteResultStore
from asya_agents.transports import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport

ROOT = Path(__file__).resolve().parents[2]
SLOW = Path(__file__).parent / "meshes" / "slow"


class Up:
    """``asya up MESH`` in its own process group."""

    def __init__(self, mesh: Path, state: Path) -> None:
        self.state = state
        env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING"}
        state.mkdir(parents=True, exist_ok=True)
        with open(state / "up.log", "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "asya_agents", "up", str(mesh),
                 "--state-dir", str(state)],
                env=env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
            )

    def status(self) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads((self.state / "status.json").read_text())
            return data
        except (OSError, json.JSONDecodeError):
            return {}

    def replica_pids(self, actor: str | None = None) -> list[int]:
        actors = self.status().get("actors", {})
        assert isinstance(actors, dict)
        return [pid for name, row in actors.items() if actor in (None, name)
                for pid in row["pids"]]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def up_example(tmp_path: Path) -> Iterator[Up]:
    up = Up(ROOT / "mesh" / "example", tmp_path)
    yield up
    if up.proc.poll() is None:
        up.stop()


def send(state: Path, envelopes: list[Envelope]) -> None:
    async def push() -> None:
        tr = EmbeddedTransport(state / "queues.db")
        for start in range(0, len(envelopes), 250):
            await tr.send([Outgoing(e.route.curr, e.encode())
                           for e in envelopes[start:start + 250]])
        await tr.close()

    asyncio.run(push())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_thousand_envelopes_survive_random_sigkills(up_example: Up, tmp_path: Path) -> None:
    # Given 1,000 texts of a statement, a question and a statement each
    route = ["split", "triage", "format"]
    envelopes = [Envelope.create({"text": f"Item {i}. Is {i} odd? Done {i}."}, route)
                 for i in range(1000)]
    roots = {e.id: i for i, e in enumerate(envelopes)}
    send(tmp_path, envelopes)
    store = SQLiteResultStore(tmp_path / "results.db")
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 240
    # When replicas are SIGKILLed at random while the mesh works
    while time.monotonic() < deadline:
        ended = store.ended_weight(list(roots))
        if all(w >= 1 - 1e-9 for w in ended.values()):
            break
        pids = up_example.replica_pids()
        if pids and kills < 12:
            try:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.7)
    # Then every envelope ended exactly once, with the right payload
    pieces: dict[str, list[dict[str, object]]] = defaultdict(list)
    for rec in store.results():
        assert rec.status == "succeeded", rec.error
        pieces[rec.root_id].append(rec.payload)
    assert set(pieces) == set(roots)
    for root, i in roots.items():
        got = sorted(pieces[root], key=lambda p: p["index"])  # type: ignore[arg-type,return-value]
        assert [p["sentence"] for p in got] == [f"Item {i}.", f"Is {i} odd?", f"Done {i}."]
        assert got[1]["answer"] == "42" and got[1]["kind"] == "question"
        assert got[0]["shout"] == f"ITEM {i}."
    totals = store.totals()
    store.close()
    assert totals.succeeded == 3000 and totals.failed == 0
    assert kills >= 5, "the run should have been disturbed"
    print(f"\nkills={kills} duplicates recorded once and counted={totals.duplicates}")
    assert up_example.stop() == 0


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigterm_lets_in_flight_messages_finish(tmp_path: Path) -> None:
    # Given four 2-second naps in flight in the one replica of `nap`
    up = Up(SLOW, tmp_path)
    try:
        envelopes = [Envelope.create({"seconds": 2.0, "n": n}, ["nap"]) for n in range(4)]
        send(tmp_path, envelopes)
        tr = EmbeddedTransport(tmp_path / "queues.db")
        deadline = time.monotonic() + 30
        while asyncio.run(tr.stats("nap")).in_flight < 4:
            assert time.monotonic() < deadline, "the naps never started"
            time.sleep(0.05)
        # When the supervisor is told to stop
        assert up.stop() == 0
    finally:
        if up.proc.poll() is None:
            os.killpg(up.proc.pid, signal.SIGKILL)
    # Then the naps finished and moved on (nothing left leased or redelivered)
    nap = asyncio.run(tr.stats("nap"))
    store = SQLiteResultStore(tmp_path / "results.db")
    done = asyncio.run(tr.stats("happy-end")).total + store.totals().succeeded
    store.close()
    asyncio.run(tr.close())
    assert nap.total == 0 and nap.delayed == 0
    assert done == 4


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_replica_whose_sync_handler_hangs_is_replaced(tmp_path: Path) -> None:
    # Given a sync handler that sleeps far past its 300ms timeout
    up = Up(ROOT / "tests" / "core" / "meshes" / "poison", tmp_path)
    try:
        hung = Envelope.create({"sleep": 60}, ["slowsync"])
        quick = Envelope.create({"sleep": 0}, ["slowsync"])
        send(tmp_path, [hung, quick])
        store = SQLiteResultStore(tmp_path / "results.db")
        deadline = time.monotonic() + 60
        # When the mesh runs
        while store.ended_weight([hung.id, quick.id]) != {hung.id: 1.0, quick.id: 1.0}:
            assert time.monotonic() < deadline, (tmp_path / "up.log").read_text()[-3000:]
            time.sleep(0.1)
        # Then the hung one failed with a timeout, and the next replica served the other
        failed, ok = store.get(hung.id), store.get(quick.id)
        store.close()
        assert failed is not None and failed.error is not None
        assert failed.error["reason"] == "timeout"
        assert ok is not None and ok.status == "succeeded"
        restarts = up.status()["actors"]["slowsync"]["restarts"]  # type: ignore[index]
        assert restarts >= 1
    finally:
        assert up.stop() == 0

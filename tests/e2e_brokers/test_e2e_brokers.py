"""End to end on real brokers, with faults: ``asya up mesh/example --transport K``.

Thousands of envelopes go through the example mesh. On RabbitMQ 3,000 each fan out into
two sentences, one of which takes the ``answer`` detour (6,000 results); on SQS (moto
server, which handles ~100 requests/s on this machine) 1,000 are one sentence each
(1,000 results over four hops). While they run, replicas are SIGKILLed at random,
mid-message (20 on RabbitMQ, 10 on SQS), and on RabbitMQ every connection of this mesh
is force-closed by the broker (``rabbitmqctl close_connection``), twice. Then every result
must be in ``asya results --json`` exactly once, with the right payload. The duplicates
that at-least-once delivery produced are counted by ``happy-end``; the test prints them.

These are the slow tests of the transports (marked ``slow``, about 20-40 s each).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.stores import open_result_store
from tests.conftest import ROOT, require_service
from tests.moto import moto_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

MESH = ROOT / "mesh" / "example"
#: Envelopes sent per broker: enough that the run outlasts the kills.
ENVELOPES = {"rabbitmq": 3000, "sqs": 1000}
#: What each envelope carries, per broker, and the results it ends as.
TEXTS = {"rabbitmq": "Is it on? Yes.", "sqs": "Is it on?"}
#: Replicas SIGKILLed per run, one every KILL_EVERY seconds.
KILLS = {"rabbitmq": 20, "sqs": 10}
KILL_EVERY = 0.5
#: On RabbitMQ, every connection of the mesh is force-closed after these many kills:
#: early, while the backlog is deep, and again later.
CLOSE_AT = (4, 12)
#: Waves the envelopes are sent in (see _send_in_waves).
WAVES = {"rabbitmq": 1, "sqs": 5}
ASYA = [sys.executable, "-m", "asya_agents"]


@pytest.fixture(params=["rabbitmq", "sqs"])
def broker(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str]]]:
    """The transport kind and the ASYA_* variables that point a mesh at it, with a
    queue prefix unique to this test."""
    prefix = f"e2e{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "ASYA_LOG_LEVEL": "WARNING", "ASYA_METRICS_PORT": "-1"}
    if request.param == "rabbitmq":
        require_service("RabbitMQ", port=5672)
        env.update(ASYA_RABBITMQ_QUEUE_PREFIX=prefix, ASYA_RABBITMQ_MANAGEMENT_URL="")
        yield "rabbitmq", env
        _delete_rabbit_queues(prefix)
    else:
        with moto_server() as url:
            env.update(ASYA_SQS_ENDPOINT_URL=url, ASYA_SQS_QUEUE_PREFIX=prefix,
                       ASYA_SQS_ACCESS_KEY_ID="test", ASYA_SQS_SECRET_ACCESS_KEY="test",
                       ASYA_SQS_REGION="us-east-1")
            yield "sqs", env


def _delete_rabbit_queues(prefix: str) -> None:
    import asyncio

    from asya_agents.transports.rabbitmq import RabbitMQTransport

    async def delete() -> None:
        t = RabbitMQTransport("amqp://guest:guest@127.0.0.1:5672/", mesh="example",
                              prefix=prefix)
        try:
            await t.delete_queues(["split", "triage", "answer", "format", "happy-end",
                                   "error-end"])
        finally:
            await t.close()

    asyncio.run(delete())


def _replica_pids(state_dir: Path) -> list[int]:
    try:
        status = json.loads((state_dir / "status.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [pid for actor in status["actors"].values() for pid in actor["pids"]]


def _close_rabbit_connections(prefix: str) -> int:
    """Have the broker force-close every connection of this mesh; how many it closed."""
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return 0
    listing = subprocess.run([ctl, "list_connections", "pid", "client_properties", "-q"],
                             capture_output=True, text=True, timeout=30).stdout
    pids = [line.split("\t")[0] for line in listing.splitlines() if prefix in line]
    # All at once: one after another, the last would close seconds after the first
    closers = [subprocess.Popen([ctl, "close_connection", pid, "e2e fault test"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for pid in pids]
    for closer in closers:
        closer.wait(timeout=30)
    return len(pids)


def _chaos(kind: str, env: dict[str, str], state_dir: Path, done: Any) -> dict[str, int]:
    """SIGKILL a random replica every KILL_EVERY seconds (KILLS times), and on RabbitMQ
    force-close the mesh's connections at the kills in CLOSE_AT (on a thread of its
    own, since ``rabbitmqctl`` takes a while, while the kills go on); stop early once
    everything ended."""
    rng = random.Random(7)
    faults = {"killed": 0, "connections_closed": 0}
    closers: list[threading.Thread] = []

    def close_connections() -> None:
        faults["connections_closed"] += _close_rabbit_connections(
            env["ASYA_RABBITMQ_QUEUE_PREFIX"])

    while faults["killed"] < KILLS[kind] and not done():
        time.sleep(KILL_EVERY)
        pids = _replica_pids(state_dir)
        if pids:
            pid = rng.choice(pids)
            try:
                os.kill(pid, signal.SIGKILL)
                faults["killed"] += 1
            except ProcessLookupError:
                pass
        if kind == "rabbitmq" and len(closers) < len(CLOSE_AT) \
                and faults["killed"] >= CLOSE_AT[len(closers)]:
            closers.append(threading.Thread(target=close_connections, daemon=True))
            closers[-1].start()
    for closer in closers:
        closer.join(timeout=60)
    return faults


def _broker_state(kind: str, env: dict[str, str]) -> str:
    """The mesh's queues with their ready and unacked counts and consumers (RabbitMQ)."""
    ctl = shutil.which("rabbitmqctl")
    if kind != "rabbitmq" or ctl is None:
        return "(not read)"
    listing = subprocess.run(
        [ctl, "list_queues", "name", "messages_ready", "messages_unacknowledged",
         "consumers", "-q"], capture_output=True, text=True, timeout=30).stdout
    prefix = env["ASYA_RABBITMQ_QUEUE_PREFIX"]
    return "\n".join(line for line in listing.splitlines() if line.startswith(prefix))


def _expected(root: str, kind: str) -> dict[str, dict[str, Any]]:
    if kind == "sqs":
        return {f"{root}.0": {"sentence": "Is it on?", "index": 0, "of": 1,
                              "kind": "question", "answer": "42", "words": 3,
                              "shout": "IS IT ON?"}}
    return {
        f"{root}.0": {"sentence": "Is it on?", "index": 0, "of": 2, "kind": "question",
                      "answer": "42", "words": 3, "shout": "IS IT ON?"},
        f"{root}.1": {"sentence": "Yes.", "index": 1, "of": 2, "kind": "statement",
                      "words": 1, "shout": "YES."},
    }


def _send_in_waves(kind: str, env: dict[str, str], mesh_args: list[str], store: Any,
                   pieces: int) -> tuple[threading.Thread, list[BaseException]]:
    """Send ENVELOPES in WAVES[kind] waves, each once the backlog is small: moto's cost
    per call grows with queue depth, so on SQS a deep backlog would measure moto. The
    sending thread, and what it raised (for the test to report, not lost on the thread)."""
    waves = WAVES[kind]

    def send() -> None:
        for wave in range(waves):
            backlog_ok = time.monotonic() + 120
            while _ended(store) < pieces * (wave * ENVELOPES[kind] // waves - 100) \
                    and time.monotonic() < backlog_ok:
                time.sleep(0.2)
            subprocess.run([*ASYA, "send", *mesh_args, "--payload",
                            json.dumps({"text": TEXTS[kind]}), "--count",
                            str(ENVELOPES[kind] // waves)],
                           env=env, capture_output=True, text=True, timeout=120, check=True)

    def run() -> None:
        try:
            send()
        except BaseException as exc:
            errors.append(exc)

    errors: list[BaseException] = []
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _ended(store: Any) -> int:
    totals = store.totals()
    return int(totals.succeeded + totals.failed + totals.paused)


def test_every_envelope_ends_exactly_once_despite_kills_and_lost_connections(
    broker: tuple[str, dict[str, str]], tmp_path: Path,
) -> None:
    kind, env = broker
    state = tmp_path / "state"
    mesh_args = [str(MESH), "--transport", kind, "--state-dir", str(state)]
    log = tmp_path / "up.log"
    pieces = len(_expected("x", kind))
    # Given the example mesh running on the broker
    with log.open("w") as log_file:
        up = subprocess.Popen([*ASYA, "up", *mesh_args], env=env, start_new_session=True,
                              stdout=log_file, stderr=subprocess.STDOUT)
    try:
        # When 1,000 envelopes are sent and replicas are killed (and, on RabbitMQ,
        # connections force-closed) while they run
        store = open_result_store(None, state_dir=state)
        started = time.monotonic()
        sender, send_errors = _send_in_waves(kind, env, mesh_args, store, pieces)

        def done() -> bool:
            return _ended(store) >= pieces * ENVELOPES[kind]

        faults = _chaos(kind, env, state, done)
        while not done() and time.monotonic() - started < 200:
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        sender.join(timeout=5)
        # What the broker still holds, should anything be missing (read before the
        # mesh stops and the broker requeues what its replicas held)
        held = _broker_state(kind, env) if not done() else ""
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
    stderr = log.read_text()
    # Then every piece ended exactly once, succeeded, with the right payload
    out = subprocess.run([*ASYA, "results", *mesh_args, "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    records = json.loads(out.stdout)
    ids = [r["id"] for r in records]
    assert not send_errors, f"sending failed: {send_errors}"
    assert len(ids) == len(set(ids)) == pieces * ENVELOPES[kind], (
        f"{len(set(ids))} of {pieces * ENVELOPES[kind]} results after {elapsed:.0f}s; "
        f"faults {faults}; broker now:\n{held}\nlog tail:\n{stderr[-3000:]}")
    roots = {i.rsplit(".", 1)[0] for i in ids}
    assert len(roots) == ENVELOPES[kind]
    by_id = {r["id"]: r for r in records}
    for root in roots:
        for child, payload in _expected(root, kind).items():
            assert by_id[child]["status"] == "succeeded"
            assert by_id[child]["payload"] == payload
    duplicates = sum(r.get("duplicates", 0) for r in records)
    assert faults["killed"] >= KILLS[kind] // 2
    if kind == "rabbitmq" and shutil.which("rabbitmqctl"):
        assert faults["connections_closed"] >= len(CLOSE_AT)
    print(f"\n[{kind}] {pieces * ENVELOPES[kind]} results in {elapsed:.1f}s; replicas SIGKILLed: "
          f"{faults['killed']}; connections force-closed: {faults['connections_closed']}; "
          f"duplicate deliveries counted once by happy-end: {duplicates}")

"""Generators fan out as they yield: the shares of a fan-out of unknown length, the
first children published before the last is made, 100,000 children in bounded memory,
and the group store's compare-and-set steps on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import threading
import tracemalloc
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope, StreamShares
from asya_agents.handlers import Handler
from asya_agents.runtime import RuntimeConfig
from asya_agents.seams import Clock
from asya_agents.stores import open_group_store
from asya_agents.stores.groups import Member
from asya_agents.transports.base import Delivery, Outgoing
from asya_agents.worker import Worker


@pytest.mark.parametrize("count", [1, 2, 3, 7, 64, 1000, 100_000])
def test_stream_shares_add_up_to_exactly_one_and_stay_short(count: int) -> None:
    # Given the shares of a stream of `count` children, the last taking the rest
    shares = StreamShares()
    given = [shares.next() for _ in range(count - 1)] + [shares.last()]
    # Then they are positive, add up to exactly 1, depend only on the index, and their
    # text stays short however many there are
    assert all(s > 0 for s in given) and sum(given, Fraction(0)) == 1
    assert given[:-1] == [StreamShares.share(i) for i in range(count - 1)]
    assert max(len(str(s)) for s in given) <= 14


_WEIGHT = re.compile(rb'"weight":"([0-9/]+)"')


class _Recorder:
    """A transport that keeps what was published (or only counts it)."""

    name = "fake"
    max_message_bytes = 256 * 1024
    delivery_limit = None

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.sent: list[Outgoing] = []
        self.count = 0
        self.weight = Fraction(0)
        self.acked = False

    async def send(self, messages: list[Outgoing]) -> None:
        self._take(messages)

    async def publish_and_ack(self, messages: list[Outgoing], delivery: Delivery) -> None:
        self._take(messages)
        self.acked = True

    def _take(self, messages: list[Outgoing]) -> None:
        for m in messages:
            self.count += 1
            self.weight += Fraction(_WEIGHT.search(m.body).group(1).decode())  # type: ignore[union-attr]
            if self.keep:
                self.sent.append(m)

    async def ack(self, delivery: Delivery) -> None: ...
    async def nack(self, delivery: Delivery, *, delay: float = 0.0) -> None: ...
    async def extend(self, delivery: Delivery, *, visibility: float) -> None: ...
    async def close(self) -> None: ...


def _worker(fn: Any, transport: _Recorder) -> Worker:
    cfg = RuntimeConfig(actor="gen", actors={"gen", "next"}, timeout=120.0)
    return Worker(cfg, transport=transport,  # type: ignore[arg-type]
                  handler=Handler("steps.gen", fn), terminal=None, clock=Clock())


def _delivery() -> Delivery:
    parent = Envelope.create({"n": 1}, ["gen", "next"])
    return Delivery("gen", parent.encode(), token=1)


def test_the_first_children_go_on_before_the_last_is_made() -> None:
    # Given a generator that yields three children, then waits until told to go on
    go_on, seen_early = threading.Event(), []
    transport = _Recorder()

    def gen(payload: Any) -> Any:
        for i in range(3):
            yield {"i": i}
        assert go_on.wait(30)
        seen_early.append(transport.count)
        yield {"i": 3}

    async def run() -> None:
        task = asyncio.ensure_future(_worker(gen, transport).process(_delivery()))
        while transport.count < 2:  # children 0 and 1 are published while it waits
            await asyncio.sleep(0.01)
        go_on.set()
        await task

    asyncio.run(run())
    # Then two children were out before the fourth was made, and all four in the end
    assert seen_early == [2] and transport.acked
    kids = [Envelope.decode(m.body) for m in transport.sent]
    parent = kids[0].meta.parent_id
    assert [k.id for k in kids] == [f"{parent}.{i}" for i in range(4)]
    assert [k.meta.fanout[-1].index for k in kids] == [0, 1, 2, 3]
    assert [k.meta.weight for k in kids] == ["1/2", "1/8", "1/8", "1/4"]
    assert transport.weight == 1


def _run_generator(count: int, transport: _Recorder) -> None:
    def gen(payload: Any) -> Any:
        for i in range(count):
            yield {"i": i, "text": "x" * 40}

    asyncio.run(_worker(gen, transport).process(_delivery()))


def test_a_streamed_fan_out_holds_a_window_not_its_children() -> None:
    # Given a generator of 20,000 children and a transport that only counts them
    transport = _Recorder(keep=False)
    # When the worker runs it, with the allocations traced
    tracemalloc.start()
    try:
        _run_generator(20_000, transport)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Then every child went out, and the worker never held more than a window of them
    # (20,000 children at once take over 10 MB)
    assert transport.count == 20_000 and transport.acked
    assert peak < 4 * 1024 * 1024


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_generator_of_100000_children_fans_out_whole() -> None:
    # Given a generator of 100,000 children
    transport = _Recorder(keep=False)
    # When the worker runs it
    _run_generator(100_000, transport)
    # Then every child went out and their weights add up to exactly 1
    assert transport.count == 100_000 and transport.acked
    assert transport.weight == 1


@pytest.fixture(params=["sqlite", "postgres"])
def group_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return None


def _member(i: int, n: int, *, failed: bool = False) -> Member:
    return Member(f"p.{i}", i, str(Fraction(1, n)), failed, {"id": f"p.{i}", "payload": i})


def test_the_group_store_records_once_claims_once_and_keeps_the_first_outbox(
        group_url: str | None, tmp_path: Path) -> None:
    store = open_group_store(group_url, state_dir=tmp_path, mesh="m")
    other = open_group_store(group_url, state_dir=tmp_path, mesh="m")
    try:
        # Given children 0 and 1 of 2, child 0 twice
        first = store.add("g", "p", _member(0, 2), now=100.0, timeout=60, partial=False)
        again = other.add("g", "p", _member(0, 2), now=101.0, timeout=60, partial=False)
        last = other.add("g", "p", _member(1, 2), now=102.0, timeout=60, partial=False)
        # Then the copy changed nothing and the second made the group ready
        assert first.opened and not first.duplicate and first.group.state == "open"
        assert again.duplicate and again.group.received == "1/2"
        assert last.group.state == "ready" and last.group.ending == "complete"
        # When two finishers claim it, only one builds; the outbox kept is the first
        assert store.claim("g", "p", token="a", now=103.0, until=200.0).action == "build"
        assert other.claim("g", "p", token="b", now=104.0, until=200.0).action == "busy"
        assert store.store_outbox("g", "p", queue="next", body="one",
                                  outcome="gathered") == ("next", "one")
        assert other.store_outbox("g", "p", queue="next", body="two",
                                  outcome="gathered") == ("next", "one")
        # and after the first's claim ran out, the second publishes the stored one
        assert other.claim("g", "p", token="b", now=201.0, until=300.0).action == "publish"
        assert [m.child_id for m in store.members("g", "p")] == ["p.0", "p.1"]
        assert store.finish("g", "p", now=202.0) == "gathered"
        assert other.finish("g", "p", now=203.0) is None
        late = store.add("g", "p", _member(1, 2), now=204.0, timeout=60, partial=False)
        assert late.duplicate and late.group.state == "done"
        assert store.open_groups() == []
    finally:
        store.close()
        other.close()


def test_the_group_store_finds_groups_past_their_timeout(
        group_url: str | None, tmp_path: Path) -> None:
    store = open_group_store(group_url, state_dir=tmp_path, mesh="m")
    try:
        store.add("g", "late", _member(0, 3), now=100.0, timeout=60, partial=False)
        store.add("g", "young", _member(0, 3), now=150.0, timeout=60, partial=False)
        assert [g.group for g in store.open_groups()] == ["late", "young"]
        assert store.due("g", now=170.0) == ["late"]
        assert store.claim("g", "late", token="s", now=170.0,
                           until=180.0).group.ending == "timeout"
        failed = store.add("g", "young", _member(1, 3, failed=True), now=171.0, timeout=60,
                           partial=False)
        assert (failed.group.state, failed.group.ending) == ("ready", "failed")
    finally:
        store.close()

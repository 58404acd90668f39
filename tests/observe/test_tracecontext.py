"""W3C trace context: one trace id from ``asya send`` to the end of every route.

A new span id at each hop, the same trace id across hops, retries and fan-out, and an
OpenTelemetry span per hop whose parent is the previous hop's span.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.observe.spans import HopTracer
from asya_agents.tracecontext import (
    TRACEPARENT,
    TraceContext,
    ensure_traceparent,
    trace_id_of,
)
from tests.observe.harness import Recorder, RetryOnce, running


def test_a_traceparent_round_trips_and_a_child_keeps_the_trace() -> None:
    # Given a new trace
    ctx = TraceContext.new()
    # When it is written, read back and continued by a hop
    parsed = TraceContext.parse(ctx.header)
    child = ctx.child()
    # Then the header is W3C version 00 and the child has the same trace, a new span
    assert parsed == ctx
    assert ctx.header == f"00-{ctx.trace_id}-{ctx.span_id}-01"
    assert child.trace_id == ctx.trace_id and child.span_id != ctx.span_id


@pytest.mark.parametrize("bad", [
    None, 42, "", "garbage", "01-" + "a" * 32 + "-" + "b" * 16 + "-01",
    "00-" + "0" * 32 + "-" + "b" * 16 + "-01", "00-" + "a" * 32 + "-" + "0" * 16 + "-01",
    "00-" + "a" * 31 + "-" + "b" * 16 + "-01",
])
def test_an_invalid_traceparent_is_not_a_context(bad: object) -> None:
    assert TraceContext.parse(bad) is None
    # and an envelope carrying it gets a fresh, valid trace instead
    fixed = ensure_traceparent({TRACEPARENT: bad})
    assert trace_id_of(fixed) is not None


def test_create_starts_a_trace_unless_the_sender_brought_one() -> None:
    # Given a sender's own trace
    theirs = TraceContext.new().header
    # When envelopes are created with and without it
    fresh = Envelope.create({}, ["a"])
    kept = Envelope.create({}, ["a"], headers={TRACEPARENT: theirs, "x": 1})
    # Then a new envelope starts a trace and a sender's trace is kept
    assert trace_id_of(fresh.headers) is not None
    assert kept.headers == {TRACEPARENT: theirs, "x": 1}


def _by_root(rec: Recorder) -> dict[str, list[tuple[str, int, TraceContext]]]:
    hops: dict[str, list[tuple[str, int, TraceContext]]] = defaultdict(list)
    for ev in rec.events:
        ctx = TraceContext.parse(ev.headers.get(TRACEPARENT))
        assert ctx is not None, f"{ev.actor} got {ev.envelope_id} without a traceparent"
        hops[ev.envelope_id.split(".")[0]].append((ev.actor, ev.attempt, ctx))
    return hops


async def test_one_trace_id_across_hops_retries_and_fan_out(tmp_path: Path) -> None:
    rec = Recorder()
    async with running(tmp_path, observer=rec, failure={"flaky": RetryOnce()}) as mesh:
        # Given two roots, one of which fails its first attempt at `flaky` and is retried
        first = await mesh.send({"n": 3, "fail_first": True})
        second = await mesh.send({"n": 2})
        # When both have ended
        await mesh.join([first.id, second.id])
        records = mesh.store.results()
    hops = _by_root(rec)
    for root in (first, second):
        # Then every hop of every child carried the root's trace id
        assert {ctx.trace_id for _, _, ctx in hops[root.id]} == {trace_id_of(root.headers)}
        # and each hop got a new span id: no two arrivals share a parent span but siblings
        spans = [ctx.span_id for actor, _, ctx in hops[root.id] if actor != "flaky"]
        assert len(spans) >= 1 + 2 * (3 if root is first else 2)
    # the retried arrivals (attempt 2) have a parent span of their own: the failed attempt
    first_tries = {c.span_id for a, n, c in hops[first.id] if a == "flaky" and n == 1}
    retries = {c.span_id for a, n, c in hops[first.id] if a == "flaky" and n == 2}
    assert len(retries) == 3 and not retries & first_tries
    # and the recorded results still carry the root's trace at the end of the route
    for record in records:
        assert trace_id_of(record.envelope["headers"]) == \
            trace_id_of((first if record.root_id == first.id else second).headers)
    assert {r.status for r in records} == {"succeeded"} and len(records) == 5


async def test_otel_spans_per_hop_chain_to_the_previous_hop(tmp_path: Path) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    # Given an OpenTelemetry provider that keeps spans in memory
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = HopTracer(provider=provider)
    async with running(tmp_path, observer=Recorder(), tracer=tracer,
                       failure={"flaky": RetryOnce()}) as mesh:
        # When one root fans out into two children, each retried once at `flaky`
        root = await mesh.send({"n": 2, "fail_first": True})
        await mesh.join([root.id])
    spans = exporter.get_finished_spans()
    provider.shutdown()
    # Then there is one span per hop: fan, 2 x (flaky failed, flaky retried, tail, happy-end)
    names = sorted(s.name for s in spans)
    assert names == sorted(["asya fan"] + ["asya flaky"] * 4 + ["asya tail"] * 2
                           + ["asya happy-end"] * 2)
    # all in the root's trace, each parented by the span that published its input
    trace_id = int(trace_id_of(root.headers) or "0", 16)
    assert {s.context.trace_id for s in spans} == {trace_id}
    by_id = {s.context.span_id: s for s in spans}
    root_parent = int(TraceContext.parse(root.headers[TRACEPARENT]).span_id, 16)  # type: ignore[union-attr]
    for span in spans:
        assert span.parent is not None
        if span.name == "asya fan":
            assert span.parent.span_id == root_parent
        else:
            assert span.parent.span_id in by_id, f"{span.name} has a parent outside the trace"
    failed = [s for s in spans if s.name == "asya flaky" and not s.status.is_ok]
    assert len(failed) == 2
    assert all(s.events and s.events[0].name == "exception" for s in failed)

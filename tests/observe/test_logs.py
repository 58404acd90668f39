"""Structured logs: JSON lines with the envelope's fields, text on a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from asya_agents.envelope import Envelope
from asya_agents.errors import ConfigError
from asya_agents.observe.logs import LogObserver, configure_logging
from asya_agents.seams import Decision
from asya_agents.tracecontext import trace_id_of


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_each_event_is_one_json_line_with_the_envelope_fields(restore_root: None) -> None:
    # Given JSON logs (auto: the stream is not a terminal) and an envelope on attempt 2
    stream = io.StringIO()
    configure_logging(actor="judge", fmt="auto", level="DEBUG", stream=stream)
    env = Envelope.create({"x": 1}, ["judge"])
    env.meta.attempt = 2
    obs = LogObserver()
    # When the runtime reports its hop: received, then a failure that is retried
    obs.received("judge", env)
    obs.failed("judge", env, TimeoutError("slow"), Decision("retry", delay=4.0,
                                                            reason="timeout"), 1.5)
    obs.succeeded("judge", env, 0.25)
    received, retried, succeeded = _lines(stream)
    # Then each line names the envelope, the actor, the attempt and the trace
    for line in (received, retried, succeeded):
        assert line["envelope_id"] == env.id and line["actor"] == "judge"
        assert line["attempt"] == 2 and line["trace_id"] == trace_id_of(env.headers)
        assert {"ts", "level", "logger", "message", "pid"} <= set(line)
    assert received["event"] == "received" and received["level"] == "debug"
    assert retried["event"] == "retried" and retried["level"] == "warning"
    assert retried["reason"] == "timeout" and retried["delay_s"] == 4.0
    assert retried["error"] == "TimeoutError: slow"
    assert succeeded["event"] == "succeeded" and succeeded["duration_s"] == 0.25


def test_a_handlers_own_log_lines_carry_the_envelope_it_handles(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(actor="enhance", fmt="json", stream=stream)
    env = Envelope.create({}, ["enhance"])
    # Given the runtime reported the envelope it took (same context as the handler)
    LogObserver().received("enhance", env)
    # When the handler logs through any logger
    logging.getLogger("user.handler").info("loading model")
    line = _lines(stream)[-1]
    # Then the line names the envelope and the trace
    assert line["message"] == "loading model" and line["logger"] == "user.handler"
    assert line["envelope_id"] == env.id and line["trace_id"] == trace_id_of(env.headers)


def test_text_on_a_terminal(restore_root: None) -> None:
    stream = _Terminal()
    configure_logging(actor="supervisor", fmt="auto", stream=stream)
    env = Envelope.create({}, ["a"])
    LogObserver().failed("a", env, ValueError("bad"), Decision("route", reason="handler-error"),
                         0.1)
    text = stream.getvalue()
    assert not text.startswith("{")
    assert "a[" in text and "failed (handler-error), sent to error-end: ValueError: bad" in text
    assert f"envelope={env.id} attempt=1" in text


def test_configuring_twice_keeps_one_handler_and_bad_formats_are_named(
        restore_root: None) -> None:
    configure_logging(actor="x", fmt="json", stream=io.StringIO())
    configure_logging(actor="x", fmt="text", stream=io.StringIO())
    assert [h.get_name() for h in logging.getLogger().handlers].count("asya") == 1
    with pytest.raises(ConfigError, match="ASYA_LOG_FORMAT"):
        configure_logging(actor="x", fmt="yaml")


def test_exceptions_are_kept_in_the_json_line(restore_root: None) -> None:
    stream = io.StringIO()
    configure_logging(actor="x", fmt="json", stream=stream)
    try:
        raise KeyError("missing")
    except KeyError:
        logging.getLogger("asya.test").exception("boom")
    line = _lines(stream)[-1]
    assert line["level"] == "error" and "KeyError: 'missing'" in str(line["exception"])

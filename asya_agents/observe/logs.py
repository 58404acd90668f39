"""Structured logs: one JSON line per event, or readable text on a terminal.

Every process of a mesh (the supervisor, each replica, the CLI) configures logging here
once, from ``ASYA_LOG_FORMAT`` (``json``, ``text`` or ``auto``: text when the stream is
a terminal, JSON otherwise) and ``ASYA_LOG_LEVEL``. A JSON line always carries ``ts``,
``level``, ``logger``, ``message``, ``pid`` and ``actor``; lines about an envelope also
carry ``envelope_id``, ``attempt``, ``trace_id`` and ``event`` (see
``docs/observability.md``), so that one ``grep`` or one log query follows an envelope
through every replica it visited.

:class:`LogObserver` writes those event lines from the runtime's Observer seam, and it
remembers the envelope in a context variable, so that whatever a handler logs while it
handles that envelope carries the same fields.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from typing import IO, Any

from asya_agents.envelope import Envelope
from asya_agents.seams import Decision, Observer
from asya_agents.tracecontext import trace_id_of

__all__ = [
    "FIELDS",
    "JsonFormatter",
    "LogObserver",
    "TextFormatter",
    "configure_logging",
    "envelope_fields",
]

#: Fields a record may carry about the envelope it concerns (``extra=`` or the context).
FIELDS = ("event", "envelope_id", "root_id", "attempt", "trace_id", "duration_s", "reason",
          "error", "target", "delay_s", "batch_size")

#: The envelope being handled in this context; its fields are computed only when a
#: record is actually written.
_current_envelope: contextvars.ContextVar[Envelope | None] = contextvars.ContextVar(
    "asya_current_envelope", default=None
)
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def envelope_fields(envelope: Envelope) -> dict[str, Any]:
    """The log fields that name ``envelope``."""
    return {"envelope_id": envelope.id, "root_id": envelope.root_id,
            "attempt": envelope.meta.attempt, "trace_id": trace_id_of(envelope.headers)}


class _Context(logging.Filter):
    """Adds the process's ``actor`` and the current envelope's fields to each record."""

    def __init__(self, actor: str) -> None:
        super().__init__()
        self.actor = actor

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "actor"):
            record.actor = self.actor
        envelope = _current_envelope.get()
        if envelope is not None:
            for key, value in envelope_fields(envelope).items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; keys with no value are left out."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level actor[pid] message (envelope … attempt … trace …)`` for people."""

    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%H:%M:%S", time.localtime(record.created))
        head = f"{when} {record.levelname:<7} {getattr(record, 'actor', '-')}[{record.process}]"
        tail = []
        envelope_id = getattr(record, "envelope_id", None)
        trace_id = getattr(record, "trace_id", None)
        if envelope_id:
            tail.append(f"envelope={envelope_id} attempt={getattr(record, 'attempt', '')}")
        if trace_id:
            tail.append(f"trace={str(trace_id)[:8]}…")
        text = f"{head} {record.getMessage()}" + (f"  ({' '.join(tail)})" if tail else "")
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(*, actor: str, fmt: str = "auto", level: str = "INFO",
                      stream: IO[str] | None = None) -> logging.Handler:
    """Send this process's logs to ``stream`` (stderr) as JSON or text; returns the
    handler. Replaces a handler this function installed before, and no other."""
    stream = stream if stream is not None else sys.stderr
    if fmt not in ("auto", "json", "text"):
        from asya_agents.errors import ConfigError

        raise ConfigError(f"ASYA_LOG_FORMAT must be auto, json or text, not {fmt!r}")
    as_json = fmt == "json" or (fmt == "auto" and not _is_tty(stream))
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(_Context(actor))
    handler.set_name("asya")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "asya"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


class LogObserver(Observer):
    """One log line per envelope event (``received`` at DEBUG, the rest at INFO or
    WARNING), each with the envelope's fields."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("asya.events")

    def received(self, actor: str, envelope: Envelope | None) -> None:
        if envelope is None:
            self.log.warning("received a message that is not an envelope",
                             extra={"event": "invalid", "actor": actor})
            return
        _current_envelope.set(envelope)
        if self.log.isEnabledFor(logging.DEBUG):
            self.log.debug("received", extra={"event": "received", "actor": actor,
                                              **envelope_fields(envelope)})

    def succeeded(self, actor: str, envelope: Envelope, seconds: float) -> None:
        if not self.log.isEnabledFor(logging.INFO):
            return
        self.log.info("succeeded in %.3fs", seconds,
                      extra={"event": "succeeded", "actor": actor, "duration_s": round(seconds, 6),
                             **envelope_fields(envelope)})

    def failed(self, actor: str, envelope: Envelope, exc: BaseException,
               decision: Decision, seconds: float) -> None:
        error = f"{type(exc).__name__}: {exc}"[:500]
        fields = {"actor": actor, "duration_s": round(seconds, 6), "reason": decision.reason,
                  "error": error, **envelope_fields(envelope)}
        if decision.action == "retry":
            self.log.warning("failed (%s), retry in %.3gs: %s", decision.reason,
                             decision.delay, error,
                             extra={"event": "retried", "delay_s": decision.delay, **fields})
        else:
            self.log.warning("failed (%s), sent to %s: %s", decision.reason, decision.target,
                             error,
                             extra={"event": "dead-lettered", "target": decision.target,
                                    **fields})

    def batch(self, actor: str, size: int) -> None:
        self.log.debug("batch of %d", size,
                       extra={"event": "batch", "actor": actor, "batch_size": size})


def _is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"



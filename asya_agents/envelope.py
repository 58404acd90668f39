"""The envelope: the one message format every actor, queue and store speaks.

An envelope carries its own route, so no coordinator is needed: after a handler succeeds
the runtime moves ``curr`` to the end of ``prev`` and pops the head of ``next`` into
``curr``.  Handlers may rewrite ``next`` only; ``prev`` and ``curr`` are history.

Framework bookkeeping lives in ``meta`` (see :class:`Meta`), so an envelope read from
any queue or store explains itself: which attempt it is on, where it came from when it
was fanned out, how much of its root it stands for (``weight``), when each hop ran, and
for failures the error.

Fan-outs nest: each child pushes a :class:`FanOut` frame (its parent, its place in the
fan-out order, its share of the parent) onto ``meta.fanout``, so that a ``fanIn`` actor
gathers the group of the nearest fan-out and the gathered envelope, with that frame
popped, goes on as its parent would. A list knows its length and gives each child an
equal share; a generator does not, so :class:`StreamShares` gives the shares of a fan-out
of unknown length as it yields, holding back only the last child to give it the rest.
"""

from __future__ import annotations

import json
import time
import uuid
from fractions import Fraction
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from asya_agents.errors import EnvelopeError, HistoryAlteredError
from asya_agents.tracecontext import ensure_traceparent

__all__ = [
    "DEFAULT_HOP_LIMIT",
    "ERROR_END",
    "HAPPY_END",
    "MAX_ENVELOPE_BYTES",
    "ChildFailure",
    "Envelope",
    "ErrorInfo",
    "FanOut",
    "Gathered",
    "Hop",
    "Meta",
    "Route",
    "StreamShares",
    "new_id",
]

HAPPY_END = "happy-end"
ERROR_END = "error-end"
#: Default cap on an encoded envelope; payloads carry URLs, never images.
MAX_ENVELOPE_BYTES = 256 * 1024
#: Most actors an envelope may pass through (``spec.hopLimit`` of a Mesh overrides it).
#: The loops meant to happen stay far below it (an agent loop of 3 actors for 30 rounds
#: is 90 hops), while a route that loops by mistake is stopped after 100 handler calls
#: instead of the ~2,600 it takes its history (``prev`` and ``meta.hops``, about 100
#: bytes a hop) to outgrow ``MAX_ENVELOPE_BYTES``.
DEFAULT_HOP_LIMIT = 100


#: ``advanced(payload=...)`` not given: the payload stays as it is.
_KEEP: Any = object()


def new_id() -> str:
    """A short random envelope id (12 hex characters)."""
    return uuid.uuid4().hex[:12]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Route(_Model):
    """Where an envelope has been (``prev``), is (``curr``) and goes (``next``)."""

    prev: list[str] = Field(default_factory=list)
    curr: str
    next: list[str] = Field(default_factory=list)

    @field_validator("curr")
    @classmethod
    def _curr_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("route.curr must name an actor")
        return value


class ErrorInfo(_Model):
    """Why an envelope failed: recorded by the runtime, stored by ``error-end``."""

    type: str
    message: str
    traceback: str | None = None
    actor: str | None = None
    attempt: int | None = None
    reason: str = "handler-error"


class Hop(_Model):
    """One actor's handling of the envelope, for timings per hop."""

    actor: str
    started: float
    ended: float
    attempt: int = 1


class FanOut(_Model):
    """One fan-out an envelope descends from (``meta.fanout``, the nearest last)."""

    parent: str = Field(description="id of the envelope that fanned out")
    index: int = Field(ge=0, description="place in the fan-out order (0 first)")
    share: str = Field(description="this child's share of its parent, a fraction as text")


class ChildFailure(_Model):
    """A child of a gathered group that failed (or, on a timeout, never came)."""

    id: str
    index: int
    error: ErrorInfo


class Gathered(_Model):
    """``meta.fanin`` of an envelope a ``fanIn`` actor gathered: how many children its
    handler got, the ones that failed (``partial: true``), the share of the group that
    never arrived before ``timeout`` and why the group ended."""

    children: int = Field(ge=0)
    failed: list[ChildFailure] = Field(default_factory=list)
    missing: str = "0"
    ending: Literal["complete", "timeout"] = "complete"


class Meta(_Model):
    """Bookkeeping owned by the runtime; handlers read it but their changes are ignored.

    - ``attempt``: 1 for the first try at the current actor, +1 per retry.
    - ``root_id``: id of the envelope ``asya send`` created; fan-out children keep it.
    - ``parent_id``: id of the envelope this one was fanned out from.
    - ``weight``: the share of the root this envelope stands for, a fraction as text
      ("1", "1/3"); the root has ended when the weights of its ended pieces sum to 1.
    - ``created``: when the root was sent (epoch seconds).
    - ``deadline``: optional epoch seconds after which the envelope is not worth handling.
    - ``hops``: one entry per handled hop, with timings.
    - ``error``: set on the way to ``error-end``.
    - ``delivery_count``: how often the transport delivered this copy (when it knows).
    - ``replays``: how often ``asya replay`` sent this envelope back after a failure; a
      record of an earlier replay never overwrites one of a later (the result store).
    - ``fanout``: the fan-outs this envelope descends from, the nearest last
      (:class:`FanOut`); a ``fanIn`` actor gathers the group of the last one.
    - ``fanin``: set on an envelope a ``fanIn`` actor gathered (:class:`Gathered`).
    """

    attempt: int = 1
    root_id: str | None = None
    parent_id: str | None = None
    weight: str = "1"
    created: float | None = None
    deadline: float | None = None
    hops: list[Hop] = Field(default_factory=list)
    error: ErrorInfo | None = None
    delivery_count: int | None = None
    replays: int = Field(default=0, ge=0)
    fanout: list[FanOut] = Field(default_factory=list)
    fanin: Gathered | None = None

    @field_validator("weight")
    @classmethod
    def _weight_is_fraction(cls, value: str) -> str:
        if value == "1":
            return value  # the common case, without building a Fraction
        try:
            frac = Fraction(value)
        except (ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"meta.weight is not a fraction: {value!r}") from exc
        if not 0 <= frac <= 1:
            raise ValueError(f"meta.weight must be within 0..1: {value!r}")
        return value


class Envelope(_Model):
    """A message on the mesh. See ``docs/envelope.md`` for the wire format."""

    id: str = Field(min_length=1, max_length=200)
    route: Route
    headers: dict[str, Any] = Field(default_factory=dict)
    payload: Any = None
    meta: Meta = Field(default_factory=Meta)

    # -- construction ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        payload: Any,
        route: list[str],
        *,
        id: str | None = None,
        headers: dict[str, Any] | None = None,
        now: float | None = None,
    ) -> Envelope:
        """A new root envelope that starts at ``route[0]``; it starts a new trace (a W3C
        ``traceparent`` header) unless ``headers`` already carry one."""
        if not route:
            raise EnvelopeError("a route needs at least one actor")
        env_id = id or new_id()
        meta = Meta(root_id=env_id, created=time.time() if now is None else now)
        return cls(
            id=env_id,
            route=Route(curr=route[0], next=list(route[1:])),
            headers=ensure_traceparent(dict(headers or {})),
            payload=payload,
            meta=meta,
        )

    # -- wire ---------------------------------------------------------------------

    @classmethod
    def decode(cls, body: bytes | str, *, max_bytes: int = MAX_ENVELOPE_BYTES) -> Envelope:
        """Parse a message body; anything invalid raises :class:`EnvelopeError`."""
        size = len(body)
        if size > max_bytes:
            raise EnvelopeError(f"message is {size} bytes, over the limit of {max_bytes}")
        try:
            return cls.model_validate_json(body)  # parsed and checked in one pass
        except ValidationError:
            pass  # decoded again below, to say what is wrong in the words used elsewhere
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EnvelopeError(f"message is not UTF-8 JSON: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        if not isinstance(data, dict):
            raise EnvelopeError(f"an envelope is a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise EnvelopeError(_describe(exc)) from exc

    def encode(self) -> bytes:
        return self.model_dump_json(exclude_defaults=False).encode()

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    # -- routing ------------------------------------------------------------------

    @property
    def root_id(self) -> str:
        return self.meta.root_id or self.id

    def advanced(self, *, end: str = HAPPY_END, hop: Hop | None = None,
                 headers: dict[str, Any] | None = None, payload: Any = _KEEP) -> Envelope:
        """A copy moved one hop on: ``curr`` joins ``prev``, the head of ``next`` is
        the new ``curr``, or ``end`` when nothing is left. ``hop`` is added to
        ``meta.hops``; ``headers`` and ``payload``, when given, replace the envelope's."""
        route = self.route
        nxt = route.next
        new_route = Route(prev=[*route.prev, route.curr], curr=nxt[0] if nxt else end,
                          next=nxt[1:])
        meta_update: dict[str, Any] = {"attempt": 1, "error": None}
        if hop is not None:
            meta_update["hops"] = [*self.meta.hops, hop]
        update: dict[str, Any] = {"route": new_route,
                                  "meta": self.meta.model_copy(update=meta_update)}
        if headers is not None:
            update["headers"] = headers
        if payload is not _KEEP:
            update["payload"] = payload
        return self.model_copy(update=update)

    def check_history(self, original: Envelope) -> None:
        """Raise :class:`HistoryAlteredError` unless only ``next`` changed."""
        if self.id != original.id:
            raise HistoryAlteredError(
                f"handler changed the envelope id from {original.id!r} to {self.id!r}"
            )
        if self.route.prev != original.route.prev:
            raise HistoryAlteredError(
                f"handler altered route.prev from {original.route.prev} to {self.route.prev}"
            )
        if self.route.curr != original.route.curr:
            raise HistoryAlteredError(
                f"handler altered route.curr from {original.route.curr!r} "
                f"to {self.route.curr!r}"
            )

    def fan_out(self, payloads: list[Any]) -> list[Envelope]:
        """Children for a fan-out: ids ``<id>.<i>`` (stable across redeliveries, so a
        retried fan-out produces the same ids), each with an equal share of weight."""
        share = Fraction(1, max(len(payloads), 1))
        return [self.child(payload, index, share) for index, payload in enumerate(payloads)]

    def child(self, payload: Any, index: int, share: Fraction) -> Envelope:
        """Fan-out child ``index`` of this envelope with ``share`` of its weight: id
        ``<id>.<index>``, a :class:`FanOut` frame pushed on ``meta.fanout``."""
        text = str(share)
        frame = FanOut(parent=self.id, index=index, share=text)
        weight = text if self.meta.weight == "1" else str(Fraction(self.meta.weight) * share)
        meta = self.meta.model_copy(update={
            "parent_id": self.id, "weight": weight,
            "root_id": self.root_id, "fanout": [*self.meta.fanout, frame]})
        return self.model_copy(update={"id": f"{self.id}.{index}", "payload": payload,
                                       "meta": meta})


class StreamShares:
    """The shares of a fan-out whose length is known only at its end (a generator).

    Children come in chunks: chunk ``c`` holds ``2**c`` children (1, 2, 4, ...) and half
    of what chunks before it left, ``1/2**(c+1)``, split evenly, so child ``i`` of chunk
    ``c`` gets ``1/2**(2c+1)``. The last child takes whatever is left, which makes the
    shares add up to exactly 1 without knowing the count. Only the last child has to
    wait for the end, so a caller holds back one child, not a chunk; and as chunks
    double, a share's denominator grows with the log of the count (100,000 children:
    at most ``2**33``), so ``meta.weight`` stays short text. The shares depend only on
    the index and the count: a generator that yields the same items on a redelivery
    gives its children the same ids and weights.
    """

    def __init__(self) -> None:
        self.given = Fraction(0)
        self.count = 0

    @staticmethod
    def share(index: int) -> Fraction:
        """The share of child ``index`` when it is not the last."""
        chunk = (index + 1).bit_length() - 1
        return Fraction(1, 2 ** (2 * chunk + 1))

    def next(self) -> Fraction:
        """The share of the next child, which is not the last."""
        share = self.share(self.count)
        self.given += share
        self.count += 1
        return share

    def last(self) -> Fraction:
        """The share of the last child: what the others left."""
        self.count += 1
        rest, self.given = 1 - self.given, Fraction(1)
        return rest


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(envelope)"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid envelope: " + "; ".join(parts)

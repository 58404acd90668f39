"""The console's back end: everything the pages show or do, with no Streamlit in it.

One :class:`Console` per mesh opens the stores and the transport through the same
:class:`~asya_agents.context.MeshContext` as ``asya`` (flags, then ``ASYA_*`` settings,
then ``mesh.yaml``), so the console, ``asya up`` and ``asya status`` started in separate
terminals see the same mesh. Pages stay thin: they
render what these methods return, which is also what the tests assert on.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import itertools
import json
import re
import string
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from asya_agents import status
from asya_agents.context import MeshContext
from asya_agents.crew import replay_failed
from asya_agents.envelope import ERROR_END, HAPPY_END
from asya_agents.loopthread import LoopThread
from asya_agents.manifest import LoadedMesh
from asya_agents.observe.history import read_history
from asya_agents.review import (
    DecideResult,
    DecisionRecord,
    ReviewItem,
    ReviewService,
    ReviewStore,
    send_back_path,
)
from asya_agents.settings import Settings
from asya_agents.stores import ResultRecord, ResultStore
from asya_agents.stores.signin import open_sign_in_store
from asya_agents.transports import Backend
from ui.signin import Gate, load_secret

__all__ = [
    "ActorRow",
    "Console",
    "ConsoleConfig",
    "Filters",
    "Sample",
    "history_csv",
    "history_rows",
    "judge_view",
    "md_code",
    "md_escape",
    "next_hops",
    "rates",
]

T = TypeVar("T")


@dataclass(frozen=True)
class ConsoleConfig:
    """Where the console looks: the mesh folder plus the overrides ``asya review`` got."""

    mesh: Path
    state_dir: Path | None = None
    transport: str | None = None
    store_url: str | None = None

    @classmethod
    def from_argv(cls, argv: list[str]) -> ConsoleConfig:
        """Parse the arguments after ``streamlit run ui/app.py --``."""
        parser = argparse.ArgumentParser(prog="asya review", add_help=False)
        parser.add_argument("--mesh", type=Path, required=True)
        parser.add_argument("--state-dir", type=Path, default=None)
        parser.add_argument("--transport", default=None)
        parser.add_argument("--store-url", default=None)
        args, _ = parser.parse_known_args(argv)
        return cls(mesh=args.mesh.resolve(), state_dir=args.state_dir,
                   transport=args.transport, store_url=args.store_url)


@dataclass(frozen=True)
class Filters:
    """What the queue page narrows pending items by; ``None`` means any. The console
    shows its own mesh's items only, whoever else shares the review store."""

    actor: str | None = None
    min_age: float | None = None
    min_score: float | None = None
    max_score: float | None = None


@dataclass(frozen=True)
class ActorRow:
    name: str
    depth: int
    in_flight: int
    delayed: int
    replicas: int


@dataclass(frozen=True)
class Sample:
    """Result-store totals at one moment; rates come from two of them."""

    at: float
    succeeded: int
    failed: int


class Console:
    """The stores, the transport and the review service of one mesh."""

    def __init__(self, config: ConsoleConfig, *, settings: Settings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.ctx = MeshContext.open(config.mesh, transport=config.transport,
                                    state_dir=config.state_dir, store_url=config.store_url,
                                    settings=settings)
        self.settings = self.ctx.settings
        self.loaded: LoadedMesh = self.ctx.loaded
        self.kind = self.ctx.kind
        self.state_dir = self.ctx.state_dir
        self.clock = clock
        self.reviews: ReviewStore = self.ctx.reviews()
        self.results: ResultStore = self.ctx.results()
        self.transport: Backend = self.ctx.transport()
        self.service = ReviewService(self.reviews, self.transport, self.results,
                                     mesh=self.loaded.name, clock=clock)
        # Failed sign-ins and sessions live beside the review store, so that every
        # console process throttles and signs out the same way.
        self.sign_ins = open_sign_in_store(self.ctx.store_url, state_dir=self.state_dir)
        self.gate = Gate(self.sign_ins, secret=load_secret(self.settings.console,
                                                          self.state_dir),
                         settings=self.settings.console, clock=clock)
        self.samples: deque[Sample] = deque(maxlen=720)
        self._sample_lock = threading.Lock()
        self._loop = LoopThread("asya-console-loop")

    @property
    def mesh(self) -> str:
        return self.loaded.name

    # -- the review queue -----------------------------------------------------------------

    def pending(self, filters: Filters = Filters(), *, limit: int | None = None
                ) -> list[ReviewItem]:
        """Pending items of this mesh, oldest first."""
        return self.reviews.pending(
            mesh=self.mesh, actor=filters.actor, older_than=filters.min_age,
            min_score=filters.min_score, max_score=filters.max_score, limit=limit)

    def counts(self) -> dict[str, int]:
        return self.reviews.counts(mesh=self.mesh)

    def decide(self, item_id: str, *, decision: str, reviewer: str, notes: str | None = None,
               payload: Any = None) -> DecideResult:
        """Record a decision and resume the envelope (exactly once across reviewers)."""
        if not reviewer:
            raise PermissionError("a decision needs a signed-in reviewer")
        return self._run(self.service.adecide(item_id, decision=decision, reviewer=reviewer,
                                              notes=notes, payload=payload))

    def history(self, limit: int | None = None) -> list[DecisionRecord]:
        return self.reviews.history(limit, mesh=self.mesh)

    # -- mesh status ------------------------------------------------------------------------

    def actors(self) -> list[ActorRow]:
        """Per actor (crew included): queue depth, in flight, delayed, replicas."""
        report = self._run(status.snapshot(
            mesh=self.mesh, transport_kind=self.kind, actors=self.ctx.actors,
            transport=self.transport, store=self.results, supervisor=self._supervisor(),
            state_dir=self.state_dir, now=self.clock))
        return [ActorRow(name, row["depth"], row["in_flight"], row["delayed"],
                         int(row["replicas"])) for name, row in report["actors"].items()]

    def supervisor_running(self) -> bool:
        return bool(self._supervisor())

    def _supervisor(self) -> dict[str, Any]:
        return status.read_supervisor(self.state_dir, now=self.clock)

    def mesh_history(self) -> list[dict[str, Any]]:
        """The samples the local supervisor kept of this mesh in the last hour, oldest
        first (:mod:`asya_agents.observe.history`); ``[]`` where none ever ran."""
        return read_history(self.state_dir, now=self.clock())

    def sample(self, *, min_interval: float = 1.0) -> list[Sample]:
        """Add a sample of the result store's totals (at most one per ``min_interval``)
        and return them all, oldest first."""
        with self._sample_lock:
            now = self.clock()
            if not self.samples or now - self.samples[-1].at >= min_interval:
                totals = self.results.totals()
                self.samples.append(Sample(now, totals.succeeded, totals.failed))
            return list(self.samples)

    def failures(self, limit: int = 20) -> list[ResultRecord]:
        """The latest failed envelopes, newest first."""
        failed = self.results.results(status="failed")
        return list(reversed(failed[-limit:]))

    def replay(self, envelope_id: str) -> str:
        """Send a failed envelope back where it failed (as ``asya replay`` does); the
        actor it went to."""
        envelope = self._run(replay_failed(self.results, self.transport, envelope_id))
        return envelope.route.curr

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        # Streamlit runs each session's script in its own thread; the transport (an
        # AMQP connection, say) belongs to one event loop, so every call goes to ours.
        return self._loop.run(coro)

    def close(self) -> None:
        self._run(self.transport.close())
        self._loop.close()
        self.sign_ins.close()
        self.ctx.close()


def rates(samples: list[Sample]) -> list[dict[str, float]]:
    """Throughput (ended per second) and error rate between consecutive samples."""
    out = []
    for a, b in itertools.pairwise(samples):
        dt = b.at - a.at
        ok, bad = max(b.succeeded - a.succeeded, 0), max(b.failed - a.failed, 0)
        if dt <= 0:
            continue
        out.append({"at": b.at, "succeeded/s": ok / dt, "failed/s": bad / dt,
                    "error rate": bad / (ok + bad) if ok + bad else 0.0})
    return out


# -- what the queue page shows about one item ------------------------------------------------


@dataclass(frozen=True)
class JudgeView:
    score: float | None
    verdict: str | None
    reasons: list[str] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)


def judge_view(payload: Any) -> JudgeView:
    """The judge's score, verdict, reasons and defects, wherever the judge put them
    (``payload["verdict"]`` or ``payload["judge"]`` as an object, or flat keys)."""
    if not isinstance(payload, dict):
        return JudgeView(None, None)
    block = next((payload[k] for k in ("verdict", "judge") if isinstance(payload.get(k), dict)),
                 payload)
    score = block.get("score")
    label = next((block[k] for k in ("verdict", "label", "decision")
                  if isinstance(block.get(k), str)), None)
    return JudgeView(float(score) if isinstance(score, int | float) else None, label,
                     _strings(block.get("reasons")), _strings(block.get("defects")))


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, str) else json.dumps(v) for v in value]
    return [json.dumps(value)]


def next_hops(item: ReviewItem) -> dict[str, list[str]]:
    """Where each decision sends the item: the route it would follow from here."""
    route = item.envelope.get("route", {})
    rest = list(route.get("next", []))
    send_back = send_back_path(item)
    reject = item.options.get("reject_route")
    return {
        "approve": [*rest, HAPPY_END] if rest else [HAPPY_END],
        "send_back": [*send_back, *rest, HAPPY_END],
        "reject": [*reject, HAPPY_END] if reject else [ERROR_END],
    }


# -- history as a table ------------------------------------------------------------------------

HISTORY_COLUMNS = ("decided_at", "id", "round", "decision", "reviewer", "notes")


def history_rows(records: list[DecisionRecord]) -> list[dict[str, Any]]:
    """Decisions as table rows (times in UTC, ISO 8601)."""
    return [{"decided_at": _iso(r.decided_at), "id": r.id, "round": r.round,
             "decision": r.decision, "reviewer": r.reviewer, "notes": r.notes or ""}
            for r in records]


def history_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


#: Every ASCII punctuation character: CommonMark lets each be escaped, and between them
#: they start every inline construct (links, images, raw HTML, emphasis, code, bare
#: URLs, Streamlit's ``:color[…]`` directives and ``$…$`` math) and every block one.
_MD_SPECIAL = frozenset(string.punctuation)


#: What Streamlit still acts on in plain text after the parse, escaped or not: GitHub's
#: "autolink literals" (http(s)://…, www.…, name@host) and emoji shortcodes (:smile:).
#: An invisible word joiner (U+2060) after a colon that something follows, between
#: ``www`` and its dot and before each ``@`` breaks them; escapes alone do not.
_UNLINK = re.compile(r"(?i)(?<=:)(?=\S)|(?<=www)(?=\.)|(?=@)")
_JOINER = "\u2060"


def md_escape(text: str) -> str:
    """``text`` shown literally in Streamlit Markdown: what a payload, a judge or a
    failing handler wrote must not turn into links, images, HTML, headings, emoji or
    formatting in a reviewer's page. Line breaks become spaces (no new blocks)."""
    flat = _UNLINK.sub(_JOINER, " ".join(str(text).splitlines()))
    return "".join(f"\\{c}" if c in _MD_SPECIAL else c for c in flat)


def md_code(text: str) -> str:
    """``text`` as a Markdown code span, literal whatever it holds: the fence is longer
    than any run of backticks inside it."""
    # Streamlit rewrites ``:material/name:`` even inside code: a joiner keeps it as is.
    flat = re.sub(r":(?=\S)", ":" + _JOINER, " ".join(str(text).splitlines()))
    fence = "`" * (max((len(r) for r in re.findall("`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") or not flat.strip() else ""
    return f"{fence}{pad}{flat}{pad}{fence}"

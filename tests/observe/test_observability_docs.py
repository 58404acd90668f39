"""docs/observability.md and the Grafana dashboard name exactly the metrics that exist.

The series come from the real registries (a replica's and the supervisor's), filled by
one of each event, so a metric added, renamed or dropped in code without the docs and
the dashboard following fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from asya_agents.envelope import Envelope
from asya_agents.observe.metrics import MetricsObserver, SupervisorCollector
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.seams import Decision
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import ROOT

DOC = ROOT / "docs" / "observability.md"
DASHBOARD = ROOT / "deploy" / "grafana" / "asya-mesh.json"
_NAME = re.compile(r"\basya_[a-z_]+\b")


async def _series(tmp_path: Path) -> set[str]:
    """Every asya_* sample name a replica and the supervisor expose."""
    metrics = MetricsObserver(process=False)
    env = Envelope.create({}, ["a"])
    metrics.received("a", env)
    metrics.received("a", None)
    metrics.succeeded("a", env, 0.1)
    metrics.failed("a", env, ValueError(), Decision("retry"), 0.1)
    metrics.failed("a", env, ValueError(), Decision("route"), 0.1)
    metrics.batch("a", 2)
    transport = EmbeddedTransport(tmp_path / "q.db")
    metrics.watch(Runtime(RuntimeConfig(actor="a", actors={"a"}), transport=transport,
                          terminal=_noop))
    await transport.close()
    metrics.registry.register(SupervisorCollector(lambda: {"actors": {"a": {}}}))
    return {s.name for fam in metrics.registry.collect() for s in fam.samples
            if s.name.startswith("asya_") and not s.name.endswith("_created")}


def _base(name: str) -> str:
    return re.sub(r"_(bucket|sum|count)$", "", name)


async def test_the_docs_list_every_metric_and_no_other(tmp_path: Path) -> None:
    series = await _series(tmp_path)
    documented = {n for n in _NAME.findall(DOC.read_text()) if n != "asya_agents"}
    exposed = {_base(s) for s in series}
    assert exposed - documented == set(), "metrics missing from docs/observability.md"
    unknown = {n for n in documented if n not in series and n not in exposed}
    assert unknown == set(), "docs/observability.md names metrics that do not exist"


async def test_the_dashboard_queries_only_metrics_that_exist(tmp_path: Path) -> None:
    series = await _series(tmp_path)
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {n for e in exprs for n in _NAME.findall(e)}
    assert used - series == set(), "the dashboard queries metrics that do not exist"
    # every replica metric family has a panel, and panels do not overlap ids
    assert {_base(s) for s in series} - {_base(n) for n in used} == set()
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all('actor=~"$actor"' in e for e in exprs)


async def _noop(envelope: Envelope) -> None:
    return None

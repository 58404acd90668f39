"""How a replica is instrumented from its settings: /metrics announced, spans exported."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from asya_agents.envelope import Envelope
from asya_agents.errors import ConfigError
from asya_agents.observe.spans import build_provider
from asya_agents.observe.wiring import Observers, announced, instrument
from asya_agents.runtime import Runtime, RuntimeConfig
from asya_agents.settings import MeshSettings
from asya_agents.transports.embedded import EmbeddedTransport


async def _noop(envelope: Envelope) -> None:
    return None


async def test_a_replica_serves_and_announces_its_metrics(tmp_path: Path) -> None:
    transport = EmbeddedTransport(tmp_path / "q.db")
    runtime = Runtime(RuntimeConfig(actor="judge", actors={"judge"}), transport=transport,
                      terminal=_noop)
    # Given default settings (a free port on 127.0.0.1)
    done = instrument(runtime, settings=MeshSettings(metrics_port=0), state_dir=tmp_path)
    try:
        # Then the URL is announced for this pid and answers with the replica's metrics
        assert done.metrics_url is not None
        assert announced(tmp_path, os.getpid()) == done.metrics_url
        record = json.loads((tmp_path / "replicas" / f"{os.getpid()}.json").read_text())
        assert record["actor"] == "judge"
        with urllib.request.urlopen(done.metrics_url, timeout=5) as resp:
            assert 'asya_concurrency{actor="judge"} 1.0' in resp.read().decode()
        assert isinstance(runtime.cfg.observer, Observers)
    finally:
        done.close()
        await transport.close()
    # and closing withdraws the announcement
    assert announced(tmp_path, os.getpid()) is None


async def test_a_negative_port_serves_no_metrics(tmp_path: Path) -> None:
    transport = EmbeddedTransport(tmp_path / "q.db")
    runtime = Runtime(RuntimeConfig(actor="a", actors={"a"}), transport=transport,
                      terminal=_noop)
    done = instrument(runtime, settings=MeshSettings(metrics_port=-1), state_dir=tmp_path)
    done.close()
    await transport.close()
    assert done.metrics_url is None and not (tmp_path / "replicas").exists()


def test_span_export_settings() -> None:
    assert build_provider("none") is None
    provider = build_provider("console")
    assert provider is not None
    provider.shutdown()
    with pytest.raises(ConfigError, match="ASYA_TRACE_EXPORT must be none, console or otlp"):
        build_provider("zipkin")

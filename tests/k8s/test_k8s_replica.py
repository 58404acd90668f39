"""The container command, run for real from the rendered mesh ConfigMap: what a pod
does, minus the pod. The embedded transport stands in for the broker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope
from asya_agents.k8s.render import HEARTBEAT_FILE, RenderOptions, render_mesh
from asya_agents.manifest import load_mesh
from asya_agents.replica import beat
from asya_agents.transports import Outgoing
from asya_agents.transports.embedded import EmbeddedTransport
from tests.conftest import ROOT


def test_beat_touches_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "run" / "heartbeat"

    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(beat(path, stop, every=60.0))
        await asyncio.sleep(0)  # let it take its first beat
        assert path.exists()
        stop.set()
        await asyncio.wait_for(task, timeout=5)  # returns promptly, not after 60 s

    asyncio.run(main())


async def _depth(db: Path, queue: str) -> int:
    transport = EmbeddedTransport(db)
    try:
        return (await transport.stats(queue)).depth
    finally:
        await transport.close()


async def _send(db: Path, envelope: Envelope) -> None:
    transport = EmbeddedTransport(db)
    try:
        await transport.ensure_queues(["split", "triage"])
        await transport.send([Outgoing("split", envelope.encode())])
    finally:
        await transport.close()


@pytest.mark.slow
def test_the_pod_command_serves_from_the_rendered_configmap(tmp_path: Path) -> None:
    # Given the mesh ConfigMap as the pod mounts it, the image root being this checkout
    options = RenderOptions(project_root=ROOT, image_root=str(ROOT))
    rendered = render_mesh(load_mesh(ROOT / "mesh" / "example"), options)
    mesh_dir, state = tmp_path / "etc-asya-mesh", tmp_path / "state"
    mesh_dir.mkdir()
    configmap: dict[str, Any] = rendered.files["mesh-configmap.yaml"][0]
    for name, text in configmap["data"].items():
        (mesh_dir / name).write_text(text)
    deployment = rendered.files["actor-split.yaml"][0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # When the container's command runs, with the paths of the pod moved under tmp
    args = [a.replace("/etc/asya/mesh", str(mesh_dir)).replace("/var/run/asya", str(state))
            for a in container["args"]]
    args[args.index("--transport") + 1] = "embedded"
    heartbeat = Path(HEARTBEAT_FILE.replace("/var/run/asya", str(state)))
    db = state / "queues.db"
    state.mkdir()
    asyncio.run(_send(db, Envelope.create({"text": "One. Two?"}, ["split", "triage"])))
    proc = subprocess.Popen([sys.executable, *container["command"][1:], *args],
                            cwd=tmp_path, env={**os.environ, "ASYA_LOG_LEVEL": "WARNING"})
    try:
        deadline = time.monotonic() + 60
        while asyncio.run(_depth(db, "triage")) < 2:
            assert proc.poll() is None, "the replica exited"
            assert time.monotonic() < deadline, "split did not route its output on"
            time.sleep(0.1)
        # Then it served the message, fanned out to the next actor and keeps a heartbeat
        assert heartbeat.exists()
        assert time.time() - heartbeat.stat().st_mtime < 30
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    # and SIGTERM drains and exits cleanly
    assert code == 0

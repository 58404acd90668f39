"""A real ``asya gateway`` process in front of a mesh, for the gateway's tests.

The mesh (``meshes/desk``) runs in the test process with :class:`LocalMesh`, on the
embedded transport or on RabbitMQ; the gateway is its own process started the way a
user starts it (``python -m asya_agents gateway MESH``), with a key in
``ASYA_GATEWAY_KEYS``, on a free port of 127.0.0.1, and reads the same state folder (and
on RabbitMQ the same queues). Clients are the real ones: httpx and httpx-sse, the MCP
SDK's client, the A2A SDK's client.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_agents.gateway.keys import hash_key
from asya_agents.testing import LocalMesh
from tests.conftest import ROOT, require_service

MESH = Path(__file__).parent / "meshes" / "desk"
#: The same steps, with a default route that stops at the review desk.
REVIEW_MESH = Path(__file__).parent / "meshes" / "review"
KEY = "test-key-0123456789abcdef0123456789"
CLIENT = "tester"
TRANSPORTS = ["embedded", "rabbitmq"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A gateway process over a running :class:`LocalMesh`."""

    mesh: LocalMesh
    env: dict[str, str]
    folder: Path = MESH
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        """Where the gateway's stdout and stderr go (every start appends)."""
        return self.mesh.state_dir / f"gateway-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEY}"}

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=30, **kwargs)

    def start(self) -> Served:
        args = [sys.executable, "-m", "asya_agents", "gateway", str(self.folder), "--port",
                str(self.port), "--state-dir", str(self.mesh.state_dir),
                "--transport", self.mesh.ctx.kind]
        # its log goes to a file (a pipe nobody reads would block a chatty gateway)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(args, env=self.env, cwd=ROOT,
                                         stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.log.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise TimeoutError("the gateway did not answer /healthz within 30 s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the gateway and wait for it; its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()

    def wait_ended(self, ids: list[str], timeout: float = 60) -> None:
        self.mesh.join(ids, timeout=timeout)


def gateway_env(mesh: LocalMesh, **extra: str) -> dict[str, str]:
    env = {**os.environ, "ASYA_GATEWAY_KEYS": f"{CLIENT}:{hash_key(KEY)},other:"
           f"{hash_key('another-key-0123456789abcdef')}", "ASYA_LOG_LEVEL": "WARNING",
           "ASYA_METRICS_PORT": "-1", **extra}
    env.pop("ASYA_STORE_URL", None)
    if mesh.ctx.kind == "rabbitmq":
        env["ASYA_RABBITMQ_QUEUE_PREFIX"] = mesh.ctx.settings.rabbitmq.queue_prefix
    return env


@contextlib.contextmanager
def serving(transport: str, state_dir: Path, *, folder: Path = MESH,
            **env: str) -> Iterator[Served]:
    """The mesh ``folder`` on ``transport`` and a gateway in front of it."""
    if transport == "rabbitmq":
        require_service("RabbitMQ", port=5672)
    with LocalMesh(folder, transport=transport, state_dir=state_dir) as mesh:
        served = Served(mesh, gateway_env(mesh, **env), folder).start()
        try:
            yield served
        finally:
            served.stop()


@pytest.fixture(scope="module", params=TRANSPORTS)
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One gateway per transport for a module's tests (they do not stop it)."""
    with serving(request.param, tmp_path_factory.mktemp(f"gw-{request.param}")) as s:
        yield s


@pytest.fixture(scope="module", params=TRANSPORTS)
def reviewed(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A gateway of the review mesh, whose every job waits for a person."""
    with serving(request.param, tmp_path_factory.mktemp(f"gw-review-{request.param}"),
                 folder=REVIEW_MESH) as s:
        yield s


@pytest.fixture
def api(served: Served) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client

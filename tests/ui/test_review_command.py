"""`asya review`: MESH opens the console, hash-password writes an entry, a missing
streamlit is one clear line with the install hint, and stopping the command (SIGTERM,
SIGINT, even SIGKILL) stops the Streamlit server it started: nothing is left serving."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from asya_agents.cli import main
from tests.conftest import ROOT, port_open
from tests.ui.conftest import MESH, reviewers_value


def test_without_streamlit_the_console_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "streamlit", None)  # import streamlit now fails
    result = CliRunner().invoke(main, ["review", str(MESH), "--headless"])
    assert result.exit_code == 2
    assert "pip install 'asya-agents[ui]'" in result.output


def test_a_mesh_that_does_not_exist_is_named() -> None:
    result = CliRunner().invoke(main, ["review", "no/such/mesh"])
    assert result.exit_code == 2 and "no/such/mesh" in result.output


def test_help_lists_open_and_hash_password() -> None:
    result = CliRunner().invoke(main, ["review", "--help"])
    assert result.exit_code == 0
    assert "open" in result.output and "hash-password" in result.output


# -- `asya review` stops what it started ---------------------------------------------------


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (read from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return any(_alive(int(p.parent.name)) for p in Path("/proc").glob("[0-9]*/stat")
               if _pgid(p) == pgid)


def _pgid(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL],
                         ids=["SIGTERM", "SIGINT", "SIGKILL"])
def test_stopping_asya_review_stops_the_streamlit_server(tmp_path: Path,
                                                         sig: signal.Signals) -> None:
    from tests.ui.test_console_browser import _healthy, free_port, until

    # Given `asya review` serving the console
    port = free_port()
    env = {**os.environ, "ASYA_REVIEWERS": reviewers_value(), "ASYA_LOG_FORMAT": "text"}
    env.pop("ASYA_STORE_URL", None)
    with (tmp_path / "review.log").open("wb") as log:
        cli = subprocess.Popen([sys.executable, "-m", "asya_agents", "review", str(MESH),
                                "--headless", "--port", str(port), "--state-dir",
                                str(tmp_path / "state")], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    servers: list[int] = []
    try:
        until("the console to answer", lambda: _healthy(f"http://127.0.0.1:{port}"))
        servers = _children(cli.pid)
        assert servers, "asya review started no server process"
        # When the command gets the signal
        cli.send_signal(sig)
        cli.wait(30)
        # Then the server stops with it: no process of its group is left, the port closes
        until("the Streamlit server to stop",
              lambda: not any(_group_alive(p) or _alive(p) for p in servers), timeout=30)
        assert not _group_alive(cli.pid)
        assert not port_open("127.0.0.1", port)
        if sig != signal.SIGKILL:
            assert cli.returncode in (0, 128 + sig)
    finally:
        for pid in [cli.pid, *servers]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            cli.wait(5)

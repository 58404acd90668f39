"""``asya demo`` closes its loop: while photos wait for review the demo keeps its mesh
serving, so a photo a reviewer approves in the console goes on to ``accepted/``; and
what the mesh writes keeps the permissions of an ordinary new file (the umask's)."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from asya_agents.blob import BlobStore
from asya_agents.cli import main
from asya_agents.storage import StoragePolicy
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "mesh" / "food-image"))
from food_demo import serve_command, serve_demo

MESH = ROOT / "mesh" / "food-image"

pytestmark = [pytest.mark.filterwarnings("ignore:unclosed <socket:ResourceWarning"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]


class Output:
    """The lines a child prints, read on a thread so its pipe never fills."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for(self, pattern: str, *, timeout: float) -> re.Match[str]:
        """The first line (from here on) that matches ``pattern``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f}s; "
                                     f"the demo printed:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"the demo ended before printing {pattern!r}:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found


@contextlib.contextmanager
def demo_process(*args: str, umask: int) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    """``asya demo ARGS`` in a process of its own, with the heuristic judge (no key) and
    ``umask``; stopped with SIGINT (Ctrl-C) if the test did not stop it."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENAI_API_KEY", "ASYA_LLM_API_KEY", "ASYA_BLOB_ROOTS")}
    proc = subprocess.Popen([sys.executable, "-m", "asya_agents", "demo", *args],
                            cwd=ROOT, env=env, umask=umask, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc, Output(proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def approve_one(state_dir: Path) -> str:
    """Approve the first photo waiting in the review store, the way the console does (its
    back end, the same call its Approve button makes); the photo's name."""
    from ui.console import Console, ConsoleConfig

    console = Console(ConsoleConfig(MESH, state_dir=state_dir))
    try:
        waiting = console.pending()
        assert waiting, "nothing waits for review"
        item = waiting[0]
        result = console.decide(item.id, decision="approve", reviewer="ana")
        assert result.won
        return str(item.payload["photo"])
    finally:
        console.close()


def outcome_in_report(page: str, name: str) -> str:
    """The outcome ``report.html`` shows for photo ``name``."""
    row = next(r for r in page.split("<tr>") if f"<br>{name}<br>" in r)
    found = re.search(r'<b style="color:[^"]*">(\w+)</b>', row)
    assert found is not None, row
    return found.group(1)


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_a_photo_approved_while_the_demo_serves_lands_in_accepted(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # Given the demo in its own process, done with its batch and serving its mesh
    with demo_process("--out", str(out), "--serve", umask=0o027) as (proc, output):
        console_line = output.wait_for(r"^\s+ASYA_BLOB_ROOTS=\S+ asya review ", timeout=300)
        output.wait_for(r"^serving the mesh until Ctrl-C", timeout=30)
        # When a reviewer approves a waiting photo in the console
        name = approve_one(out / ".asya")
        # Then the demo says where it went, and that is accepted/
        landed = output.wait_for(rf"^{re.escape(name)}: accepted -> (\S+)$", timeout=120)
        target = Path(landed.group(1))  # NAME.cI.enhanced.png, or NAME.enhanced.png
        assert target.parent == out / "accepted" and target.is_file()  # after a loop
        assert re.fullmatch(rf"{re.escape(name)}(\.c[0-2])?\.enhanced\.png", target.name)
        # with an ordinary file's mode: 0666 less the process umask (027)
        assert stat.S_IMODE(target.stat().st_mode) == 0o640
        assert stat.S_IMODE((out / "photos" / target.name).stat().st_mode) == 0o640
        # and Ctrl-C stops the demo cleanly, with the report brought up to date
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    output.wait_for(r"^stopped serving; report: ", timeout=5)
    assert str(out / ".asya") in console_line.string
    page = (out / "report.html").read_text()
    assert outcome_in_report(page, name) == "accepted"
    assert outcome_in_report(page, "coffee") == "accepted"


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_without_serving_the_demo_prints_the_command_that_serves_it(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    # Given a demo that stopped after its batch, as told
    with demo_process("--out", str(out), "--no-serve", "--candidates", "1",
                      umask=0o022) as (proc, output):
        command = output.wait_for(r"^\s+(asya demo .* --serve-only)$", timeout=300).group(1)
        assert proc.wait(60) == 0
    assert command == serve_command(out.resolve(), MESH.resolve())
    # When a reviewer approves a photo while nothing serves the mesh
    name = approve_one(out / ".asya")
    assert not (out / "accepted" / f"{name}.enhanced.png").exists()
    # Then the printed command serves it, and the photo lands in accepted/
    args = command.split()[2:]
    with demo_process(*args, umask=0o022) as (proc, output):
        output.wait_for(rf"^{re.escape(name)}: accepted -> ", timeout=120)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    target = out / "accepted" / f"{name}.enhanced.png"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert outcome_in_report((out / "report.html").read_text(), name) == "accepted"


def test_serving_a_folder_where_no_demo_ran_is_a_clear_error(tmp_path: Path) -> None:
    from asya_agents.errors import ConfigError

    with pytest.raises(ConfigError, match="no demo ran here"):
        serve_demo(out=tmp_path, echo=lambda line: None)
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--serve-only"])
    assert result.exit_code != 0 and "no demo ran here" in result.output
    result = CliRunner().invoke(main, ["demo", "--out", str(tmp_path), "--serve-only",
                                       "--photos", str(tmp_path)])
    assert result.exit_code == 2 and "leave out --photos" in result.output


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_written_files_get_the_mode_of_an_ordinary_new_file(tmp_path: Path,
                                                            umask: int) -> None:
    store = BlobStore(policy=StoragePolicy(roots=(tmp_path,)))
    previous = os.umask(umask)
    try:
        store.write_bytes((tmp_path / "new" / "a.png").as_uri(), b"one")
        (tmp_path / "old.png").write_bytes(b"made elsewhere")
        os.chmod(tmp_path / "old.png", 0o600)
        store.write_bytes((tmp_path / "old.png").as_uri(), b"replaced")
    finally:
        os.umask(previous)
        store.close()
    for name in ("new/a.png", "old.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o777 & ~umask
    assert (tmp_path / "old.png").read_bytes() == b"replaced"

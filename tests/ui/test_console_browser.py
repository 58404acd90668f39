"""End to end in a real browser: `asya up` runs the food-image mesh (the real enhance,
judge and review actors) with judge thresholds that send every photo to review,
`asya review` serves the console, and Debian's headless chromium (driven by Playwright,
never a downloaded browser) signs in and approves; the envelope then reaches
`happy-end`, as `asya results --json` shows.

A screenshot of the queue page is saved as artifacts/review-queue.png.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from asya_agents.review import open_review_store
from tests.conftest import ROOT, SERVICE_SKIP
from tests.ui.conftest import PASSWORDS, make_photo, reviewers_value

FOOD = ROOT / "mesh" / "food-image"

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
T = TypeVar("T")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def until(what: str, probe: Callable[[], T | None], *, timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something (real processes: nothing to inject)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.2)
    raise TimeoutError(f"gave up waiting for {what} after {timeout:.0f}s")


def asya(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "asya_agents", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


class Processes:
    """Background processes of one test, stopped (SIGINT, then SIGKILL) at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "asya_agents", *args], env=env,
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append((proc, log))
        return proc

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        for proc, log in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            log.close()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    try:
        yield procs
    finally:
        procs.stop()


def food_mesh_sending_all_to_review(folder: Path) -> Path:
    """A copy of mesh/food-image whose judge (heuristic backend) finds every photo
    uncertain: accept above 1.0, reject below 0.0."""
    folder.mkdir()
    mesh = yaml.safe_load((FOOD / "mesh.yaml").read_text())
    mesh["spec"]["pythonPath"] = [str(ROOT), str(folder)]
    mesh["spec"]["flavorPaths"] = [str(ROOT / "mesh" / "flavors")]
    (folder / "mesh.yaml").write_text(yaml.safe_dump(mesh))
    actors = list(yaml.safe_load_all((FOOD / "actors.yaml").read_text()))
    for doc in actors:
        spec, name = doc["spec"], doc["metadata"]["name"]
        spec.setdefault("scaling", {})["pollingInterval"] = "0.2s"
        if name == "judge":
            spec["config"].update(backend="heuristic", accept=1.0, reject=0.0)
        if name == "review":
            spec["config"]["sweep_interval"] = "0.5s"
    (folder / "actors.yaml").write_text(yaml.safe_dump_all(actors))
    (folder / "food_glue.py").write_text((FOOD / "food_glue.py").read_text())
    return folder


def result_of(mesh: Path, state_dir: Path, env_id: str,
              env: dict[str, str]) -> dict[str, Any] | None:
    records = json.loads(asya("results", str(mesh), "--state-dir", str(state_dir), "--json",
                              env=env))
    return next((r for r in records if r["id"] == env_id and r["status"] != "paused"), None)


def test_reviewer_approves_in_a_browser_and_the_envelope_ends_happily(
        tmp_path: Path, processes: Processes) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{SERVICE_SKIP} chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import expect, sync_playwright

    state_dir, port = tmp_path / "state", free_port()
    env = {**os.environ, "ASYA_REVIEWERS": reviewers_value(), "ASYA_STATE_DIR": str(state_dir),
           "ASYA_LOG_FORMAT": "text", "ASYA_METRICS_PORT": "-1",
           # the photo, the mesh's copy and its state all live in the test's folder
           "ASYA_BLOB_ROOTS": str(tmp_path)}
    env.pop("ASYA_STORE_URL", None)
    env.pop("ASYA_TRANSPORT", None)

    # Given the food-image mesh running, and one photo sent that the judge sends to review
    mesh = food_mesh_sending_all_to_review(tmp_path / "food-image")
    processes.start("up", ["up", str(mesh)], env)
    photo = make_photo(tmp_path / "photos" / "soup.png")
    sent = asya("send", str(mesh), "--payload", json.dumps({"image_url": photo, "dish": "soup"}),
                env=env)
    env_id = sent.split(":")[-1].strip()
    store = open_review_store(None, state_dir=state_dir)
    try:
        [parked] = until("the photo to be parked for review", lambda: store.pending(),
                         timeout=90)
    finally:
        store.close()
    assert parked.id == env_id and parked.payload["verdict"]["verdict"] == "uncertain"
    score = f"{parked.payload['verdict']['score']:.2f}"

    # And the console served by `asya review`
    processes.start("review", ["review", str(mesh), "--port", str(port), "--headless"], env)
    url = f"http://127.0.0.1:{port}"
    until("the console to answer", lambda: _healthy(url))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            page.goto(url)
            # When the reviewer signs in
            page.get_by_role("textbox", name="Name").fill("alice")
            page.get_by_role("textbox", name="Password").fill(PASSWORDS["alice"])
            page.get_by_role("button", name="Sign in").click()
            # Then the queue shows the parked photo, side by side with its enhancement
            expect(page.get_by_role("heading", name="Review queue")).to_be_visible(timeout=30_000)
            card = page.locator(f".st-key-item-{env_id}")
            expect(card).to_be_visible(timeout=30_000)
            expect(card.locator("img:visible")).to_have_count(2, timeout=30_000)
            expect(card.get_by_test_id("stMetricValue").first).to_have_text(score)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "review-queue.png"), full_page=True)
            # When she approves it
            card.get_by_role("button", name="Approve", exact=True).click()
            expect(page.get_by_text(f"{env_id}: approve recorded")).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Nothing waits for review.")).to_be_visible(timeout=30_000)
        finally:
            browser.close()

    # Then the envelope resumes on its route and ends in happy-end
    record = until("the approved envelope to end",
                   lambda: result_of(mesh, state_dir, env_id, env), timeout=60)
    assert record["status"] == "succeeded"
    assert record["route"]["prev"] == ["enhance", "judge", "review", "upload"]
    assert record["payload"]["uploaded_url"].endswith(".png")
    assert record["payload"]["review"]["reviewer"] == "alice"


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False

"""Fixtures for the review console: reviewers, photos, real parked envelopes, and the
stores on SQLite and on the PostgreSQL at 127.0.0.1:5432 (a fresh schema per test)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope
from asya_agents.review import ReviewConfig, open_review_store
from asya_agents.stores import open_result_store
from tests.conftest import ROOT

MESH = Path(__file__).parent / "review_mesh"
APP = ROOT / "ui" / "app.py"
PASSWORDS = {"alice": "alice-pw-1", "bob": "bob-pw-2"}


@functools.cache
def reviewers_value() -> str:
    from ui.auth import hash_password

    return ",".join(f"{name}:{hash_password(pw)}" for name, pw in PASSWORDS.items())


def make_photo(path: Path, *, tint: tuple[int, int, int] = (120, 90, 60)) -> str:
    """A small dull 'photo' (a plate on a table); its file:// URL."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (160, 120), (70, 60, 50))
    draw = ImageDraw.Draw(img)
    draw.ellipse((30, 15, 130, 105), fill=(180, 175, 170))
    draw.ellipse((50, 35, 110, 85), fill=tint)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path.as_uri()


def steps() -> Any:
    """The test mesh's handlers, imported the way a replica imports them."""
    if str(MESH) not in sys.path:
        sys.path.insert(0, str(MESH))
    import review_ui_steps

    return review_ui_steps


@dataclass
class Parking:
    """Parks envelopes the way the review actor does, after running them through the
    test mesh's real enhance and judge handlers."""

    state_dir: Path
    store_url: str | None
    photos: Path

    def park(self, name: str, *, score: float = 0.62, mesh: str = "review-ui",
             actor: str = "review", clock: Any = None) -> str:
        mod = steps()
        url = make_photo(self.photos / f"{name}.png")
        env = Envelope.create({"image_url": url, "dish": name, "expected_score": score},
                              ["enhance", "judge", "upload"])
        env.payload = mod.enhance(env.payload)
        env = env.advanced()
        env = Envelope.from_dict(mod.judge(env.to_dict())).advanced()
        assert env.route.curr == "review"
        return self.park_envelope(env.to_dict(), mesh=mesh, actor=actor, clock=clock)

    def park_envelope(self, data: dict[str, Any], *, mesh: str = "review-ui",
                      actor: str = "review", clock: Any = None) -> str:
        """Park ``data`` as it is, the way the review actor stores an envelope: what a
        test needs for payloads no handler would write (broken images, attacks)."""
        results = open_result_store(self.store_url, state_dir=self.state_dir)
        kwargs = {"clock": clock} if clock is not None else {}
        store = open_review_store(self.store_url, state_dir=self.state_dir, **kwargs)
        try:
            results.record("paused", data)
            store.park(data, actor=actor, mesh=mesh, deadline=None,
                       options=ReviewConfig().options())
        finally:
            store.close()
            results.close()
        return str(data["id"])


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def console_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                store_url: str | None) -> Iterator[Parking]:
    """The console's command line and environment, as `asya review` would set them."""
    state_dir = tmp_path / "state"
    monkeypatch.setattr(sys, "argv", ["app.py", "--mesh", str(MESH),
                                      "--state-dir", str(state_dir)])
    monkeypatch.setenv("ASYA_REVIEWERS", reviewers_value())
    monkeypatch.delenv("ASYA_REVIEWERS_FILE", raising=False)
    # the parked photos live outside the mesh: the console may read them only so
    monkeypatch.setenv("ASYA_BLOB_ROOTS", str(tmp_path / "photos"))
    if store_url:
        monkeypatch.setenv("ASYA_STORE_URL", store_url)
    else:
        monkeypatch.delenv("ASYA_STORE_URL", raising=False)
    yield Parking(state_dir, store_url, tmp_path / "photos")
    from ui import state

    state.release_consoles()

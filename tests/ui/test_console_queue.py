"""One bad item must not blank the review queue: an image that cannot be read or
decoded, or a payload that breaks its card, shows a placeholder with the reason, and
every other card still renders and can be decided on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from asya_agents.envelope import Envelope
from tests.ui.conftest import Parking, make_photo
from tests.ui.test_console_flows import plain, signed_in, texts

pytestmark = pytest.mark.timeout(90)


def parked_at_review(parking: Parking, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An envelope as the judge leaves it at `review`, with ``payload``."""
    env = Envelope.create(payload, ["enhance", "judge", "review", "upload"])
    return env.advanced().advanced().to_dict()


def headings(at: Any) -> list[str]:
    return [m.value.split("`")[1] for m in at.markdown if m.value.startswith("#### ")]


def test_an_image_that_cannot_be_read_or_decoded_leaves_the_rest_of_the_queue(
        console_env: Parking, tmp_path: Path) -> None:
    # Given a photo whose bytes are not an image, one whose file is gone, and a good one
    photos = console_env.photos
    photos.mkdir(parents=True, exist_ok=True)
    garbage = photos / "garbage.png"
    garbage.write_bytes(b"this is not a PNG at all")
    good = make_photo(photos / "good.png")
    broken = console_env.park_envelope(parked_at_review(console_env, "broken", {
        "image_url": garbage.as_uri(), "enhanced_url": (photos / "gone.png").as_uri(),
        "verdict": {"score": 0.5, "verdict": "uncertain"}}))
    fine = console_env.park("salad")
    # When alice opens the queue
    at = signed_in("alice")
    # Then both cards are there, in order, and nothing raised out of the page
    assert not at.exception
    assert headings(at) == [broken, fine]
    # And the broken card says why each image is missing
    warnings = texts(at.warning)
    assert any(w.startswith("original: cannot show") and "garbage.png" in w for w in warnings)
    assert any(w.startswith("enhanced: cannot show") and "gone.png" in w for w in warnings)
    # And the good card after it shows both its images, and can be decided on
    captions = [plain(c) for img in at.get("image") for c in img.captions]  # type: ignore[attr-defined]
    assert "original · salad.png" in captions and good
    assert at.button(key=f"approve-{fine}") and at.button(key=f"approve-{broken}")


def test_a_payload_that_breaks_its_card_shows_the_error_and_the_next_card(
        console_env: Parking) -> None:
    # Given an item whose route ahead is not a list of names (what no runtime writes)
    odd = parked_at_review(console_env, "odd", {"dish": "odd"})
    odd["route"]["next"] = 5
    bad = console_env.park_envelope(odd)
    fine = console_env.park("soup")
    # When alice opens the queue
    at = signed_in("alice")
    # Then the odd card says why it cannot be shown, and still offers the decisions
    assert not at.exception
    assert headings(at) == [bad, fine]
    assert any("This item cannot be shown: TypeError" in e for e in texts(at.error))
    assert at.button(key=f"reject-{bad}") and at.text_input(key=f"notes-{bad}")
    # And the next card renders in full
    assert any("enhance → judge → `review`" in plain(m.value) for m in at.markdown)
    assert at.button(key=f"approve-{fine}")

"""The review console's flows in Streamlit's AppTest, on real stores (SQLite and
PostgreSQL) with envelopes parked the way the review actor parks them.

Each test reads as Given (parked items, a reviewer) / When (the clicks) / Then (what the
page shows, and what the store and the transport hold afterwards).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from asya_agents.review import open_review_store
from asya_agents.transports.embedded import EmbeddedTransport
from tests.ui.conftest import APP, MESH, PASSWORDS, Parking

pytestmark = pytest.mark.timeout(90)


def signed_in(name: str = "alice", password: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    at.text_input(key="sign-in-name").input(name)
    at.text_input(key="sign-in-password").input(password or PASSWORDS[name])
    at.button[0].click().run()
    return at


def queued(state_dir: Path, queue: str) -> list[dict[str, object]]:
    """Envelopes waiting on ``queue`` of the mesh's embedded transport."""
    async def peek() -> list[dict[str, object]]:
        tr = EmbeddedTransport(state_dir / "queues.db")
        try:
            got = await tr.receive(queue, max_messages=50, wait=0.0, visibility=30.0)
            for d in got:
                await tr.nack(d)
            return [json.loads(d.body) for d in got]
        finally:
            await tr.close()

    return asyncio.run(peek())


def plain(markdown: str) -> str:
    """Markdown source as it reads once rendered: the console escapes what payloads bring
    (every ASCII punctuation character, and a word joiner after colons, in www. and
    before @), so drop the backslashes and the joiners."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")


def texts(elements: object) -> list[str]:
    return [plain(e.value) for e in elements]  # type: ignore[attr-defined]


# -- sign in ---------------------------------------------------------------------------------


def test_wrong_password_is_refused_and_nothing_is_shown(console_env: Parking) -> None:
    # Given a parked item
    console_env.park("soup")
    # When someone signs in with a wrong password
    at = signed_in("alice", "not-her-password")
    # Then they stay on the sign-in form, see why, and see no item
    assert "Wrong name or password." in texts(at.error)
    assert "reviewer" not in at.session_state
    assert not [b for b in at.button if b.key and b.key.startswith("approve-")]


def test_unknown_reviewer_is_refused(console_env: Parking) -> None:
    at = signed_in("mallory", "alice-pw-1")
    assert "Wrong name or password." in texts(at.error)
    assert "reviewer" not in at.session_state


def test_no_reviewers_configured_means_no_console(console_env: Parking,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASYA_REVIEWERS")
    at = AppTest.from_file(str(APP), default_timeout=30).run()
    assert any("No reviewers are configured" in e for e in texts(at.error))
    assert not at.text_input


def test_sign_in_shows_the_queue_with_counts_images_and_verdict(console_env: Parking) -> None:
    # Given two parked items
    first = console_env.park("soup", score=0.55)
    second = console_env.park("salad", score=0.71)
    # When alice signs in
    at = signed_in("alice")
    # Then she sees the queue, oldest first, with counts, images and the judge's verdict
    assert at.session_state["reviewer"] == "alice"
    assert [t.value for t in at.title] == ["Review queue"]
    pending = next(m for m in at.metric if m.label == "Pending")
    assert pending.value == "2"
    headings = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert [h.split("`")[1] for h in headings] == [first, second]
    captions = [plain(c) for img in at.get("image")  # type: ignore[attr-defined]
                for c in img.captions]
    # Side by side with short captions; the expander holds them at full resolution.
    assert [c for c in captions if c] == [
        "original · soup.png", "enhanced · soup.enhanced.png",
        "original · salad.png", "enhanced · salad.enhanced.png"]
    scores = [m.value for m in at.metric if m.label == "Judge's score"]
    assert scores == ["0.55", "0.71"]
    route = next(plain(m.value) for m in at.markdown if "**Came from**" in m.value)
    assert "enhance → judge → `review`" in route and "**Approve** → upload → happy-end" in route


# -- filters --------------------------------------------------------------------------------


def test_filters_narrow_the_queue_by_score_actor_and_age(console_env: Parking) -> None:
    # Given a low and a high score, one parked an hour ago by another review actor
    old = time.time() - 3600
    low = console_env.park("soup", score=0.3, actor="review-desserts", clock=lambda: old)
    high = console_env.park("salad", score=0.9)
    at = signed_in("alice")

    def shown() -> list[str]:
        return [m.value.split("`")[1] for m in at.markdown if m.value.startswith("#### ")]

    assert shown() == [low, high]
    at.selectbox(key="queue-order").select("Newest first").run()
    assert shown() == [high, low]
    at.selectbox(key="queue-order").select("Oldest first").run()
    # When she narrows the score to 0.5..1
    at.slider(key="filter-score").set_range(0.5, 1.0).run()
    assert shown() == [high]
    # When she asks for the desserts actor only (score filter back to all)
    at.slider(key="filter-score").set_range(0.0, 1.0).run()
    at.selectbox(key="filter-actor").select("review-desserts").run()
    assert shown() == [low]
    # When she asks for items waiting at least 30 minutes (any actor)
    at.selectbox(key="filter-actor").select("(any)").run()
    at.number_input(key="filter-age").set_value(30).run()
    assert shown() == [low]
    # When another mesh parks an item in the same store, this mesh's console never
    # shows it (meshes may share one database) and offers no mesh to pick
    console_env.park("curry", mesh="qa-loop")
    at.number_input(key="filter-age").set_value(0).run()
    assert shown() == [low, high]
    assert not [s for s in at.selectbox if s.key == "filter-mesh"]


# -- decisions ------------------------------------------------------------------------------


def test_approve_resumes_the_envelope_on_its_route(console_env: Parking) -> None:
    item = console_env.park("soup")
    at = signed_in("alice")
    at.button(key=f"approve-{item}").click().run()
    assert any(item in s and "upload → happy-end" in s for s in texts(at.success))
    assert at.success and not [m for m in at.markdown if item in m.value and "####" in m.value]
    store = open_review_store(console_env.store_url, state_dir=console_env.state_dir)
    try:
        decided = store.get(item)
        assert decided is not None and decided.decision == "approve"
        assert decided.decided_by == "alice" and decided.published
    finally:
        store.close()
    [resumed] = queued(console_env.state_dir, "upload")
    assert resumed["id"] == item
    assert resumed["payload"]["review"]["reviewer"] == "alice"  # type: ignore[index]


def test_reject_needs_a_reason_then_goes_to_error_end(console_env: Parking) -> None:
    item = console_env.park("soup")
    at = signed_in("bob")
    # When bob rejects without a reason, nothing is decided
    at.button(key=f"reject-{item}").click().run()
    assert any("write a reason first" in e for e in texts(at.error))
    assert queued(console_env.state_dir, "error-end") == []
    # When he gives one
    at.text_input(key=f"notes-{item}").input("the soup is not on the menu")
    at.button(key=f"reject-{item}").click().run()
    assert any("reject recorded" in s for s in texts(at.success))
    [failed] = queued(console_env.state_dir, "error-end")
    error = failed["meta"]["error"]  # type: ignore[index]
    assert "bob" in error["message"] and "not on the menu" in error["message"]


def test_send_back_detours_through_enhance_and_judge_with_notes(console_env: Parking) -> None:
    item = console_env.park("soup")
    at = signed_in("alice")
    at.text_input(key=f"notes-{item}").input("less glare please")
    at.button(key=f"send_back-{item}").click().run()
    [again] = queued(console_env.state_dir, "enhance")
    assert again["route"]["next"] == ["judge", "upload"]  # type: ignore[index]
    assert again["payload"]["review_notes"] == "less glare please"  # type: ignore[index]


def test_edit_then_approve_sends_the_edited_payload(console_env: Parking) -> None:
    item = console_env.park("soup")
    at = signed_in("alice")
    edited = json.loads(at.text_area(key=f"edit-{item}").value)
    edited["dish"] = "tomato soup"
    # A broken edit is refused with the reason
    at.text_area(key=f"edit-{item}").input("{not json")
    at.button(key=f"edit-approve-{item}").click().run()
    assert any("not valid JSON" in e for e in texts(at.error))
    at.text_area(key=f"edit-{item}").input(json.dumps(edited))
    at.button(key=f"edit-approve-{item}").click().run()
    [resumed] = queued(console_env.state_dir, "upload")
    assert resumed["payload"]["dish"] == "tomato soup"  # type: ignore[index]
    assert resumed["payload"]["review"]["decision"] == "edit"  # type: ignore[index]


def test_concurrent_decisions_one_wins_the_other_sees_who(console_env: Parking) -> None:
    # Given alice and bob both looking at the same item
    item = console_env.park("soup")
    alice, bob = signed_in("alice"), signed_in("bob")
    assert bob.button(key=f"approve-{item}")
    # When alice approves, and then bob (whose page still shows it) rejects
    alice.button(key=f"approve-{item}").click().run()
    bob.text_input(key=f"notes-{item}").input("looks burnt")
    bob.button(key=f"reject-{item}").click().run()
    # Then bob is told alice decided, and the envelope resumed once, on her decision
    assert any("already decided by alice" in w and "approve" in w for w in texts(bob.warning))
    assert [e["id"] for e in queued(console_env.state_dir, "upload")] == [item]
    assert queued(console_env.state_dir, "error-end") == []


def test_history_lists_every_decision_with_who_and_when(console_env: Parking) -> None:
    first, second = console_env.park("soup"), console_env.park("salad")
    at = signed_in("alice")
    at.button(key=f"approve-{first}").click().run()
    at.text_input(key=f"notes-{second}").input("wrong dish")
    at.button(key=f"reject-{second}").click().run()
    at.switch_page("views/history.py").run()
    assert [t.value for t in at.title] == ["Decision history"]
    frame = at.dataframe[0].value
    assert list(frame["id"]) == [second, first]
    assert list(frame["reviewer"]) == ["alice", "alice"]
    assert list(frame["decision"]) == ["reject", "approve"]
    assert list(frame["notes"]) == ["wrong dish", ""]
    [download] = at.get("download_button")
    assert download.proto.label == "Download CSV"


def test_history_csv_has_one_row_per_decision() -> None:
    import csv
    import io

    from asya_agents.review import DecisionRecord
    from ui.console import history_csv, history_rows

    rows = history_rows([DecisionRecord("abc", 2, "reject", "bob", 0.0, "burnt, \"black\"")])
    parsed = list(csv.DictReader(io.StringIO(history_csv(rows))))
    assert parsed == [{"decided_at": "1970-01-01T00:00:00+00:00", "id": "abc", "round": "2",
                       "decision": "reject", "reviewer": "bob", "notes": 'burnt, "black"'}]


def test_two_consoles_clicking_at_the_same_moment_resume_the_envelope_once(
        console_env: Parking) -> None:
    # Given two console processes' worth of connections (one Console each) on one item
    import threading

    from ui.console import Console, ConsoleConfig

    item = console_env.park("soup")
    config = ConsoleConfig(MESH, state_dir=console_env.state_dir,
                           store_url=console_env.store_url)
    consoles = [Console(config), Console(config)]
    start, results = threading.Barrier(2), {}

    def click(console: Console, reviewer: str, decision: str) -> None:
        start.wait()
        results[reviewer] = console.decide(item, decision=decision, reviewer=reviewer,
                                           notes="burnt" if decision == "reject" else None)

    # When alice approves and bob rejects at the same moment
    try:
        threads = [threading.Thread(target=click, args=(consoles[0], "alice", "approve")),
                   threading.Thread(target=click, args=(consoles[1], "bob", "reject"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
    finally:
        for c in consoles:
            c.close()
    # Then exactly one wins, the other sees the winner, and one envelope was resumed
    winners = [name for name, r in results.items() if r.won]
    assert len(winners) == 1
    loser = next(r for r in results.values() if not r.won)
    assert loser.item.decided_by == winners[0]
    resumed = queued(console_env.state_dir, "upload") + queued(console_env.state_dir,
                                                                "error-end")
    assert [e["id"] for e in resumed] == [item]

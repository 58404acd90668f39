"""Attacks on the review console's sign-in and sessions, each tried for real, and what
it gets (the list is in ``test_console_attacks.py``, beside the injection attacks).

Guessing runs against the :class:`~ui.signin.Gate` with a clock the test moves (no test
waits for a delay to pass), on the mesh's SQLite file and on PostgreSQL, and through the
page (Streamlit's AppTest); sessions against forged, expired and signed-out tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asya_agents.errors import ConfigError
from asya_agents.settings import ConsoleSettings
from asya_agents.stores.signin import SignInStore, open_sign_in_store
from tests.conftest import FakeClock
from tests.ui import conftest as ui_fixtures
from tests.ui.conftest import Parking
from tests.ui.test_console_flows import signed_in, texts
from ui.auth import Reviewers, hash_password
from ui.signin import Gate, Outcome, Session, load_secret

pytestmark = pytest.mark.timeout(120)
console_env = ui_fixtures.console_env  # the console's fixture, shared with tests/ui
SECRET = b"k" * 32


@pytest.fixture
def store_url() -> None:
    """The page's tests run on SQLite; the gate's on both (``where``)."""
    return None


# -- sign-in guessing --------------------------------------------------------------------------

REVIEWERS = Reviewers({"alice": hash_password("alice-pw"), "bob": hash_password("bob-pw")})


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str | None, Path]:
    """Where the sign-in store lives: the mesh's SQLite file or a PostgreSQL schema."""
    url = None if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    return url, tmp_path


@pytest.fixture
def store(where: tuple[str | None, Path]) -> Iterator[SignInStore]:
    opened = open_sign_in_store(where[0], state_dir=where[1])
    yield opened
    opened.close()


def gate_on(store: SignInStore, clock: FakeClock, **settings: Any) -> Gate:
    return Gate(store, secret=SECRET, settings=ConsoleSettings(**settings), clock=clock)


def guess(gate: Gate, name: str, client: str, password: str = "guess") -> Outcome:
    return gate.sign_in(REVIEWERS, name, password, client=client)


def fail(gate: Gate, clock: FakeClock, name: str, client: str, times: int) -> list[float]:
    """``times`` wrong passwords, each as soon as allowed; the waits imposed."""
    waits: list[float] = []
    while times:
        out = guess(gate, name, client)
        if out.reason == "throttled":
            waits.append(out.retry_after)
            clock.advance(out.retry_after)
            continue
        assert out.reason == "wrong", out
        times -= 1
    return waits


def test_wrong_passwords_wait_longer_and_longer_then_lock_the_name(store: SignInStore) -> None:
    clock = FakeClock()
    gate = gate_on(store, clock)
    # When someone guesses alice's password ten times, each as soon as allowed
    waits = fail(gate, clock, "alice", "203.0.113.7", 10)
    # Then the first three are free and each later one waited twice as long
    assert waits == [1, 2, 4, 8, 16, 32, 64]
    # And the name is now locked for 15 minutes
    out = guess(gate, "alice", "203.0.113.7")
    assert out.reason == "locked" and out.retry_after == 900
    assert "locked for about 15 min" in out.message


def test_the_right_password_is_refused_inside_a_wait_and_a_lockout(store: SignInStore,
                                                                  monkeypatch: Any) -> None:
    clock = FakeClock()
    gate = gate_on(store, clock)
    fail(gate, clock, "alice", "203.0.113.7", 3)
    checked: list[int] = []
    real = hashlib.scrypt
    monkeypatch.setattr(hashlib, "scrypt", lambda *a, **k: checked.append(1) or real(*a, **k))
    # Inside the wait the right password is refused without being checked
    assert guess(gate, "alice", "203.0.113.7", "alice-pw").reason == "throttled"
    assert checked == []
    fail(gate, clock, "alice", "203.0.113.7", 7)
    # During the lockout too, from any client
    clock.advance(899)
    assert guess(gate, "alice", "198.51.100.1", "alice-pw").reason == "locked"
    # Once it is over, the right password signs her in
    clock.advance(1)
    assert guess(gate, "alice", "198.51.100.1", "alice-pw").reason == "ok"


def test_a_locked_name_does_not_lock_other_names_out(store: SignInStore) -> None:
    clock = FakeClock()
    gate = gate_on(store, clock)
    fail(gate, clock, "alice", "203.0.113.7", 10)
    # Bob signs in from elsewhere at once, while alice stays locked
    assert guess(gate, "bob", "198.51.100.1", "bob-pw").reason == "ok"
    assert guess(gate, "alice", "198.51.100.1", "alice-pw").reason == "locked"
    # From the guessing client bob waits for that client's delay, not alice's lockout
    out = guess(gate, "bob", "203.0.113.7", "bob-pw")
    assert out.reason == "throttled" and out.retry_after == 128
    clock.advance(128)
    assert guess(gate, "bob", "203.0.113.7", "bob-pw").reason == "ok"
    assert guess(gate, "alice", "198.51.100.1", "alice-pw").reason == "locked"


def test_one_client_trying_many_names_is_slowed_then_locked(store: SignInStore) -> None:
    clock = FakeClock()
    gate = gate_on(store, clock)
    # Three names guessed once each from one client are free; a fourth, new name waits
    for i in range(3):
        assert guess(gate, f"user{i}", "203.0.113.7").reason == "wrong"
    assert guess(gate, "user3", "203.0.113.7").reason == "throttled"
    # Spraying on, one new name per guess, the client is locked at 30 failures
    for i in range(3, 30):
        fail(gate, clock, f"user{i}", "203.0.113.7", 1)
    assert guess(gate, "alice", "203.0.113.7", "alice-pw").reason == "locked"
    assert guess(gate, "alice", "198.51.100.1", "alice-pw").reason == "ok"


def test_guesses_sent_at_once_from_two_consoles_cannot_skip_the_wait(
        where: tuple[str | None, Path], store: SignInStore) -> None:
    clock = FakeClock()
    other = open_sign_in_store(where[0], state_dir=where[1])  # a second console process
    gates = [gate_on(store, clock), gate_on(other, clock)]
    start, reasons = threading.Barrier(8), []

    def one(gate: Gate) -> None:
        start.wait()
        reasons.append(guess(gate, "alice", "203.0.113.7").reason)

    threads = [threading.Thread(target=one, args=(gates[i % 2],)) for i in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        other.close()
    assert sorted(reasons) == ["throttled"] * 5 + ["wrong"] * 3


def test_an_unknown_name_costs_what_a_known_one_costs(store: SignInStore,
                                                     monkeypatch: Any) -> None:
    gate = gate_on(store, FakeClock(), throttle_free_failures=1000)
    calls: list[tuple[Any, ...]] = []
    real = hashlib.scrypt

    def counting(password: bytes, **kw: Any) -> bytes:
        calls.append((kw["n"], kw["r"], kw["p"], kw["dklen"], len(kw["salt"])))
        return real(password, **kw)

    monkeypatch.setattr(hashlib, "scrypt", counting)

    def attempt(name: str) -> tuple[float, list[tuple[Any, ...]], str]:
        calls.clear()
        began = time.perf_counter()
        out = guess(gate, name, "203.0.113.7")
        return time.perf_counter() - began, list(calls), out.message

    known = [attempt("alice") for _ in range(5)]
    unknown = [attempt(f"nobody{i}") for i in range(5)]
    # The same hashing work, the same answer
    assert {repr(c) for _, c, _ in known} == {repr(c) for _, c, _ in unknown}
    assert len(known[0][1]) == 1
    assert {m for *_, m in known} == {m for *_, m in unknown} == {"Wrong name or password."}
    # And about the same time (generous: this machine is shared)
    ratio = statistics.median(t for t, *_ in unknown) / statistics.median(t for t, *_ in known)
    assert 0.5 < ratio < 2.0, ratio


def test_the_page_refuses_a_locked_name_and_makes_a_guesser_wait(
        console_env: Parking, monkeypatch: Any) -> None:
    monkeypatch.setenv("ASYA_CONSOLE_THROTTLE_DELAY", "600")
    # Three wrong passwords in the page are answered as such
    for _ in range(3):
        at = signed_in("alice", "guess")
        assert "Wrong name or password." in texts(at.error)
    # The fourth attempt, with her right password, waits: no sign-in
    at = signed_in("alice")
    assert any("wait 600 s" in e for e in texts(at.error)), texts(at.error)
    assert "reviewer" not in at.session_state
    # A name locked by guesses (recorded in the mesh's database) is refused too
    store = open_sign_in_store(None, state_dir=console_env.state_dir)
    try:
        for _ in range(10):
            store.reserve(["name:bob"], now=time.time(), forget=900, delay=lambda f: 0.0,
                          limits={"name:bob": 10})
    finally:
        store.close()
    at = signed_in("bob")
    assert any("locked" in e for e in texts(at.error)) and "reviewer" not in at.session_state


# -- sessions ----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forgeries(gate: Gate, token: str, session: Session) -> dict[str, str]:
    body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    other = Gate(gate.store, secret=b"another console's key!!", settings=gate.settings)
    return {
        "another reviewer": f"{_b64(json.dumps({**claims, 'sub': 'bob'}).encode())}.{sig}",
        "a later expiry": f"{_b64(json.dumps({**claims, 'exp': 9e12}).encode())}.{sig}",
        "a flipped signature": f"{body}.{sig[::-1]}",
        "another console's key": other.token(session),
        "no signature": body,
        "garbage": "bm9wZQ.bm9wZQ",
        "script": "x';alert(1);//.y",
        "a session never issued": gate.token(Session("made-up", "alice", "password",
                                                     session.issued_at, session.expires_at)),
    }


def test_a_forged_token_signs_nobody_in(store: SignInStore) -> None:
    gate = gate_on(store, FakeClock())
    out = guess(gate, "alice", "203.0.113.7", "alice-pw")
    assert out.token and out.session and gate.resume(out.token) == out.session
    for what, token in forgeries(gate, out.token, out.session).items():
        assert gate.resume(token) is None, what


def test_an_expired_token_signs_nobody_in(store: SignInStore) -> None:
    clock = FakeClock()
    gate = gate_on(store, clock, session_hours=8)
    out = guess(gate, "alice", "203.0.113.7", "alice-pw")
    assert out.token and out.session
    clock.advance(8 * 3600 - 1)
    assert gate.resume(out.token) == out.session
    clock.advance(1)
    assert gate.resume(out.token) is None and gate.check(out.session) is None


def test_a_token_after_sign_out_signs_nobody_in(store: SignInStore) -> None:
    gate = gate_on(store, FakeClock())
    first = guess(gate, "alice", "203.0.113.7", "alice-pw")
    second = guess(gate, "alice", "198.51.100.1", "alice-pw")  # another browser
    assert first.session and first.token and second.session
    gate.sign_out(first.session)
    assert gate.resume(first.token) is None and gate.check(first.session) is None
    assert gate.check(second.session) == second.session  # only that session ended


def test_signing_out_in_the_page_ends_the_token_the_cookie_holds(console_env: Parking) -> None:
    at = signed_in("alice")
    [script] = [h.proto.body for h in at.get("html")]
    token = re.search(r"asya_console_session=([A-Za-z0-9_.\-]+);", script).group(1)  # type: ignore[union-attr]
    gate = console_gate(console_env)
    try:
        assert gate.resume(token) is not None
        at.button(key="sign-out").click().run()
        assert gate.resume(token) is None
    finally:
        gate.store.close()
    assert any("asya_console_session=; Path=/; Max-Age=0" in h.proto.body
               for h in at.get("html"))


def console_gate(parking: Parking) -> Gate:
    """A gate of its own on the console's database and key: another console process."""
    settings = ConsoleSettings()
    return Gate(open_sign_in_store(None, state_dir=parking.state_dir),
                secret=load_secret(settings, parking.state_dir), settings=settings)


def test_the_session_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    key = load_secret(ConsoleSettings(), tmp_path)
    path = tmp_path / "console-secret"
    assert path.stat().st_mode & 0o777 == 0o600 and len(key) >= 32
    assert load_secret(ConsoleSettings(), tmp_path) == key
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        load_secret(ConsoleSettings(), tmp_path)
    with pytest.raises(ConfigError, match="ASYA_CONSOLE_SESSION_SECRET is 5 characters"):
        load_secret(ConsoleSettings(session_secret="short"), tmp_path)

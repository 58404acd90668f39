"""Single sign-on: an OpenID Connect provider beside the reviewer list.

Streamlit's ``st.login`` does the protocol (Authlib); the console decides who of the
provider's accounts may review (``ASYA_CONSOLE_OIDC_ALLOW``), records decisions under
the e-mail address, and keeps the sign-in as a session row, so signing out ends it. The
end-to-end test runs oidc-provider-mock as a real provider on 127.0.0.1, `asya review`
configured for it, and chromium through the provider's own form.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from asya_agents.cli.tools import _streamlit_secrets
from asya_agents.errors import ConfigError
from asya_agents.review import open_review_store
from asya_agents.settings import ConsoleSettings
from asya_agents.stores.signin import open_sign_in_store
from tests.conftest import SERVICE_SKIP, FakeClock
from tests.ui import test_console_browser as browser_tests
from tests.ui.conftest import APP, MESH, Parking, reviewers_value
from tests.ui.test_console_flows import texts
from ui.signin import Allow, Gate

pytestmark = pytest.mark.timeout(90)
processes = browser_tests.processes
OIDC_ENV = {"ASYA_CONSOLE_OIDC_METADATA_URL": "http://127.0.0.1:9/.well-known/openid-configuration",
            "ASYA_CONSOLE_OIDC_CLIENT_ID": "asya-console",
            "ASYA_CONSOLE_OIDC_CLIENT_SECRET": "client-secret-1",
            "ASYA_CONSOLE_OIDC_ALLOW": "carol@example.com,@reviewers.example",
            "ASYA_CONSOLE_OIDC_LABEL": "Example ID"}


def claims(email: str | None, *, sub: str = "s-1", iat: float | None = None,
           **extra: Any) -> dict[str, Any]:
    out = {"iss": "http://idp.example", "sub": sub, "nonce": "n-1",
           "iat": iat if iat is not None else 1_000_000.0, **extra}
    if email is not None:
        out["email"] = email
    return out


# -- who may review ------------------------------------------------------------------------


def test_the_allow_list_admits_addresses_domains_and_subjects_only() -> None:
    allow = Allow("carol@example.com, @reviewers.example, svc-42")
    assert allow.admits(claims("Carol@Example.com"))
    assert allow.admits(claims("dan@reviewers.example"))
    assert allow.admits(claims(None, sub="svc-42"))
    assert not allow.admits(claims("mallory@example.com"))
    assert not allow.admits(claims("dan@evilreviewers.example"))
    assert not allow.admits(claims("carol@example.com", email_verified=False))
    assert not Allow("").admits(claims("carol@example.com"))


def test_an_allowed_identity_becomes_a_session_that_expires_and_ends(tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_sign_in_store(None, state_dir=tmp_path)
    try:
        gate = Gate(store, secret=b"k" * 32, clock=clock,
                    settings=ConsoleSettings(oidc_allow="carol@example.com,svc-42",
                                             session_hours=8))
        # The reviewer is the address, or oidc:<sub> without one
        carol = gate.oidc(claims("carol@example.com", iat=clock.now))
        assert carol.reason == "ok" and carol.session
        assert carol.session.reviewer == "carol@example.com"
        assert gate.oidc(claims(None, sub="svc-42", iat=clock.now)).session.reviewer == \
            "oidc:svc-42"  # type: ignore[union-attr]
        # Anyone else the provider vouches for is refused, with the reason
        refused = gate.oidc(claims("mallory@example.com", iat=clock.now))
        assert refused.reason == "refused" and refused.session is None
        assert "mallory@example.com may not review here" in refused.message
        # The same identity again (a reload) is the same session, until it ends
        again = gate.oidc(claims("carol@example.com", iat=clock.now))
        assert again.session == carol.session
        gate.sign_out(carol.session)
        assert gate.oidc(claims("carol@example.com", iat=clock.now)).reason == "expired"
        # A fresh sign-in at the provider is a new session; it expires after 8 hours
        fresh = gate.oidc(claims("carol@example.com", iat=clock.now + 1))
        assert fresh.reason == "ok"
        clock.advance(8 * 3600 + 1)
        assert gate.oidc(claims("carol@example.com", iat=clock.now - 8 * 3600)).reason == \
            "expired"
    finally:
        store.close()


def test_the_page_signs_in_an_allowed_identity_and_refuses_others(
        console_env: Parking, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in OIDC_ENV.items():
        monkeypatch.setenv(key, value)
    # Given the provider vouched for carol (st.user)
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.user = {"is_logged_in": True, **claims("carol@example.com", iat=time.time())}
    at.run()
    # Then she is the reviewer, with the queue
    assert at.session_state["reviewer"] == "carol@example.com"
    assert [t.value for t in at.title] == ["Review queue"]
    # Given the provider vouched for mallory, whom the allow-list does not name
    at = AppTest.from_file(str(APP), default_timeout=30)
    at.user = {"is_logged_in": True, **claims("mallory@example.com", sub="m-1",
                                                iat=time.time())}
    at.run()
    assert any("mallory@example.com may not review here" in e for e in texts(at.error))
    assert "reviewer" not in at.session_state
    assert at.button(key="sign-in-oidc") and at.text_input(key="sign-in-name")


# -- `asya review` hands Streamlit its [auth] settings privately -------------------------------


def test_the_auth_settings_go_to_a_private_file_that_is_removed() -> None:
    console = ConsoleSettings(oidc_metadata_url="https://idp.example/.well-known/x",
                              oidc_client_id="c", oidc_client_secret='s"e\\c', oidc_allow="@x")
    with _streamlit_secrets(console, port=8600) as options:
        path = Path(options[1])
        assert options[0] == "--secrets.files"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        import tomllib

        auth = tomllib.loads(path.read_text())["auth"]
        assert auth["client_secret"] == 's"e\\c'
        assert auth["redirect_uri"] == "http://localhost:8600/oauth2callback"
        assert len(auth["cookie_secret"]) == 64
    assert not path.exists() and not path.parent.exists()
    with _streamlit_secrets(ConsoleSettings(), port=8600) as options:
        assert options == []


def test_single_sign_on_without_an_allow_list_does_not_start() -> None:
    console = ConsoleSettings(oidc_metadata_url="https://idp.example/x", oidc_client_id="c",
                              oidc_client_secret="s")
    with pytest.raises(ConfigError, match="ASYA_CONSOLE_OIDC_ALLOW"), \
            _streamlit_secrets(console, port=8600):
        pass


# -- end to end, with a real provider ----------------------------------------------------------


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_reviewer_signs_in_through_a_real_provider_and_decides(
        tmp_path: Path, processes: browser_tests.Processes) -> None:
    if not browser_tests.CHROMIUM.exists():
        pytest.skip(f"{SERVICE_SKIP} chromium at {browser_tests.CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    # Given oidc-provider-mock on 127.0.0.1, and a photo parked for review
    port, idp_port = browser_tests.free_port(), browser_tests.free_port()
    idp = f"http://127.0.0.1:{idp_port}"
    with (tmp_path / "idp.log").open("wb") as log:
        provider = subprocess.Popen([sys.executable, "-m", "oidc_provider_mock", "--port",
                                     str(idp_port)], stdout=log, stderr=subprocess.STDOUT)
    state_dir = tmp_path / "state"
    item = Parking(state_dir, None, tmp_path / "photos").park("soup")
    # And `asya review` configured for it: only carol may review
    env = {**os.environ, **OIDC_ENV, "ASYA_REVIEWERS": reviewers_value(),
           "ASYA_CONSOLE_OIDC_METADATA_URL": f"{idp}/.well-known/openid-configuration",
           "ASYA_CONSOLE_OIDC_REDIRECT_URI": f"http://127.0.0.1:{port}/oauth2callback",
           "ASYA_CONSOLE_OIDC_ALLOW": "carol@example.com", "ASYA_BLOB_ROOTS": str(tmp_path),
           "ASYA_LOG_FORMAT": "text"}
    env.pop("ASYA_STORE_URL", None)
    processes.start("review", ["review", str(MESH), "--port", str(port), "--headless",
                               "--state-dir", str(state_dir)], env)
    url = f"http://127.0.0.1:{port}"
    try:
        browser_tests.until("the provider", lambda: _answers(
            f"{idp}/.well-known/openid-configuration"))
        browser_tests.until("the console to answer", lambda: browser_tests._healthy(url))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(browser_tests.CHROMIUM),
                                         args=browser_tests.CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1300})
                # When carol signs in through the provider's form
                through_provider(page, url, idp, "carol@example.com")
                expect(page.get_by_role("heading", name="Review queue")).to_be_visible(
                    timeout=30_000)
                # And approves the photo
                card = page.locator(f".st-key-item-{item}")
                card.get_by_role("button", name="Approve", exact=True).click()
                expect(page.get_by_text(f"{item}: approve recorded")).to_be_visible(
                    timeout=30_000)
                # Then a reload keeps her signed in
                page.reload()
                expect(page.get_by_text("Nothing waits for review.")).to_be_visible(
                    timeout=30_000)
                # And signing out ends it (through the provider's end of session)
                page.get_by_role("button", name="Sign out").click()
                page.wait_for_url(f"{idp}/**", timeout=30_000)
                page.get_by_role("button", name="End session").click()
                expect(page.get_by_role("button", name="Sign in with Example ID")
                       ).to_be_visible(timeout=30_000)
                page.goto(url)
                expect(page.get_by_role("button", name="Sign in with Example ID")
                       ).to_be_visible(timeout=30_000)
                assert page.get_by_role("heading", name="Review queue").count() == 0
                # When mallory, whom the provider knows but the allow-list does not, tries
                through_provider(page, url, idp, "mallory@example.com")
                # (the page breaks the address with a word joiner, so it is no link)
                expect(page.get_by_text(re.compile(r"mallory\W?@example\.com may not review"))
                       ).to_be_visible(timeout=30_000)
                assert page.get_by_role("heading", name="Review queue").count() == 0
            finally:
                browser.close()
    finally:
        provider.terminate()
        provider.wait(10)
    # Then the store recorded the decision under carol's address
    store = open_review_store(None, state_dir=state_dir)
    try:
        decided = store.get(item)
    finally:
        store.close()
    assert decided is not None and decided.decided_by == "carol@example.com"


def through_provider(page: Any, url: str, idp: str, who: str) -> None:
    page.goto(url)
    page.get_by_role("button", name="Sign in with Example ID").click()
    page.wait_for_url(f"{idp}/oauth2/authorize**", timeout=30_000)
    page.locator("input[name=sub]").fill(who)
    page.get_by_role("button", name="Authorize").click()
    page.wait_for_url(f"{url}/**", timeout=30_000)

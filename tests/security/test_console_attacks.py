"""Attacks on the review console: each one tried for real, and what it gets.

Markdown and HTML injection. A payload is untrusted (whoever can send to the mesh chose
it), and so is everything a handler or a broker wrote about it. Each vector below goes
in through every way payload-derived text reaches a page: the envelope id, the review
actor's name, the route behind and ahead, the image URL, the judge's verdict, reasons
and defects, a decision's message, and on the status page a failure's id, actor, type,
message and reason.

Each vector, and what it gets:

- a link ``[x](https://evil.example/x)``: shown literally, no link;
- an image ``![x](https://evil.example/x.png)``: shown literally, nothing fetched;
- raw HTML ``<img src=x onerror=…><b>x</b><script>…``: shown literally, no tag;
- a heading ``# x is approved``, or new blocks (a blank line, ``## …``, a table, a
  list): one line of text, no heading, table or list;
- formatting ``**x** _x_ ~~x~~ `x` > x``: shown literally, asterisks and all;
- bare URLs and addresses (``https://…``, ``www.…``, ``x@evil.example``): text, not
  links (Streamlit links those even when escaped; a word joiner, U+2060, breaks them);
- Streamlit's own (``:red[x]``, ``:material/warning:``, ``:smile:``, ``$x$``): shown
  literally, no colour, icon, emoji or math.

Checked on every Markdown string the pages emit (Streamlit's AppTest), rendered with
markdown-it, and once in the real browser (chromium, ``test_in_the_browser_…``): no
``<a>``, ``<img>``, tag or heading comes from the payload, and the text reads as sent.

Sign-in guessing (tried in ``test_console_sign_in_attacks.py``: the
:class:`~ui.signin.Gate` with a clock the test moves, on SQLite and PostgreSQL, and
through the page), and what it gets:

- wrong passwords for one name: 3 free, then waits of 1, 2, 4 … 64 s, then the name is
  locked for 15 min;
- the right password inside a wait or a lockout: refused, and not even checked;
- one client trying many names (password spraying): the client waits too, whatever the
  name, and is locked at 30 failures;
- a locked name: other names sign in, from other clients at once, from the guessing
  client after its own wait;
- guesses sent at the same moment from two console processes: exactly the free ones
  are checked, the rest wait;
- probing for names: an unknown name costs the same scrypt work (and about the same
  time) as a known one, and gets the same message.

Sessions (a signed token in a cookie names a session row; tried there too, and in the
browser here), and what they get:

- a token with another reviewer, a later expiry, a flipped signature, another
  console's key, no signature, garbage or script in it: signs nobody in;
- a token for a session the database never issued, signed with the real key: nobody;
- a token past ``session_hours``: nobody; an open page is signed out on its next run;
- a token after sign-out (a copied cookie, another tab): nobody;
- in the browser, a forged cookie, an expired one, the cookie from before a sign-out:
  the sign-in form.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from asya_agents.envelope import Envelope, ErrorInfo
from asya_agents.settings import ConsoleSettings
from asya_agents.stores import open_result_store
from asya_agents.stores.signin import open_sign_in_store
from tests.conftest import SERVICE_SKIP
from tests.ui import conftest as ui_fixtures
from tests.ui import test_console_browser as browser_tests
from tests.ui.conftest import MESH, PASSWORDS, Parking, reviewers_value
from tests.ui.test_console_flows import signed_in
from ui.auth import Reviewers, parse_reviewers
from ui.signin import COOKIE, Gate, load_secret

pytestmark = pytest.mark.timeout(120)
console_env = ui_fixtures.console_env  # the console's fixtures, shared with tests/ui
processes = browser_tests.processes

WJ = "\u2060"
VECTORS = {
    "link": "[{p}](https://evil.example/{p})",
    "image": "![{p}](https://evil.example/{p}.png)",
    "raw-html": "<img src=x onerror=alert(1)><b>{p}</b><script>alert(2)</script>",
    "heading": "# {p} is approved",
    "blocks": "{p}\n\n## second block\n\n| a | b |\n|---|---|\n- item",
    "formatting": "**{p}** _{p}_ ~~{p}~~ `{p}` > {p}",
    "bare-urls": "https://evil.example/{p} www.evil.example {p}@evil.example",
    "streamlit": ":red[{p}] :material/warning: :smile: $x_{p}$",
}
VECTORS["everything"] = "\n".join(VECTORS[k] for k in (
    "heading", "link", "image", "raw-html", "bare-urls", "streamlit", "formatting"))
QUEUE_PLACES = ("id", "actor", "prev", "next", "image", "verdict", "reason", "defect")
STATUS_PLACES = ("fid", "factor", "ftype", "fmessage", "freason")
#: Bold labels, list items and card headings the pages write themselves.
OWN_STRONG = {"Came from", "Approve", "Send back", "Reject", "Reason", "attempt", "recorded",
              "Message", "alice"}


@pytest.fixture
def store_url() -> None:
    """Rendering does not depend on the store: SQLite only."""
    return None


def attack(vector: str, place: str) -> str:
    return VECTORS[vector].format(p=place)


def flat(text: str) -> str:
    return " ".join(text.splitlines())


# -- Markdown and HTML injection ---------------------------------------------------------------


def park_attacks(parking: Parking, vector: str) -> str:
    """An item at review and a failure whose every payload-derived string is an attack."""
    def t(p: str) -> str:
        return attack(vector, p)

    env = Envelope.create({}, ["enhance", "judge", "review", "upload"]).advanced().advanced()
    data = env.to_dict()
    data["id"] = t("id")
    data["route"]["prev"] = ["enhance", t("prev")]
    data["route"]["next"] = [t("next")]
    data["payload"] = {"image_url": t("image"), "verdict": {
        "score": 0.5, "verdict": t("verdict"), "reasons": [t("reason")],
        "defects": [t("defect")]}}
    item = parking.park_envelope(data, actor=t("actor"))
    failed = Envelope.create({"dish": "soup"}, ["judge"])
    failed.id = t("fid")
    failed.meta.error = ErrorInfo(type=t("ftype"), message=t("fmessage"), traceback="tb",
                                  actor=t("factor"), attempt=2, reason=t("freason"))
    results = open_result_store(None, state_dir=parking.state_dir)
    try:
        results.record("failed", failed.to_dict())
    finally:
        results.close()
    return item


def markdown_sources(at: Any) -> list[str]:
    """Every string the page hands to Streamlit's Markdown renderer."""
    out: list[str] = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "error", "warning",
                 "info", "success"):
        out += [e.value for e in getattr(at, kind)]
    out += [e.label for e in at.expander]
    out += [m.value for m in at.metric] + [m.label for m in at.metric]
    out += [c for img in at.get("image") for c in img.captions]
    return [s for s in out if isinstance(s, str)]


_MD = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])
#: Streamlit's own inline syntax, which CommonMark does not know: ``:red[…]``,
#: ``:material/…:``, emoji shortcodes, ``$…$`` math. Unescaped only in plain text runs.
_STREAMLIT = re.compile(r"(?i):[a-z]+\[|:material/|:[a-z_]{2,}:|\$")
_FORBIDDEN = {"link_open", "image", "html_inline", "html_block", "table_open", "s_open",
              "blockquote_open", "em_open", "fence", "code_block", "hr"}


def _tokens(source: str) -> Iterator[Any]:
    for token in _MD.parse(source):
        yield token
        yield from token.children or []


def _tokens_split(source: str) -> Iterator[Any]:
    for token in _MD_SPLIT.parse(source):
        yield from token.children or []


_MD_SPLIT = MarkdownIt("commonmark").disable("text_join")


def rendered_text(source: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", _MD.render(source))).replace(WJ, "")


def assert_inert(source: str) -> None:
    """Nothing in ``source`` renders as a link, image, tag, table, heading (other than a
    card's ``####``), quote or emphasis, and no bare URL is left for autolinking."""
    tokens = list(_tokens(source))
    bad = [t.type for t in tokens if t.type in _FORBIDDEN]
    assert not bad, f"{bad} in {source!r}"
    # text runs split at each escape: Streamlit's syntax must not survive in one
    runs = [t.content for t in _tokens_split(source) if t.type == "text"]
    assert not [r for r in runs if _STREAMLIT.search(r)], f"Streamlit syntax in {source!r}"
    assert all(t.tag == "h4" for t in tokens if t.type == "heading_open"), source
    for i, t in enumerate(tokens):
        if t.type == "strong_open":
            assert tokens[i + 1].content in OWN_STRONG, source
    text = html.unescape(_MD.render(source))
    assert not re.search(r"(?i)https?://|www\.|\w@\w", re.sub(r"<code>.*?</code>", "", text)), \
        f"a bare URL or address would be autolinked: {source!r}"
    # emoji shortcodes and icons, which Streamlit replaces in text, escaped or not
    assert not re.search(r"(?i):[a-z_+-][\w+-]*:|:material/", text), \
        f"an emoji shortcode or icon would be replaced: {source!r}"


@pytest.mark.parametrize("vector", list(VECTORS))
def test_injection_through_every_payload_field_is_shown_literally(console_env: Parking,
                                                                  vector: str) -> None:
    # Given an item and a failure made of the attack
    item = park_attacks(console_env, vector)
    # When alice opens the queue, rejects the item, and opens the status page
    at = signed_in("alice")
    assert not at.exception, at.exception
    sources = markdown_sources(at)
    at.text_input(key=f"notes-{item}").input(attack(vector, "notes"))
    at.button(key=f"reject-{item}").click().run()
    sources += markdown_sources(at)
    at.switch_page("views/status.py").run()
    assert not at.exception, at.exception
    sources += markdown_sources(at)
    # Then no string the pages emit renders as anything but text
    for source in sources:
        assert_inert(source)
    # And each attack reads as it was sent, in its own place
    shown = [flat(rendered_text(s)) for s in sources]
    for place in (*QUEUE_PLACES, *STATUS_PLACES):
        literal = flat(attack(vector, place))
        if place == "ftype":  # the page shows the class name, after the last dot
            literal = literal.rsplit(".", 1)[-1]
        assert any(literal in s for s in shown), f"{place}: {literal!r} not shown literally"
    # (the decision's message quotes the id: recorded, sent or not)
    assert any(flat(attack(vector, "id")) in s and "recorded" in s for s in shown)


# -- the same, in the real browser -------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_in_the_browser_injection_is_text_and_stale_cookies_sign_nobody_in(
        tmp_path: Path, processes: browser_tests.Processes) -> None:
    if not browser_tests.CHROMIUM.exists():
        pytest.skip(f"{SERVICE_SKIP} chromium at {browser_tests.CHROMIUM}")
    from playwright.sync_api import expect, sync_playwright

    # Given an item and a failure made of every vector at once, and `asya review`
    state_dir, port = tmp_path / "state", browser_tests.free_port()
    park_attacks(Parking(state_dir, None, tmp_path / "photos"), "everything")
    env = {**browser_tests.os.environ, "ASYA_REVIEWERS": reviewers_value(),
           "ASYA_LOG_FORMAT": "text", "ASYA_BLOB_ROOTS": str(tmp_path)}
    env.pop("ASYA_STORE_URL", None)
    processes.start("review", ["review", str(MESH), "--port", str(port), "--headless",
                               "--state-dir", str(state_dir)], env)
    url = f"http://127.0.0.1:{port}"
    browser_tests.until("the console to answer", lambda: browser_tests._healthy(url))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(browser_tests.CHROMIUM),
                                     args=browser_tests.CHROMIUM_ARGS)
        try:
            first = browser.new_context(viewport={"width": 1400, "height": 1300})
            page = first.new_page()
            sign_in(page, url)
            expect(page.get_by_text("cannot show").first).to_be_visible(timeout=30_000)
            # (the five counts, the judge's score and the verdict: the card is complete)
            expect(page.get_by_test_id("stMetricValue")).to_have_count(7, timeout=30_000)
            expect(page.get_by_text("Came from")).to_be_visible(timeout=30_000)
            # Then the queue holds no link, image, tag or heading from the payload
            assert_inert_page(page, QUEUE_PLACES)
            page.get_by_role("link", name="Mesh status").click()
            expect(page.get_by_role("heading", name="Latest errors")).to_be_visible(
                timeout=30_000)
            page.locator("[data-testid=stExpander] summary").first.click()
            assert_inert_page(page, STATUS_PLACES)
            # When she reloads, she is still signed in (the cookie names her session)
            page.reload()
            expect(page.get_by_role("heading", name="Mesh status")).to_be_visible(
                timeout=30_000)
            token = next(c["value"] for c in first.cookies() if c["name"] == COOKIE)
            # A forged cookie and an expired one sign nobody in
            body, sig = token.split(".")
            assert_signed_out(browser, url, f"{body}.{sig[::-1]}")
            assert_signed_out(browser, url, expired_token(state_dir))
            # When she signs out, that cookie (copied before) signs nobody in either
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("textbox", name="Password")).to_be_visible(
                timeout=30_000)
            assert_signed_out(browser, url, token)
            page.reload()
            expect(page.get_by_role("textbox", name="Password")).to_be_visible(
                timeout=30_000)
        finally:
            browser.close()


def sign_in(page: Any, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_role("textbox", name="Name").fill("alice")
    page.get_by_role("textbox", name="Password").fill(PASSWORDS["alice"])
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible(timeout=30_000)


def assert_inert_page(page: Any, places: tuple[str, ...]) -> None:
    main = page.locator("[data-testid=stMain]")
    # (Streamlit's own anchors beside headings, href="#…", are all the links there are)
    links = main.locator("a:not([href^='#'])").evaluate_all("els => els.map(e => e.outerHTML)")
    assert links == [], links
    assert page.locator("img[src*='evil.example'], img[onerror], b, strong em").count() == 0
    headings = " ".join(main.locator("h1, h2, h3, h5, h6").all_inner_texts())
    assert "approved" not in headings and "second block" not in headings
    # (in what Markdown rendered: the dataframes are tables of their own)
    assert main.locator("[data-testid=stMarkdownContainer]").locator(
        "table, blockquote, del, .katex").count() == 0
    assert main.locator("[data-testid=stMarkdownContainer] [data-testid=stIconMaterial]"
                        ).count() == 0
    raw = main.evaluate("e => e.textContent")  # all text, whatever the layout hides
    assert "\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}" not in raw
    text = " ".join(raw.replace(WJ, "").split())
    for place in places:
        literal = " ".join(attack("everything", place).split())
        if place == "ftype":
            literal = literal.rsplit(".", 1)[-1]
        if place == "fmessage":
            literal = literal[:80]
        assert literal in text, f"{place}: {literal!r} not on the page"


def expired_token(state_dir: Path) -> str:
    """A genuine token of a session that ended an hour ago (issued nine hours back)."""
    settings = ConsoleSettings()
    store = open_sign_in_store(None, state_dir=state_dir)
    try:
        gate = Gate(store, secret=load_secret(settings, state_dir), settings=settings,
                    clock=lambda: time.time() - 9 * 3600)
        known = Reviewers(parse_reviewers(reviewers_value(), source="test"))
        out = gate.sign_in(known, "alice", PASSWORDS["alice"], client="test")
    finally:
        store.close()
    assert out.token
    return out.token


def assert_signed_out(browser: Any, url: str, token: str) -> None:
    from playwright.sync_api import expect

    context = browser.new_context()
    try:
        context.add_cookies([{"name": COOKIE, "value": token, "url": url}])
        page = context.new_page()
        page.goto(url)
        expect(page.get_by_role("textbox", name="Password")).to_be_visible(timeout=30_000)
        assert page.get_by_role("heading", name="Review queue").count() == 0
    finally:
        context.close()

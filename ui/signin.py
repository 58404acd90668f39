"""Who is signed in to the review console, and how guessing is slowed down.

No Streamlit in here: the pages call a :class:`Gate`, and the tests call the same one
with a clock they move. Three jobs:

- **Throttling.** Every password attempt is counted, *before* the password is checked,
  against the name typed and against the client it came from
  (:meth:`~asya_agents.stores.signin.SignInStore.reserve`). After
  ``throttle_free_failures`` failures a key must wait ``throttle_delay`` seconds,
  doubled per further failure; attempts inside the wait are refused without looking
  at the password, so guessing cannot go faster than the delays allow. At
  ``throttle_lockout_failures`` (a name) or ``throttle_client_lockout_failures`` (a
  client) the key is locked for ``throttle_lockout_minutes``, the right password
  included. An unknown name costs the same work as a known one.
- **Sessions.** A sign-in opens a session row in the mesh's database and hands out a
  token, ``<payload>.<HMAC-SHA256>``, that names it and expires after
  ``session_hours``. The page keeps the token in a cookie, so a reload resumes the
  session; a forged, expired or signed-out token signs nobody in.
- **Single sign-on.** With an OpenID Connect provider configured, Streamlit's
  ``st.login`` does the protocol; the identity it returns becomes a reviewer only if
  ``ASYA_CONSOLE_OIDC_ALLOW`` names the address or its domain, and gets a session row
  too, so signing out ends it here whatever the provider's cookie says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from asya_agents.errors import ConfigError
from asya_agents.settings import ConsoleSettings
from asya_agents.stores.signin import SessionRow, SignInStore
from ui.auth import Reviewers

__all__ = ["COOKIE", "TOKEN_CHARS", "Allow", "Gate", "Outcome", "Session", "load_secret"]

#: The cookie that keeps a password session's token across reloads.
COOKIE = "asya_console_session"
#: What a token is made of (base64url and the dot): safe inside a cookie and a script.
TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+")
_MIN_SECRET = 16
_NAME_MAX = 200

Reason = Literal["ok", "wrong", "throttled", "locked", "refused", "expired"]


@dataclass(frozen=True)
class Session:
    sid: str
    reviewer: str
    via: Literal["password", "oidc"]
    issued_at: float
    expires_at: float


@dataclass(frozen=True)
class Outcome:
    """What a sign-in came to: a session (and, for passwords, its token), or why not."""

    reason: Reason
    message: str = ""
    session: Session | None = None
    token: str | None = None
    retry_after: float = 0.0


def load_secret(settings: ConsoleSettings, state_dir: Path) -> bytes:
    """The key that signs tokens: ``ASYA_CONSOLE_SESSION_SECRET``, or one generated
    once into ``STATE/console-secret`` (mode 0600) and read back by every later start."""
    if settings.session_secret is not None:
        if len(settings.session_secret) < _MIN_SECRET:
            raise ConfigError(
                f"ASYA_CONSOLE_SESSION_SECRET is {len(settings.session_secret)} characters;"
                f" use at least {_MIN_SECRET} random ones (e.g. `openssl rand -hex 32`)")
        return settings.session_secret.encode()
    path = state_dir / "console-secret"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret(path)
    except OSError as exc:
        raise ConfigError(f"cannot create the console's session key {path}: {exc}") from exc
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return _read_secret(path)


def _read_secret(path: Path) -> bytes:
    try:
        mode, text = path.stat().st_mode, path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the console's session key {path}: {exc}") from exc
    if mode & 0o077:
        raise ConfigError(f"the console's session key {path} is readable by others "
                          f"(mode {mode & 0o777:o}): chmod 600 it")
    if len(text) < _MIN_SECRET:
        raise ConfigError(f"the console's session key {path} is too short: delete it "
                          "and a new one is made")
    return text.encode()


class Allow:
    """Who may review through single sign-on: e-mail addresses and ``@domain``
    entries (case-insensitive); an entry without ``@`` is a subject (``sub``)."""

    def __init__(self, text: str | None) -> None:
        self.entries = [e.strip() for e in (text or "").split(",") if e.strip()]

    def __bool__(self) -> bool:
        return bool(self.entries)

    def admits(self, claims: Mapping[str, Any]) -> bool:
        email = claims.get("email") if claims.get("email_verified") is not False else None
        email = email.lower() if isinstance(email, str) else None
        for entry in self.entries:
            if "@" not in entry:
                if entry == claims.get("sub"):
                    return True
            elif email and (email == entry.lower() or
                            (entry.startswith("@") and email.endswith(entry.lower()))):
                return True
        return False


class Gate:
    """Sign-ins, sessions and throttling for one console, on ``store``."""

    def __init__(self, store: SignInStore, *, secret: bytes, settings: ConsoleSettings,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.settings = settings
        self.allow = Allow(settings.oidc_allow)
        self._secret = secret
        self._clock = clock
        self._forget = settings.throttle_lockout_minutes * 60.0

    def now(self) -> float:
        return self._clock()

    # -- passwords -------------------------------------------------------------------------

    def delay(self, failures: int) -> float:
        """How long after its last failure a key with ``failures`` waits."""
        extra = failures - self.settings.throttle_free_failures
        if extra < 0:
            return 0.0
        return min(self.settings.throttle_delay * 2.0 ** min(extra, 40), self._forget)

    def sign_in(self, reviewers: Reviewers, name: str, password: str, *,
                client: str) -> Outcome:
        """Check ``name`` and ``password`` unless the name or the client must wait."""
        name = name.strip()
        keys = [f"name:{name[:_NAME_MAX]}", f"client:{client[:_NAME_MAX]}"]
        now = self._clock()
        limits = {keys[0]: self.settings.throttle_lockout_failures,
                  keys[1]: self.settings.throttle_client_lockout_failures}
        got = self.store.reserve(keys, now=now, forget=self._forget, delay=self.delay,
                                 limits=limits)
        if not got.allowed:
            return _throttled(got.locked, got.retry_at - now)
        if not reviewers.check(name, password):
            return Outcome("wrong", "Wrong name or password.")
        self.store.succeeded(clear=[keys[0]], give_back=[keys[1]])
        session = self._open(name, "password", issued_at=now)
        return Outcome("ok", session=session, token=self.token(session))

    # -- sessions --------------------------------------------------------------------------

    def _open(self, reviewer: str, via: Literal["password", "oidc"], *, issued_at: float,
              sid: str | None = None) -> Session:
        session = Session(sid or secrets.token_urlsafe(18), reviewer, via, issued_at,
                          issued_at + self.settings.session_hours * 3600.0)
        self.store.open_session(SessionRow(session.sid, reviewer, via, session.issued_at,
                                           session.expires_at, None))
        return session

    def token(self, session: Session) -> str:
        body = _b64(json.dumps({"sid": session.sid, "sub": session.reviewer,
                                "iat": session.issued_at, "exp": session.expires_at},
                               separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._secret, body.encode(), hashlib.sha256).digest())

    def resume(self, token: str | None) -> Session | None:
        """The session a token names, if the token is genuine and the session open."""
        if not token or not TOKEN_CHARS.fullmatch(token):
            return None
        body, sig = token.split(".")
        if not hmac.compare_digest(sig, self._sign(body)):
            return None
        try:
            claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            session = Session(str(claims["sid"]), str(claims["sub"]), "password",
                              float(claims["iat"]), float(claims["exp"]))
        except (ValueError, KeyError, TypeError):
            return None
        return self.check(session)

    def check(self, session: Session) -> Session | None:
        """``session`` if it is still open and unexpired (read each page run, so that
        signing out in one tab ends the others)."""
        row = self.store.session(session.sid)
        now = self._clock()
        if (row is None or row.ended_at is not None or row.reviewer != session.reviewer
                or row.via != session.via or min(row.expires_at, session.expires_at) <= now):
            return None
        return session

    def sign_out(self, session: Session) -> None:
        self.store.end_session(session.sid, now=self._clock())

    # -- single sign-on --------------------------------------------------------------------

    def oidc(self, claims: Mapping[str, Any]) -> Outcome:
        """The reviewer behind an identity the provider vouched for (``st.user``)."""
        sub, email = claims.get("sub"), claims.get("email")
        if not isinstance(sub, str) or not sub:
            return Outcome("refused", "The provider sent no subject (sub) for this account.")
        who = email if isinstance(email, str) and email else sub
        if not self.allow.admits(claims):
            return Outcome("refused", f"{who} may not review here: ask for the address to "
                                      "be added to ASYA_CONSOLE_OIDC_ALLOW.")
        now = self._clock()
        iat = claims.get("iat")
        issued = float(iat) if isinstance(iat, int | float) else now
        sid = "oidc-" + hashlib.sha256(json.dumps(
            [claims.get("iss"), sub, iat, claims.get("nonce")], default=str).encode()
        ).hexdigest()[:32]
        reviewer = who if isinstance(email, str) and email else f"oidc:{sub}"
        row = self.store.session(sid)
        if row is None:
            session = self._open(reviewer, "oidc", issued_at=issued, sid=sid)
        else:
            session = Session(sid, row.reviewer, "oidc", row.issued_at, row.expires_at)
        if self.check(session) is None:
            return Outcome("expired", "That sign-in ended (signed out or expired): sign "
                                      "in again.")
        return Outcome("ok", session=session)


def _throttled(locked: bool, wait: float) -> Outcome:
    if locked:
        minutes = max(1, round(wait / 60))
        return Outcome("locked", "Too many failed sign-ins: locked for about "
                                 f"{minutes} min. Try again later.", retry_after=wait)
    return Outcome("throttled", "Too many failed sign-ins: wait "
                                f"{max(1, math.ceil(wait))} s before trying again.",
                   retry_after=wait)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")

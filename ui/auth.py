"""Who may decide: reviewers' credentials, stored only as salted scrypt hashes.

The console has no user database of its own. Reviewers come from the environment
(``ASYA_REVIEWERS="alice:<hash>,bob:<hash>"``) or a file of ``name:<hash>`` lines
(``ASYA_REVIEWERS_FILE``, e.g. a mounted Kubernetes Secret), both read through
:class:`asya_agents.settings.ConsoleSettings`. A hash is self-describing::

    scrypt$<n>$<r>$<p>$<salt, base64>$<key, base64>

so its cost can be raised later without breaking old entries. Write one with
``asya review hash-password`` (or ``python ui/auth.py hash-password``). Nothing here
keeps a plaintext password beyond the call that checks it.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from collections.abc import Mapping

from asya_agents.errors import ConfigError
from asya_agents.settings import ConsoleSettings

__all__ = ["Reviewers", "hash_password", "load_reviewers", "parse_reviewers", "verify_password"]

# scrypt cost: about 50 ms and 16 MiB per check on a laptop core.
_N, _R, _P = 2**14, 8, 1
_KEY_BYTES = 32


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted scrypt hash of ``password`` in the self-describing format above."""
    if not password:
        raise ValueError("an empty password cannot be hashed")
    salt = salt if salt is not None else os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_KEY_BYTES)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), _b64(salt), _b64(key)])


def verify_password(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; False for a mismatch or a bad hash."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, key = base64.b64decode(parts[4]), base64.b64decode(parts[5])
        got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(key),
                             maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, key)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Reviewers:
    """The reviewers allowed to sign in, by name."""

    def __init__(self, hashes: Mapping[str, str]) -> None:
        self._hashes = dict(hashes)

    def __len__(self) -> int:
        return len(self._hashes)

    @property
    def names(self) -> list[str]:
        return sorted(self._hashes)

    def check(self, name: str, password: str) -> bool:
        """True when ``name`` is a reviewer and ``password`` is theirs. An unknown name
        costs one hash too, so timing does not tell which names exist."""
        encoded = self._hashes.get(name.strip())
        if encoded is None:
            verify_password(password, _DUMMY)
            return False
        return verify_password(password, encoded)


_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + _b64(bytes(_KEY_BYTES))


def parse_reviewers(text: str, *, source: str) -> dict[str, str]:
    """``name:hash`` entries separated by commas or newlines; ``#`` starts a comment."""
    out: dict[str, str] = {}
    for raw in text.replace(",", "\n").splitlines():
        entry = raw.split("#", 1)[0].strip()
        if not entry:
            continue
        name, sep, encoded = entry.partition(":")
        if not sep or not name.strip() or not encoded.strip().startswith("scrypt$"):
            raise ConfigError(
                f"{source}: reviewer entry {name.strip() or entry!r} is not name:scrypt$… "
                "(write one with `asya review hash-password`)")
        out[name.strip()] = encoded.strip()
    return out


def load_reviewers(settings: ConsoleSettings) -> Reviewers:
    """Reviewers from ``ASYA_REVIEWERS`` and ``ASYA_REVIEWERS_FILE`` (merged)."""
    hashes: dict[str, str] = {}
    if settings.reviewers:
        hashes |= parse_reviewers(settings.reviewers, source="ASYA_REVIEWERS")
    if settings.reviewers_file is not None:
        path = settings.reviewers_file
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"ASYA_REVIEWERS_FILE {path}: cannot read it: {exc}") from exc
        hashes |= parse_reviewers(text, source=str(path))
    return Reviewers(hashes)


def main(argv: list[str]) -> int:
    """``hash-password [NAME]``: read a password (twice on a terminal), print the entry."""
    if not argv or argv[0] != "hash-password":
        print("usage: auth.py hash-password [NAME]", file=sys.stderr)
        return 2
    name = argv[1] if len(argv) > 1 else None
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("error: empty password", file=sys.stderr)
        return 1
    encoded = hash_password(password)
    print(f"{name}:{encoded}" if name else encoded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

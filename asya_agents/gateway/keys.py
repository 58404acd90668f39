"""Who may call the gateway: client keys, stored only as hashes.

A client sends ``Authorization: Bearer KEY``. ``ASYA_GATEWAY_KEYS`` (comma-separated)
and ``ASYA_GATEWAY_KEYS_FILE`` (one a line, e.g. a mounted Secret) hold one
``NAME:HASH`` entry per client; ``printf %s KEY | asya gateway hash-key NAME`` prints
one. Keys are random high-entropy tokens (``openssl rand -hex 32``), not passwords, so
one round of salted SHA-256 is the right hash: a slow one (scrypt, bcrypt) would cost
every request tens of milliseconds and buy nothing against a 256-bit secret.

A key is checked against every entry with :func:`hmac.compare_digest`, whichever
matches, so the time taken says nothing about which entry or how much of it matched. A
key or a hash is never logged, and no error message quotes one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from asya_agents.errors import ConfigError
from asya_agents.settings import GatewaySettings

__all__ = ["MIN_KEY_LENGTH", "Client", "KeyRing", "hash_key", "read_keys"]

_SCHEME = "sha256"
#: Characters a key needs at least: a random token, not a word.
MIN_KEY_LENGTH = 16


def hash_key(key: str, *, salt: str | None = None) -> str:
    """``sha256$SALT$HEX`` of ``key``; a fresh random salt unless one is given."""
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"a gateway key needs at least {MIN_KEY_LENGTH} characters "
                          "(make one with: openssl rand -hex 32)")
    salt = salt if salt is not None else secrets.token_hex(16)
    return f"{_SCHEME}${salt}${_digest(salt, key)}"


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256(f"{salt}${key}".encode()).hexdigest()


@dataclass(frozen=True)
class Client:
    """One entry: the client's name and its key's salt and digest."""

    name: str
    salt: str
    digest: str


class KeyRing:
    """The clients that may call the gateway."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients

    def __len__(self) -> int:
        return len(self.clients)

    @classmethod
    def parse(cls, entries: list[tuple[str, str]]) -> KeyRing:
        """From ``(where, "NAME:HASH")`` pairs; an error names the entry's place (never
        its hash)."""
        clients, seen = [], set()
        for where, entry in entries:
            name, _, hashed = entry.strip().partition(":")
            parts = hashed.split("$")
            if not name or len(parts) != 3 or parts[0] != _SCHEME or not parts[1] \
                    or len(parts[2]) != 64:
                raise ConfigError(f"{where}: not a NAME:{_SCHEME}$SALT$HEX entry "
                                  "(write one with `asya gateway hash-key NAME`)")
            if name in seen:
                raise ConfigError(f"{where}: client {name!r} is listed twice")
            seen.add(name)
            clients.append(Client(name, parts[1], parts[2]))
        return cls(clients)

    def verify(self, key: str) -> str | None:
        """The name of the client whose key ``key`` is, else ``None``; every entry is
        compared, in constant time each."""
        found = None
        for client in self.clients:
            if hmac.compare_digest(_digest(client.salt, key), client.digest):
                found = client.name
        return found

    def bearer(self, header: str | None) -> str | None:
        """The client an ``Authorization`` header authenticates, else ``None``."""
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        return self.verify(key.strip())


def read_keys(settings: GatewaySettings) -> KeyRing:
    """The entries of ``ASYA_GATEWAY_KEYS`` and ``ASYA_GATEWAY_KEYS_FILE``, merged."""
    entries = [(f"ASYA_GATEWAY_KEYS entry {i + 1}", e)
               for i, e in enumerate((settings.keys or "").split(",")) if e.strip()]
    if settings.keys_file is not None:
        entries += _file_entries(settings.keys_file)
    return KeyRing.parse(entries)


def _file_entries(path: Path) -> list[tuple[str, str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read ASYA_GATEWAY_KEYS_FILE {path}: "
                          f"{exc.strerror or exc}") from exc
    return [(f"{path}:{n}", line) for n, line in enumerate(lines, 1)
            if line.strip() and not line.lstrip().startswith("#")]

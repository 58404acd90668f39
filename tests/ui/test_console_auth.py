"""Reviewers' credentials: salted scrypt hashes only, from ASYA_REVIEWERS and a file
(a mounted Secret), with errors that name the source; `asya review hash-password`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from asya_agents.errors import ConfigError
from asya_agents.settings import ConsoleSettings
from tests.conftest import ROOT
from ui.auth import hash_password, load_reviewers, parse_reviewers, verify_password


def test_a_hash_is_salted_and_verifies_only_its_password() -> None:
    first, second = hash_password("s3cret"), hash_password("s3cret")
    assert first != second and "s3cret" not in first  # salted, no plaintext
    assert first.startswith("scrypt$16384$8$1$")
    assert verify_password("s3cret", first) and verify_password("s3cret", second)
    assert not verify_password("s3cret ", first)
    assert not verify_password("s3cret", "scrypt$16384$8$1$!!$??")
    assert not verify_password("s3cret", "md5$abc")


def test_reviewers_come_from_env_and_file_merged(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "reviewers"
    secret.write_text(f"# mounted from a Secret\ncarol:{hash_password('c-pw')}\n")
    monkeypatch.setenv("ASYA_REVIEWERS", f"alice:{hash_password('a-pw')}")
    monkeypatch.setenv("ASYA_REVIEWERS_FILE", str(secret))
    reviewers = load_reviewers(ConsoleSettings())
    assert reviewers.names == ["alice", "carol"]
    assert reviewers.check("carol", "c-pw") and reviewers.check(" alice ", "a-pw")
    assert not reviewers.check("alice", "c-pw") and not reviewers.check("dave", "a-pw")


def test_a_plaintext_entry_is_refused_naming_the_source() -> None:
    with pytest.raises(ConfigError, match=r"ASYA_REVIEWERS: reviewer entry 'bob'"):
        parse_reviewers(f"alice:{hash_password('x')},bob:hunter2", source="ASYA_REVIEWERS")


def test_an_unreadable_reviewers_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=f"ASYA_REVIEWERS_FILE {missing}"):
        load_reviewers(ConsoleSettings(reviewers_file=missing))


def test_asya_review_hash_password_prints_a_usable_entry() -> None:
    done = subprocess.run([sys.executable, "-m", "asya_agents", "review", "hash-password",
                           "erin"], input="e-pw\n", capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=True)
    entry = done.stdout.strip()
    assert entry.startswith("erin:scrypt$")
    assert parse_reviewers(entry, source="stdout")["erin"] == entry.split(":", 1)[1]
    assert verify_password("e-pw", entry.split(":", 1)[1])

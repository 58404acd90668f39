"""The blob module: the same four operations on local files and on a real S3 emulator,
within a storage policy that allows the test's folder and buckets (what it refuses:
tests/security/test_blob_attacks.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asya_agents import blob
from asya_agents.errors import AsyaError, BlobError, BlobNotFound
from asya_agents.settings import BlobSettings
from asya_agents.storage import StoragePolicy

ANY_BUCKET = StoragePolicy(buckets=frozenset({"*"}))


@pytest.mark.parametrize(
    ("url", "suffix", "expected"),
    [
        ("file:///x/cat.jpg", ".enhanced.png", "file:///x/cat.enhanced.png"),
        ("file:///x/cat.jpg", ".enhanced", "file:///x/cat.enhanced.jpg"),
        ("s3://b/in/cat.jpg", "_v2.webp", "s3://b/in/cat_v2.webp"),
        ("/x/cat.jpg", ".enhanced.png", "/x/cat.enhanced.png"),
        ("photos/cat", ".small", "photos/cat.small"),
        ("file:///x/my%20cat.jpg", ".e.png", "file:///x/my%20cat.e.png"),
    ],
)
def test_sibling_url_extends_the_stem(url: str, suffix: str, expected: str) -> None:
    assert blob.sibling_url(url, suffix) == expected


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("s3://bucket", "s3://bucket/a.png"),
        ("s3://bucket/out/", "s3://bucket/out/a.png"),
        ("file:///srv/out", "file:///srv/out/a.png"),
        ("/srv/out", "/srv/out/a.png"),
    ],
)
def test_join_url_puts_a_name_inside_a_folder(base: str, expected: str) -> None:
    assert blob.join_url(base, "a.png") == expected


@pytest.mark.parametrize("url", ["", "http://x/cat.jpg", "s3://bucket", "s3:///key",
                                 "file://otherhost/x.jpg"])
def test_bad_urls_are_rejected_with_the_url(url: str) -> None:
    with pytest.raises(BlobError) as info:
        blob.parse_url(url)
    assert url in str(info.value) or url == ""


def test_local_files_round_trip_through_file_urls_and_plain_paths(tmp_path: Path) -> None:
    # Given a file URL in a folder that does not exist yet
    url = (tmp_path / "deep" / "dir" / "a b.bin").as_uri()
    policy = StoragePolicy(roots=(tmp_path,))
    # When bytes are written, copied to a plain path and read back
    blob.write_bytes(url, b"\x00pixels", policy=policy)
    dst = str(tmp_path / "copy" / "b.bin")
    blob.copy(url, dst, policy=policy)
    # Then both places hold the same bytes, and no temp file is left behind
    assert blob.read_bytes(url, policy=policy) == b"\x00pixels"
    assert blob.read_bytes(dst, policy=policy) == b"\x00pixels"
    assert blob.exists(dst, policy=policy) and not blob.exists(dst + ".nope", policy=policy)
    assert sorted(p.name for p in (tmp_path / "deep" / "dir").iterdir()) == ["a b.bin"]


def test_missing_local_file_is_blob_not_found_naming_the_url(tmp_path: Path) -> None:
    url = (tmp_path / "missing.jpg").as_uri()
    policy = StoragePolicy(roots=(tmp_path,))
    with pytest.raises(BlobNotFound, match=re.escape(f"{url}: no such file")):
        blob.read_bytes(url, policy=policy)
    with pytest.raises(BlobNotFound, match=re.escape(url)):
        blob.copy(url, str(tmp_path / "x.jpg"), policy=policy)


def test_s3_round_trip_and_copies_both_ways(s3_settings: BlobSettings, bucket: str,
                                            tmp_path: Path) -> None:
    store = blob.BlobStore(s3_settings, policy=StoragePolicy(
        roots=(tmp_path,), buckets=frozenset({bucket})))
    try:
        # Given an object written to S3
        src = f"s3://{bucket}/in/cat.jpg"
        store.write_bytes(src, b"jpeg-bytes")
        # When it is copied within S3 and out to a local file and back in
        store.copy(src, blob.sibling_url(src, ".copy"))
        local = str(tmp_path / "cat.jpg")
        store.copy(src, local)
        store.copy(local, f"s3://{bucket}/back/cat.jpg")
        # Then every copy holds the same bytes
        assert store.read_bytes(f"s3://{bucket}/in/cat.copy.jpg") == b"jpeg-bytes"
        assert Path(local).read_bytes() == b"jpeg-bytes"
        assert store.read_bytes(f"s3://{bucket}/back/cat.jpg") == b"jpeg-bytes"
        assert store.exists(src) and not store.exists(f"s3://{bucket}/nope.jpg")
    finally:
        store.close()


def test_s3_errors_name_the_url_and_say_what_is_missing(s3_settings: BlobSettings,
                                                        bucket: str) -> None:
    missing_key = f"s3://{bucket}/nope.jpg"
    with pytest.raises(BlobNotFound, match=re.escape(f"{missing_key}: no such object")):
        blob.read_bytes(missing_key, settings=s3_settings, policy=ANY_BUCKET)
    with pytest.raises(BlobNotFound, match=r"s3://no-such-bucket-x/a.jpg: no such bucket"):
        blob.write_bytes("s3://no-such-bucket-x/a.jpg", b"x", settings=s3_settings,
                         policy=ANY_BUCKET)


def test_unreachable_s3_is_a_blob_error_not_a_botocore_error() -> None:
    from tests.moto import free_port

    settings = BlobSettings(endpoint_url=f"http://127.0.0.1:{free_port()}",
                            access_key_id="a", secret_access_key="b")
    store = blob.BlobStore(settings, policy=ANY_BUCKET)
    with pytest.raises(AsyaError, match=r"s3://b/k: S3 get_object failed"):
        store.read_bytes("s3://b/k")
    store.close()


def test_blob_settings_read_roots_buckets_and_the_cap_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    # Given ASYA_BLOB_* set the way a shell or a pod sets them
    monkeypatch.setenv("ASYA_BLOB_ROOTS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    monkeypatch.setenv("ASYA_BLOB_BUCKETS", "photos, scores")
    monkeypatch.setenv("ASYA_BLOB_MAX_BYTES", "10")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"0123456789")
    # When a store is made with no policy: the policy comes from them alone
    store = blob.BlobStore()
    assert store.policy.roots == (tmp_path / "a", tmp_path / "b")
    assert store.policy.buckets == {"photos", "scores"}
    # Then files within them are read, up to the cap
    assert store.read_bytes(str(tmp_path / "a" / "x.bin")) == b"0123456789"
    (tmp_path / "a" / "x.bin").write_bytes(b"0123456789!")
    with pytest.raises(BlobError, match="over the limit of 10 bytes"):
        store.read_bytes(str(tmp_path / "a" / "x.bin"))

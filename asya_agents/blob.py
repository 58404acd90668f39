"""Large data by URL: the one way actors read and write images.

Envelopes carry URLs, never pixels (see DESIGN.md), so every actor that touches an image
needs the same four operations on the same two kinds of location: a local file
(``file:///abs/path``, ``file://localhost/abs/path`` or a plain path) and an object in a
bucket (``s3://bucket/key``). Keeping them in one small module means ``enhance``,
``upload`` and ``asya demo`` agree on what a URL means and on how failures read::

    from asya_agents import blob
    from asya_agents.storage import StoragePolicy

    policy = StoragePolicy(roots=(Path("/srv"),), buckets=frozenset({"photos"}))
    data = blob.read_bytes("s3://photos/cat.jpg", policy=policy)
    out = blob.sibling_url("s3://photos/cat.jpg", ".enhanced.png")  # s3://photos/cat.enhanced.png
    blob.write_bytes(out, png_bytes, policy=policy)
    blob.copy(out, "file:///srv/accepted/cat.png", policy=policy)

A URL in a payload is untrusted input, so every operation goes through a
:class:`~asya_agents.storage.StoragePolicy`: the local folders and the buckets it may
touch, and the most bytes one read returns. With no policy given, the ``ASYA_BLOB_*``
settings alone make it, and with none of them set nothing at all is allowed; a mesh's
actors get theirs from the mesh (see ``storage.py``).

S3 goes through botocore (installed with the ``sqs`` extra); the endpoint, region and
credentials come from :class:`~asya_agents.settings.BlobSettings` (``ASYA_S3_*``), so the
same code talks to AWS, MinIO or moto. A :class:`BlobStore` keeps one S3 client; the
module-level functions build a store per call, which is fine for a handful of calls and
is what a long-lived actor should avoid by holding its own store.

Every failure is a :class:`~asya_agents.errors.BlobError` that names the URL; a URL the
policy does not allow is its subclass :class:`~asya_agents.errors.BlobRefused`.
"""

from __future__ import annotations

import threading
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from asya_agents.errors import BlobError, BlobNotFound, ConfigError
from asya_agents.settings import BlobSettings
from asya_agents.storage import Location, StoragePolicy, parse_url

__all__ = [
    "S3_HINT",
    "BlobStore",
    "Location",
    "copy",
    "exists",
    "join_url",
    "parse_url",
    "read_bytes",
    "sibling_url",
    "write_bytes",
]

S3_HINT = "s3:// URLs need botocore: pip install 'asya-agents[sqs]'"


def sibling_url(url: str, suffix: str) -> str:
    """The URL of a file beside ``url``, its stem extended by ``suffix``.

    If ``suffix`` carries an extension of its own (a dot after its first character, as in
    ``.enhanced.png`` or ``_v2.webp``) that extension replaces the original one; otherwise
    (``.enhanced``) the original extension is kept::

        sibling_url("file:///x/cat.jpg", ".enhanced.png") == "file:///x/cat.enhanced.png"
        sibling_url("file:///x/cat.jpg", ".enhanced")     == "file:///x/cat.enhanced.jpg"
        sibling_url("s3://b/in/cat.jpg", "_v2.webp")      == "s3://b/in/cat_v2.webp"
        sibling_url("/x/cat.jpg", ".enhanced.png")        == "/x/cat.enhanced.png"
    """
    loc = parse_url(url)
    old = PurePosixPath(loc.path)
    new_ext = PurePosixPath(suffix).suffix if suffix else ""  # ".enhanced" has none
    name = f"{old.stem}{suffix}" if new_ext else f"{old.stem}{suffix}{old.suffix}"
    return _with_path(url, loc, str(old.with_name(name)))


def join_url(base: str, name: str) -> str:
    """``name`` inside the folder or prefix ``base``::

        join_url("s3://bucket", "a.png") == "s3://bucket/a.png"
        join_url("s3://bucket/out/", "a.png") == "s3://bucket/out/a.png"
        join_url("file:///srv/out", "a.png") == "file:///srv/out/a.png"
    """
    if base.startswith("s3://"):
        bucket, _, prefix = base[len("s3://"):].partition("/")
        if not bucket:
            raise BlobError("an s3 URL needs a bucket: s3://bucket/prefix", url=base)
        prefix = prefix.strip("/")
        return f"s3://{bucket}/{prefix}/{name}" if prefix else f"s3://{bucket}/{name}"
    loc = parse_url(base)
    return _with_path(base, loc, str(PurePosixPath(loc.path) / name))


def _with_path(url: str, loc: Location, path: str) -> str:
    if loc.scheme == "s3":
        return f"s3://{loc.bucket}/{path.lstrip('/')}"
    if url.startswith("file:"):
        return "file://" + quote(path)
    return path


class BlobStore:
    """Reads and writes by URL within ``policy``; holds one S3 client, made on first use.

    ``policy`` unset: :meth:`StoragePolicy.from_settings` of ``settings`` (the
    ``ASYA_BLOB_*`` variables), which allows nothing when they are unset."""

    def __init__(self, settings: BlobSettings | None = None, *,
                 policy: StoragePolicy | None = None) -> None:
        if policy is not None and not isinstance(policy, StoragePolicy):
            raise ConfigError(
                f"a BlobStore's policy is a StoragePolicy, not {type(policy).__name__} "
                "(a handler's storage comes from spec.storage, not spec.config)")
        self.settings = settings or BlobSettings()
        self.policy = policy if policy is not None else StoragePolicy.from_settings(
            self.settings)
        self._s3: Any = None
        self._lock = threading.Lock()  # actors call from several worker threads

    # -- public operations --------------------------------------------------------------

    def check(self, url: str) -> Location:
        """``url`` parsed; :class:`~asya_agents.errors.BlobRefused` unless the policy
        allows it. Nothing is read or written."""
        return self.policy.check(url)

    def check_folder(self, url: str) -> None:
        """Refuse (:class:`~asya_agents.errors.BlobRefused`) a folder or prefix that no
        file inside could be written to: what an actor checks of its output at start."""
        self.policy.check(join_url(url, "file"))

    def read_bytes(self, url: str) -> bytes:
        """The bytes at ``url``, at most ``policy.max_bytes`` of them."""
        loc = self.policy.check(url)
        if loc.scheme == "file":
            return self.policy.read_local(url, loc.path)
        reply = self._s3_call(url, "get_object", Bucket=loc.bucket, Key=loc.path)
        body = reply["Body"]
        try:
            if int(reply.get("ContentLength") or 0) > self.policy.max_bytes:
                raise self.policy.too_large(url)
            data: bytes = body.read(self.policy.max_bytes + 1)
        finally:
            body.close()
        if len(data) > self.policy.max_bytes:
            raise self.policy.too_large(url)
        return data

    def write_bytes(self, url: str, data: bytes) -> None:
        """Write ``data``; local writes are atomic (a temp file renamed into place)."""
        loc = self.policy.check(url)
        if loc.scheme == "file":
            self.policy.write_local(url, loc.path, data)
            return
        self._s3_call(url, "put_object", Bucket=loc.bucket, Key=loc.path, Body=data)

    def copy(self, src_url: str, dst_url: str) -> None:
        """Copy ``src_url`` to ``dst_url``, server-side when both are in S3."""
        src, dst = self.policy.check(src_url), self.policy.check(dst_url)
        if src.scheme == dst.scheme == "s3":
            source = {"Bucket": src.bucket, "Key": src.path}
            self._s3_call(src_url, "copy_object", Bucket=dst.bucket, Key=dst.path,
                          CopySource=source, dst_url=dst_url)
            return
        self.write_bytes(dst_url, self.read_bytes(src_url))

    def exists(self, url: str) -> bool:
        """Whether a regular file or an object is at ``url`` (refused if not allowed)."""
        loc = self.policy.check(url)
        if loc.scheme == "file":
            return self.policy.is_file(url, loc.path)
        try:
            self._s3_call(url, "head_object", Bucket=loc.bucket, Key=loc.path)
        except BlobNotFound:
            return False
        return True

    # -- S3 ------------------------------------------------------------------------

    def _client(self, url: str) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = self._new_client(url)
            return self._s3

    def _new_client(self, url: str) -> Any:
        try:
            from botocore.config import Config
            from botocore.session import get_session
        except ImportError as exc:
            raise BlobError(f"{S3_HINT} ({exc})", url=url) from exc
        s = self.settings
        return get_session().create_client(
            "s3",
            region_name=s.region,
            endpoint_url=s.endpoint_url,
            aws_access_key_id=s.access_key_id,
            aws_secret_access_key=s.secret_access_key,
            config=Config(
                s3={"addressing_style": "path"} if s.endpoint_url else {},
                # One attempt: retrying is the runtime's policy, not a hidden loop here.
                retries={"mode": "standard", "total_max_attempts": 1},
                connect_timeout=10, read_timeout=60,
            ),
        )

    def _s3_call(self, url: str, op: str, *, dst_url: str | None = None, **kwargs: Any) -> Any:
        client = self._client(url)
        try:
            return getattr(client, op)(**kwargs)
        except Exception as exc:
            raise _translate(exc, url, op, dst_url) from exc

    def close(self) -> None:
        with self._lock:
            if self._s3 is not None:
                self._s3.close()
                self._s3 = None


_MISSING = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}


def _translate(exc: Exception, url: str, op: str, dst_url: str | None) -> BlobError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    where = f" to {dst_url}" if dst_url else ""
    if code in _MISSING:
        what = "no such bucket" if code == "NoSuchBucket" else "no such object"
        return BlobNotFound(f"{what} ({op}{where})", url=url)
    detail = f"{code}: {exc}" if code else f"{type(exc).__name__}: {exc}"
    return BlobError(f"S3 {op}{where} failed: {detail}", url=url)


# -- one-shot helpers ------------------------------------------------------------------


def read_bytes(url: str, *, settings: BlobSettings | None = None,
               policy: StoragePolicy | None = None) -> bytes:
    """The bytes at ``url``; :class:`BlobError` naming the URL if absent, unreadable or
    refused by ``policy``."""
    store = BlobStore(settings, policy=policy)
    try:
        return store.read_bytes(url)
    finally:
        store.close()


def write_bytes(url: str, data: bytes, *, settings: BlobSettings | None = None,
                policy: StoragePolicy | None = None) -> None:
    """Write ``data`` at ``url``, creating local parent folders."""
    store = BlobStore(settings, policy=policy)
    try:
        store.write_bytes(url, data)
    finally:
        store.close()


def copy(src_url: str, dst_url: str, *, settings: BlobSettings | None = None,
         policy: StoragePolicy | None = None) -> None:
    """Copy between any two supported URLs."""
    store = BlobStore(settings, policy=policy)
    try:
        store.copy(src_url, dst_url)
    finally:
        store.close()


def exists(url: str, *, settings: BlobSettings | None = None,
           policy: StoragePolicy | None = None) -> bool:
    store = BlobStore(settings, policy=policy)
    try:
        return store.exists(url)
    finally:
        store.close()

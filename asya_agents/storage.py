"""What a payload may make the mesh read or write: the storage policy.

Payloads name the files that actors read and write (``image_url``, ``enhanced_url``),
and a payload comes from whoever can send to the mesh: ``asya send``, the gateway, a
reviewer's edit. Left unchecked, ``image_url: /etc/passwd`` is read and shown by the
review console and ``/dev/zero`` is read without end. :class:`StoragePolicy` is the
rule that :class:`~asya_agents.blob.BlobStore` checks on every read and write:

- a local path (a ``file://`` URL or a plain path) must resolve, ``..`` and every
  symlink followed, to a place inside one of ``roots``. It is then opened one component
  at a time from that root with ``O_NOFOLLOW``, so a symlink swapped in after the check
  is refused, never followed;
- a read needs a regular file (no device, FIFO, socket or directory): checked before the
  file is opened, and again on the open descriptor, which must be the file checked. It
  stops at ``max_bytes + 1`` bytes, so nothing is read without end;
- an ``s3://`` URL needs its bucket in ``buckets`` (``*`` allows every bucket, and only
  when someone wrote it there);
- nothing inside a ``guarded`` folder is reached, whichever root holds it, except
  through a root that lies below that folder. A mesh guards its state folder: its
  queues, result, review and sign-in databases and the console's secret are no
  payload's business, even where a root such as the demo's folder contains them.

A refusal is a :class:`~asya_agents.errors.BlobRefused` naming the URL and the rule; the
runtime ends it in ``error-end`` with reason ``blob-refused`` and never retries it. Where
a mesh's policy comes from (``ASYA_BLOB_*``, ``spec.storage`` of the mesh and of each
actor) is :meth:`asya_agents.manifest.LoadedMesh.storage_policy`; a class handler gets
its actor's policy by declaring a ``storage`` parameter (see ``handlers.py``).

The URL grammar (:func:`parse_url`) lives here, below :mod:`asya_agents.blob`, so that
the manifests can build a policy without the module that holds the S3 client.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field

from asya_agents.errors import BlobError, BlobNotFound, BlobRefused, ConfigError
from asya_agents.settings import DEFAULT_BLOB_MAX_BYTES, BlobSettings

__all__ = ["ANY_BUCKET", "Location", "StoragePolicy", "StorageSpec", "mesh_policy", "parse_url"]

#: In ``buckets``: every bucket is allowed.
ANY_BUCKET = "*"
_ROOTS_HINT = "set ASYA_BLOB_ROOTS or spec.storage.roots"
_BUCKETS_HINT = "set ASYA_BLOB_BUCKETS or spec.storage.buckets"
_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink"))


@dataclass(frozen=True)
class Location:
    """A parsed URL: ``scheme`` is ``file`` or ``s3``; ``path`` is the local path (file)
    or the key (s3); ``bucket`` is set for s3 only."""

    scheme: str
    path: str
    bucket: str = ""


def parse_url(url: str) -> Location:
    """Split ``url`` into a :class:`Location`; a plain path is a local file."""
    if not url:
        raise BlobError("empty URL", url=url)
    parts = urlsplit(url)
    if parts.scheme == "s3":
        key = parts.path.lstrip("/")
        if not parts.netloc or not key:
            raise BlobError("an s3 URL needs a bucket and a key: s3://bucket/key", url=url)
        return Location("s3", key, parts.netloc)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise BlobRefused(f"a file URL on another host {parts.netloc!r} (only local "
                              "files: file:///path or file://localhost/path)", url=url)
        if not parts.path:
            raise BlobError("a file URL needs a path: file:///path", url=url)
        return Location("file", unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:  # one letter: a Windows drive, a path
        raise BlobRefused(f"unsupported scheme {parts.scheme!r} (use file:// or s3://)",
                          url=url)
    return Location("file", url)


@dataclass(frozen=True)
class StoragePolicy:
    """The local folders (``roots``, resolved when the policy is made) and the buckets
    that URLs may name, and the most bytes one read returns (``max_bytes``)."""

    roots: tuple[Path, ...] = ()
    buckets: frozenset[str] = frozenset()
    max_bytes: int = DEFAULT_BLOB_MAX_BYTES
    #: Folders no URL reaches into but through a root below them (module docstring).
    guarded: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        roots = tuple(dict.fromkeys(_resolved_root(r) for r in self.roots))
        object.__setattr__(self, "roots", roots)
        object.__setattr__(self, "guarded",
                           tuple(dict.fromkeys(_resolved_root(g) for g in self.guarded)))
        object.__setattr__(self, "buckets", frozenset(self.buckets))
        if self.max_bytes < 1:
            raise ConfigError(f"storage: max_bytes must be at least 1, got {self.max_bytes}")

    @classmethod
    def from_settings(cls, settings: BlobSettings) -> StoragePolicy:
        """The policy of ``ASYA_BLOB_ROOTS``, ``ASYA_BLOB_BUCKETS`` and
        ``ASYA_BLOB_MAX_BYTES`` alone: with none set, nothing is allowed."""
        return cls(tuple(settings.roots), frozenset(settings.buckets), settings.max_bytes)

    def extended(self, *, roots: Iterable[str | Path] = (),
                 buckets: Iterable[str] = ()) -> StoragePolicy:
        """This policy with more roots and buckets allowed."""
        return replace(self, roots=(*self.roots, *map(Path, roots)),
                       buckets=self.buckets | frozenset(buckets))

    # -- checks: nothing is opened ----------------------------------------------------

    def check(self, url: str) -> Location:
        """``url`` parsed; :class:`BlobRefused` unless this policy allows it (reads and
        writes share the roots and the buckets)."""
        loc = parse_url(url)
        if loc.scheme == "s3":
            self.check_bucket(url, loc.bucket)
        else:
            self.local_path(url, loc.path)
        return loc

    def check_bucket(self, url: str, bucket: str) -> None:
        if ANY_BUCKET in self.buckets or bucket in self.buckets:
            return
        allowed = ", ".join(sorted(self.buckets)) or "none"
        raise BlobRefused(f"bucket {bucket!r} is not allowed (allowed: {allowed}; "
                          f"{_BUCKETS_HINT})", url=url)

    def local_path(self, url: str, path: str) -> tuple[Path, tuple[str, ...]]:
        """The root that ``path`` lies in, and the parts of ``path`` below it, once ``..``
        and every symlink (a parent's included) are resolved."""
        try:
            resolved = Path(path).resolve(strict=False)
        except (OSError, RuntimeError, ValueError) as exc:  # a loop, a NUL byte
            raise BlobRefused(f"the path cannot be resolved ({exc})", url=url) from exc
        for root in self.roots:
            if resolved == root:
                raise BlobRefused(f"names the allowed root {root} itself, not a file in it",
                                  url=url)
        # the nearest root holding the path: a root inside a guarded folder opens it
        holding = [r for r in self.roots if resolved.is_relative_to(r)]
        if holding:
            root = max(holding, key=lambda r: len(r.parts))
            self._check_guarded(url, resolved, root)
            return root, resolved.relative_to(root).parts
        shown = ", ".join(str(r) for r in self.roots) or "none are set"
        raise BlobRefused(f"outside the allowed roots: {shown} ({_ROOTS_HINT})", url=url)

    def _check_guarded(self, url: str, resolved: Path, root: Path) -> None:
        for folder in self.guarded:
            if resolved.is_relative_to(folder) and not (
                    root != folder and root.is_relative_to(folder)):
                raise BlobRefused(f"inside the mesh's state folder {folder} (its queues "
                                  "and stores), which no root opens", url=url)

    def too_large(self, url: str) -> BlobRefused:
        return BlobRefused(f"over the limit of {self.max_bytes} bytes "
                           "(ASYA_BLOB_MAX_BYTES)", url=url)

    # -- local files --------------------------------------------------------------------

    def read_local(self, url: str, path: str) -> bytes:
        """The bytes of the regular file at ``path``; refused past ``max_bytes``."""
        root, parts = self.local_path(url, path)
        try:
            fd = _open_regular(url, root, parts)
            try:
                if os.fstat(fd).st_size > self.max_bytes:
                    raise self.too_large(url)
                return self._read_capped(url, fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise _translate(url, exc, "read") from exc

    def _read_capped(self, url: str, fd: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while size <= self.max_bytes:  # at most max_bytes + 1 bytes are ever read
            chunk = os.read(fd, min(_CHUNK, self.max_bytes + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise self.too_large(url)

    def write_local(self, url: str, path: str, data: bytes) -> None:
        """Write ``data`` at ``path`` atomically (a temp file renamed into place),
        creating the folders below the root."""
        root, parts = self.local_path(url, path)
        try:
            root.mkdir(parents=True, exist_ok=True)
            parent = _open_dirs(root, parts[:-1], create=True)
            try:
                with contextlib.suppress(FileNotFoundError):  # a new file is fine
                    _stat_regular(url, parts[-1], parent)
                _atomic_write(parent, parts[-1], data)
            finally:
                os.close(parent)
        except OSError as exc:
            raise _translate(url, exc, "write") from exc

    def is_file(self, url: str, path: str) -> bool:
        """Whether a regular file is at ``path`` (refused outside the roots)."""
        root, parts = self.local_path(url, path)
        try:
            parent = _open_dirs(root, parts[:-1], create=False)
        except OSError:
            return False
        try:
            return stat.S_ISREG(os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode)
        except OSError:
            return False
        finally:
            os.close(parent)


class StorageSpec(BaseModel):
    """``spec.storage`` of a Mesh or an AsyncActor: what payloads' URLs may name beyond
    the ``ASYA_BLOB_*`` settings. Declared here so that the policy and the manifest
    read the same fields."""

    model_config = ConfigDict(extra="forbid")

    roots: list[str] = Field(default_factory=list,
                             description="folders local paths may be in, relative to the mesh")
    buckets: list[str] = Field(default_factory=list,
                               description="s3 buckets URLs may name; '*' allows every bucket")


def mesh_policy(settings: BlobSettings, *, folder: Path, state_dir: Path,
                specs: Iterable[StorageSpec]) -> StoragePolicy:
    """The policy of a mesh in ``folder``: the ``ASYA_BLOB_*`` settings, the mesh's own
    ``data/`` folder and the ``output/`` folder of its state (where the food-image
    upload writes by default), and ``specs`` (``mesh.yaml``'s, then an actor's) with
    relative roots taken relative to ``folder``. The rest of the state folder is
    guarded: no root opens its databases."""
    specs = list(specs)
    roots = [folder / "data", state_dir / "output",
             *(folder / r for s in specs for r in s.roots)]
    policy = StoragePolicy.from_settings(settings).extended(
        roots=roots, buckets=[b for s in specs for b in s.buckets])
    return replace(policy, guarded=(*policy.guarded, state_dir))


def _resolved_root(root: str | Path) -> Path:
    try:
        return Path(root).resolve(strict=False)
    except (OSError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"storage root {str(root)!r} cannot be resolved: {exc}") from exc


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _open_dirs(root: Path, parts: tuple[str, ...], *, create: bool) -> int:
    """A descriptor of ``root/parts``, each folder opened from the one above it with
    ``O_NOFOLLOW``: a symlink anywhere below the root is refused by the kernel."""
    fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts:
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o777, dir_fd=fd)
            below = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = below
    except BaseException:
        os.close(fd)
        raise
    return fd


def _stat_regular(url: str, name: str, parent: int) -> os.stat_result:
    """``name`` in the folder ``parent``, refused unless it is a regular file."""
    found = os.stat(name, dir_fd=parent, follow_symlinks=False)
    if not stat.S_ISREG(found.st_mode):
        raise BlobRefused(f"not a regular file ({_kind(found.st_mode)})", url=url)
    return found


def _open_regular(url: str, root: Path, parts: tuple[str, ...]) -> int:
    """Open the regular file ``root/parts`` for reading; refused if it is anything else,
    checked before the open (a device is never opened) and on the open descriptor."""
    parent = _open_dirs(root, parts[:-1], create=False)
    try:
        before = _stat_regular(url, parts[-1], parent)
        # O_NONBLOCK: a FIFO swapped in after the check cannot block the open.
        fd = os.open(parts[-1], os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=parent)
    finally:
        os.close(parent)
    opened = os.fstat(fd)
    if not stat.S_ISREG(opened.st_mode) or \
            (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise BlobRefused("the file changed while it was opened", url=url)
    return fd


def _atomic_write(parent: int, name: str, data: bytes) -> None:
    """Write ``name`` in the folder ``parent`` through a temporary file renamed into
    place. The file gets the mode any program's new file gets, ``0o666`` less the
    process umask (``0644`` under the usual ``022``): an output is for whoever reads that
    folder, and who may is the umask's and the folder's say, not this function's."""
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o666, dir_fd=parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=parent, dst_dir_fd=parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=parent)
        raise


def _translate(url: str, exc: OSError, verb: str) -> BlobError:
    if isinstance(exc, FileNotFoundError):
        return BlobNotFound("no such file", url=url)
    if exc.errno == errno.ELOOP:
        return BlobRefused("a symlink appeared in the path while it was opened", url=url)
    return BlobError(f"cannot {verb}: {exc}", url=url)

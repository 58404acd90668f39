"""What a payload's URLs can make the mesh read or write: every attack tried, and what it
gets. A payload is untrusted input (whoever can send to the mesh or edit in review chose
its URLs); the storage policy (asya_agents/storage.py) confines them.

ROOT is the one allowed folder, OUT a folder beside it that is not allowed; ``photos``
is the one allowed bucket. Every refusal is a ``BlobRefused`` whose message starts with
the URL and ``refused:`` and then says the rule; through a mesh it ends in ``error-end``
once, with reason ``blob-refused``, and is never retried.

Each attack, and what it gets (after ``refused:``, unless said otherwise):

- ``..`` out of a root (``file://ROOT/../OUT/secret.txt``, ``%2e%2e``, a plain path):
  "outside the allowed roots: ROOT (set ASYA_BLOB_ROOTS or spec.storage.roots)";
- an absolute path (``/etc/passwd``, ``file:///etc/passwd``,
  ``file://localhost/etc/passwd``): outside the allowed roots;
- a file on another host (``file://attacker.example/etc/passwd``): "a file URL on
  another host"; another scheme (``ftp://``, ``http://169.254.169.254/``): "unsupported
  scheme"; a NUL byte (``file://ROOT/cat.png%00.txt``): "the path cannot be resolved";
- a symlink in a root to a file outside, a link to such a link, a symlinked folder in a
  root (reads and writes): outside the allowed roots; a symlink loop: "the path cannot be
  resolved";
- a root configured as a symlink: confined to the link's target (``LINK/../OUT/...`` is
  outside; files through LINK are fine);
- ``/dev/zero``, ``/dev/urandom``: outside the allowed roots; with ``/dev`` allowed or
  a link to them in a root: "not a regular file (a character device)", never opened;
- a FIFO in a root with no writer: "not a regular file (a FIFO)", at once (an open would
  block forever), for reads and for writes that would replace it;
- a directory: "not a regular file (a directory)"; the root itself: "names the allowed
  root ... itself";
- a file over the cap (max + 1 bytes; ``/proc/self/maps`` whose size says 0;
  ``/proc/self/pagemap``, hundreds of GiB): "over the limit of N bytes
  (ASYA_BLOB_MAX_BYTES)", having read at most max + 1 bytes;
- a file that is not an image, at enhance's ``image_url``: a ``BlobError`` "not a
  readable image", no crash;
- a bucket not listed (``s3://other/key``; a copy into it): "bucket 'other' is not
  allowed (allowed: photos; set ASYA_BLOB_BUCKETS or spec.storage.buckets)", before any
  request;
- writes outside (``OUT/x``, through ``..``, through a symlinked folder): refused,
  nothing written; enhance's ``output_location`` or upload's ``output`` outside: a
  ``ConfigError`` when the actor starts;
- through a mesh (``image_url: /etc/passwd`` or ``/dev/zero`` to enhance,
  ``enhanced_url: /etc/passwd`` to upload, with retries configured): one ``error-end``
  record, reason ``blob-refused``, attempt 1, no retry; a refused photo in a batch fails
  alone and its batch-mates succeed;
- through the review console (``/etc/passwd``, ``/dev/zero``, a file past 25 MiB):
  refused, nothing shown;
- the mesh's own state folder (``queues.db``, ``results.db``, ``review.db``, the
  console's secret), even where a root holds it (the demo's folder does): "inside the
  mesh's state folder"; for reads (the console, enhance) and writes (upload), and
  through a mesh one ``error-end`` record with reason ``blob-refused``; only its
  ``output/`` folder, a root of its own, is open.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from actors.enhance.handler import Enhancer
from asya_agents import blob
from asya_agents.context import MeshContext
from asya_agents.errors import BlobError, BlobRefused, ConfigError
from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.resiliency.spec import RetryPolicy
from asya_agents.settings import BlobSettings, Settings
from asya_agents.storage import StoragePolicy
from asya_agents.testing import LocalMesh
from tests.conftest import ROOT as REPO
from tests.moto import free_port

OUTSIDE = "outside the allowed roots"
ROOTS_HINT = "(set ASYA_BLOB_ROOTS or spec.storage.roots)"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    Image.new("RGB", (32, 24), (90, 60, 40)).save(folder / "cat.png")
    return folder


@pytest.fixture
def out(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("the host's secret")
    return folder


@pytest.fixture
def policy(root: Path) -> StoragePolicy:
    return StoragePolicy(roots=(root,), buckets=frozenset({"photos"}), max_bytes=4096)


def refused(call: Callable[[], Any], url: str, rule: str) -> BlobRefused:
    """Assert ``call`` is refused: a BlobRefused naming ``url`` first, then the rule."""
    with pytest.raises(BlobRefused) as info:
        call()
    assert info.value.url == url
    assert str(info.value).startswith(f"{url}: refused: ")
    assert rule in info.value.rule, info.value.rule
    return info.value


def read(policy: StoragePolicy, url: str) -> Callable[[], bytes]:
    return lambda: blob.read_bytes(url, policy=policy)


# -- paths out of the roots -------------------------------------------------------------


def test_dot_dot_traversal_is_resolved_before_the_check(root: Path, out: Path,
                                                        policy: StoragePolicy) -> None:
    # Given URLs that climb out of ROOT with "..", plainly, percent-encoded and as a path
    for url in [f"file://{root}/../outside/secret.txt",
                f"file://{root}/%2e%2e/outside/secret.txt",
                f"{root}/sub/../../outside/secret.txt",
                f"file://{root}/nowhere/../../outside/secret.txt"]:
        # When one is read, Then it is refused naming ROOT and how to allow more
        error = refused(read(policy, url), url, OUTSIDE)
        assert f"{OUTSIDE}: {root} {ROOTS_HINT}" in str(error)
    # And ".." that stays inside is fine
    assert blob.read_bytes(f"{root}/sub/../cat.png", policy=policy)[:4] == b"\x89PNG"


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/passwd",
                                 "file://localhost/etc/passwd"])
def test_absolute_paths_outside_the_roots_are_refused(url: str,
                                                      policy: StoragePolicy) -> None:
    refused(read(policy, url), url, OUTSIDE)
    refused(lambda: blob.exists(url, policy=policy), url, OUTSIDE)


def test_nothing_is_allowed_where_nothing_is_configured(root: Path) -> None:
    # Given a store with no policy and no ASYA_BLOB_* settings
    store = blob.BlobStore(BlobSettings())
    # Then a file that exists is refused, and the message says how to allow it
    url = str(root / "cat.png")
    error = refused(lambda: store.read_bytes(url), url, OUTSIDE)
    assert f"none are set {ROOTS_HINT}" in str(error)
    refused(lambda: store.read_bytes("s3://photos/a.png"), "s3://photos/a.png",
            "bucket 'photos' is not allowed (allowed: none;")


@pytest.mark.parametrize(("url", "rule"), [
    ("file://attacker.example/etc/passwd", "a file URL on another host 'attacker.example'"),
    ("ftp://attacker.example/x.png", "unsupported scheme 'ftp'"),
    ("http://169.254.169.254/latest/meta-data", "unsupported scheme 'http'"),
])
def test_other_hosts_and_schemes_are_refused(url: str, rule: str,
                                             policy: StoragePolicy) -> None:
    refused(read(policy, url), url, rule)


def test_a_nul_byte_is_refused(root: Path, policy: StoragePolicy) -> None:
    url = f"file://{root}/cat.png%00.txt"
    refused(read(policy, url), url, "the path cannot be resolved")


# -- symlinks -----------------------------------------------------------------------------


def test_a_symlink_in_a_root_to_a_file_outside_is_refused(root: Path, out: Path,
                                                          policy: StoragePolicy) -> None:
    (root / "link.png").symlink_to(out / "secret.txt")
    url = (root / "link.png").as_uri()
    refused(read(policy, url), url, OUTSIDE)
    # a symlink that stays inside the root is followed
    (root / "alias.png").symlink_to(root / "cat.png")
    assert blob.read_bytes(str(root / "alias.png"), policy=policy)[:4] == b"\x89PNG"


def test_a_link_to_a_link_to_outside_is_refused(root: Path, out: Path,
                                                policy: StoragePolicy) -> None:
    (root / "b").symlink_to(out / "secret.txt")
    (root / "a").symlink_to(root / "b")
    refused(read(policy, str(root / "a")), str(root / "a"), OUTSIDE)


def test_a_symlinked_folder_in_a_root_is_refused_for_reads_and_writes(
        root: Path, out: Path, policy: StoragePolicy) -> None:
    (root / "dir").symlink_to(out, target_is_directory=True)
    url = str(root / "dir" / "secret.txt")
    refused(read(policy, url), url, OUTSIDE)
    target = str(root / "dir" / "planted.png")
    refused(lambda: blob.write_bytes(target, b"x", policy=policy), target, OUTSIDE)
    assert sorted(p.name for p in out.iterdir()) == ["secret.txt"]


def test_a_symlink_loop_is_refused(root: Path, policy: StoragePolicy) -> None:
    (root / "loop1").symlink_to(root / "loop2")
    (root / "loop2").symlink_to(root / "loop1")
    refused(read(policy, str(root / "loop1")), str(root / "loop1"),
            "the path cannot be resolved")


def test_a_root_that_is_a_symlink_confines_to_its_target(tmp_path: Path, root: Path,
                                                         out: Path) -> None:
    # Given a root configured by the name of a symlink to ROOT
    link = tmp_path / "link-to-root"
    link.symlink_to(root, target_is_directory=True)
    policy = StoragePolicy(roots=(link,))
    # Then the policy holds the resolved root, and files through either name are fine
    assert policy.roots == (root,)
    assert blob.read_bytes(str(link / "cat.png"), policy=policy)[:4] == b"\x89PNG"
    assert blob.read_bytes(str(root / "cat.png"), policy=policy)[:4] == b"\x89PNG"
    # And ".." from the link leaves the target, not the link's folder: refused
    url = f"{link}/../outside/secret.txt"
    refused(read(policy, url), url, f"{OUTSIDE}: {root}")


# -- what is not a regular file -----------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_devices_are_refused_without_being_read(device: str, root: Path,
                                                policy: StoragePolicy) -> None:
    # Outside the roots: refused by the roots
    refused(read(policy, device), device, OUTSIDE)
    # With /dev itself allowed (a mistake), or a link to the device in a root: refused
    # as a device, before it is opened (a read would never end)
    careless = StoragePolicy(roots=(root, Path("/dev")))
    refused(read(careless, device), device, "not a regular file (a character device)")
    (root / "dev.png").symlink_to(device)
    refused(read(careless, str(root / "dev.png")), str(root / "dev.png"),
            "not a regular file (a character device)")


@pytest.mark.timeout(10)
def test_a_fifo_is_refused_at_once(root: Path, policy: StoragePolicy) -> None:
    # Given a FIFO in the root with no writer: opening it to read would block forever
    os.mkfifo(root / "fifo.png")
    url = (root / "fifo.png").as_uri()
    # Then it is refused at once, by reads, and by writes that would replace it
    refused(read(policy, url), url, "not a regular file (a FIFO)")
    refused(lambda: blob.write_bytes(url, b"x", policy=policy), url,
            "not a regular file (a FIFO)")
    assert not blob.exists(url, policy=policy)


def test_a_directory_is_refused(root: Path, policy: StoragePolicy) -> None:
    (root / "sub").mkdir()
    refused(read(policy, str(root / "sub")), str(root / "sub"),
            "not a regular file (a directory)")
    refused(lambda: blob.write_bytes(str(root / "sub"), b"x", policy=policy),
            str(root / "sub"), "not a regular file (a directory)")
    refused(read(policy, root.as_uri()), root.as_uri(), "names the allowed root")


# -- size ---------------------------------------------------------------------------------


def test_a_file_over_the_cap_is_refused_and_one_at_the_cap_is_read(
        root: Path, policy: StoragePolicy) -> None:
    (root / "exact.bin").write_bytes(b"x" * policy.max_bytes)
    (root / "big.bin").write_bytes(b"x" * (policy.max_bytes + 1))
    assert len(blob.read_bytes(str(root / "exact.bin"), policy=policy)) == policy.max_bytes
    refused(read(policy, str(root / "big.bin")), str(root / "big.bin"),
            "over the limit of 4096 bytes (ASYA_BLOB_MAX_BYTES)")


@pytest.mark.timeout(10)
def test_the_cap_holds_while_reading_files_whose_size_lies() -> None:
    # /proc files are regular files of size 0: maps holds a few KiB, pagemap 8 bytes per
    # page of the address space (hundreds of GiB). Read whole, either would pass a
    # check made after reading, and pagemap would not end in this test's lifetime.
    proc = StoragePolicy(roots=(Path("/proc/self"),), max_bytes=(1 << 20) - 1)
    refused(read(proc, "/proc/self/pagemap"), "/proc/self/pagemap", "over the limit")
    tiny = StoragePolicy(roots=(Path("/proc/self"),), max_bytes=100)
    refused(read(tiny, "/proc/self/maps"), "/proc/self/maps", "over the limit of 100 bytes")


@pytest.mark.timeout(10)
def test_the_reader_stops_one_byte_past_the_cap_on_a_pipe() -> None:
    # The reader itself, on what a FIFO would feed it had one got past the checks: a
    # pipe holding more than the cap. It takes cap + 1 bytes and leaves the rest.
    policy = StoragePolicy(max_bytes=1000)
    reader, writer = os.pipe()
    try:
        os.write(writer, b"z" * 1500)
        with pytest.raises(BlobRefused, match="over the limit of 1000 bytes"):
            policy._read_capped("pipe:", reader)
        os.close(writer)
        assert len(os.read(reader, 4096)) == 1500 - 1001
    finally:
        os.close(reader)


# -- buckets ------------------------------------------------------------------------------


def test_buckets_not_allowed_are_refused_before_any_request(root: Path) -> None:
    # Given an S3 endpoint that nothing listens on: a request would be a different error
    settings = BlobSettings(endpoint_url=f"http://127.0.0.1:{free_port()}",
                            access_key_id="a", secret_access_key="b")
    store = blob.BlobStore(settings, policy=StoragePolicy(
        roots=(root,), buckets=frozenset({"photos"})))
    rule = ("bucket 'other' is not allowed (allowed: photos; set ASYA_BLOB_BUCKETS or "
            "spec.storage.buckets)")
    refused(lambda: store.read_bytes("s3://other/key.png"), "s3://other/key.png", rule)
    refused(lambda: store.write_bytes("s3://other/key.png", b"x"), "s3://other/key.png", rule)
    refused(lambda: store.copy("s3://photos/a.png", "s3://other/a.png"), "s3://other/a.png",
            rule)
    refused(lambda: store.copy(str(root / "cat.png"), "s3://other/a.png"), "s3://other/a.png",
            rule)
    # And "*" allows every bucket only because it was written: here it was not
    assert not StoragePolicy().buckets
    store.close()


# -- writes -------------------------------------------------------------------------------


def test_writes_outside_the_roots_are_refused_and_write_nothing(
        root: Path, out: Path, policy: StoragePolicy) -> None:
    for url in [str(out / "planted.png"), f"file://{root}/../outside/planted.png",
                "/etc/cron.d/planted"]:
        refused(lambda u=url: blob.write_bytes(u, b"x", policy=policy), url, OUTSIDE)
    refused(lambda: blob.copy(str(root / "cat.png"), str(out / "c.png"), policy=policy),
            str(out / "c.png"), OUTSIDE)
    assert sorted(p.name for p in out.iterdir()) == ["secret.txt"]


def test_an_output_folder_outside_the_roots_refuses_to_start(
        root: Path, out: Path, policy: StoragePolicy) -> None:
    import sys

    sys.path.insert(0, str(REPO / "mesh" / "food-image"))
    try:
        from food_glue import Uploader
    finally:
        sys.path.remove(str(REPO / "mesh" / "food-image"))
    with pytest.raises(ConfigError, match=re.escape(
            f"upload: output {out.as_uri()} is not allowed: {OUTSIDE}: {root}")):
        Uploader(output=str(out), storage=policy)
    with pytest.raises(ConfigError, match=re.escape(
            f"enhance: output_location {out.as_uri()} is not allowed: {OUTSIDE}: {root}")):
        Enhancer(output_location=out.as_uri(), storage=policy)
    with pytest.raises(ConfigError, match="bucket 'other' is not allowed"):
        Enhancer(output_location="s3://other/enhanced", storage=policy)
    # And a store given config instead of a policy says where a policy comes from
    with pytest.raises(ConfigError, match=re.escape("spec.storage, not spec.config")):
        Enhancer(storage={"roots": ["/"]})  # type: ignore[arg-type]


# -- not an image --------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"root:x:0:0:root:/root:/bin/bash\n", b"",
                                     b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00"])
def test_a_file_that_is_not_an_image_is_a_clear_blob_error(
        content: bytes, root: Path, policy: StoragePolicy) -> None:
    (root / "notes.png").write_bytes(content)
    url = (root / "notes.png").as_uri()
    with pytest.raises(BlobError, match="^" + re.escape(f"{url}: not a readable image: ")) \
            as info:
        Enhancer(storage=policy).enhance({"image_url": url})
    assert not isinstance(info.value, BlobRefused)
    assert not (root / "notes.enhanced.png").exists()


# -- through a mesh -------------------------------------------------------------------------


def food_mesh(root: Path) -> LoadedMesh:
    """The food-image mesh, ROOT among its roots, and a retry policy on enhance and
    upload that would retry any error five times, 10 ms apart."""
    loaded = load_mesh(REPO / "mesh" / "food-image")
    loaded.mesh.spec.storage.roots.append(str(root))
    loaded.actors["judge"].spec.config["backend"] = "heuristic"
    loaded.actors["upload"].spec.config["output"] = str(root / "accepted")
    retry = RetryPolicy(maxAttempts=5, initialInterval=0.01, maxInterval=0.01)
    for name in ("enhance", "upload"):
        loaded.actors[name].spec.resiliency.policies["default"] = retry
    return loaded


@pytest.mark.parametrize(("payload", "route", "key"), [
    ({"image_url": "/etc/passwd"}, None, "image_url"),
    ({"image_url": "file:///dev/zero"}, None, "image_url"),
    ({"image_url": "IN_ROOT", "enhanced_url": "/etc/passwd"}, ["upload"], "enhanced_url"),
])
def test_a_refused_url_ends_once_in_error_end_and_is_never_retried(
        payload: dict[str, str], route: list[str] | None, key: str, root: Path,
        tmp_path: Path) -> None:
    payload = {k: str(root / "cat.png") if v == "IN_ROOT" else v for k, v in payload.items()}
    with LocalMesh(food_mesh(root), state_dir=tmp_path / "state") as mesh:
        # When a payload names a URL outside the roots
        env_id = mesh.send(payload, route=route)
        mesh.join(timeout=60)
        # Then exactly one record: failed, at its first attempt, for the refusal
        failed = mesh.results(status="failed")
        assert [r.id for r in failed] == [env_id] and mesh.results() == failed
        record = failed[0]
        assert record.duplicates == 0 and record.envelope["meta"]["attempt"] == 1
        assert record.error is not None
        assert record.error["reason"] == "blob-refused"
        assert record.error["type"] == "asya_agents.errors.BlobRefused"
        assert record.error["message"].startswith(f"{payload[key]}: refused: {OUTSIDE}")
        assert not (root / "accepted").exists()


def test_a_refused_photo_in_a_batch_fails_alone(root: Path, tmp_path: Path) -> None:
    # Given the batch enhancer (maxSize 4, maxWait 1s) and three photos plus one refused
    loaded = load_mesh(REPO / "tests" / "enhance" / "mesh")
    loaded.mesh.spec.storage.roots.append(str(root))
    for name in ("a", "b", "c"):
        Image.new("RGB", (32, 24), (90, 60, 40)).save(root / f"{name}.png")
    urls = [str(root / "a.png"), "/etc/passwd", str(root / "b.png"), str(root / "c.png")]
    with LocalMesh(loaded, state_dir=tmp_path / "state") as mesh:
        ids = [mesh.send({"image_url": url}) for url in urls]
        mesh.join(timeout=90)
        records = [mesh.result(i) for i in ids]
    # Then the refused one fails for its refusal, and its batch-mates are enhanced
    assert [r.status for r in records] == ["succeeded", "failed", "succeeded", "succeeded"]
    assert records[1].error is not None and records[1].error["reason"] == "blob-refused"
    assert all((root / f"{n}.enhanced.png").is_file() for n in "abc")


# -- through the review console -------------------------------------------------------------


@pytest.mark.timeout(20)
def test_the_console_reads_only_within_the_mesh_policy(root: Path, tmp_path: Path) -> None:
    from ui.images import MAX_IMAGE_BYTES, read_image

    # Given the console's view of a mesh, ROOT among its mesh.yaml roots
    loaded = load_mesh(REPO / "tests" / "ui" / "review_mesh")
    loaded.mesh.spec.storage.roots.append(str(root))
    ctx = MeshContext.open(loaded, state_dir=tmp_path / "state",
                           settings=Settings(s3=BlobSettings(roots=(), buckets=())))
    storage = ctx.storage()
    # (the mesh's data/ folder and its state's output/, then mesh.yaml's roots)
    assert storage.roots == ((loaded.path / "data").resolve(),
                             (tmp_path / "state" / "output").resolve(), root)
    # Then a photo in ROOT shows, and what a payload points at elsewhere is refused
    assert read_image((root / "cat.png").as_uri(), storage=storage)[:4] == b"\x89PNG"
    for url in ["/etc/passwd", "file:///dev/zero", f"{root}/../outside/secret.txt"]:
        refused(lambda u=url: read_image(u, storage=storage), url, OUTSIDE)
    # And nothing past 25 MiB is read, however large the file
    with open(root / "huge.png", "wb") as fh:
        fh.truncate(10 * MAX_IMAGE_BYTES)  # sparse: no disk used
    refused(lambda: read_image(str(root / "huge.png"), storage=storage),
            str(root / "huge.png"), f"over the limit of {MAX_IMAGE_BYTES} bytes")
    ctx.close()


# -- the mesh's own state folder ------------------------------------------------------------

STATE_RULE = "inside the mesh's state folder"


def test_the_state_folders_databases_are_refused_even_inside_a_root(tmp_path: Path) -> None:
    from ui.images import read_image

    # Given a mesh whose state folder lies inside one of its roots, as the demo's does
    loaded = load_mesh(REPO / "tests" / "ui" / "review_mesh")
    loaded.mesh.spec.storage.roots.append(str(tmp_path))
    state = tmp_path / "state"
    ctx = MeshContext.open(loaded, state_dir=state,
                           settings=Settings(s3=BlobSettings(roots=(), buckets=())))
    ctx.results().close()  # the databases exist, as on a running mesh
    ctx.reviews().close()
    storage = ctx.storage()
    (state / "output").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(state / "output" / "kept.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "beside.png")
    # Then the console shows the photos in the root and in the state's output/ folder
    assert read_image(str(tmp_path / "beside.png"), storage=storage)[:4] == b"\x89PNG"
    assert read_image(str(state / "output" / "kept.png"), storage=storage)[:4] == b"\x89PNG"
    # and refuses the state's databases, however they are named
    named = [str(state / "results.db"), (state / "review.db").as_uri(),
             f"{tmp_path}/photos/../state/queues.db", str(state / "console-secret"),
             str(state / "output" / ".." / "results.db"), str(state)]
    assert (state / "results.db").is_file() and (state / "review.db").is_file()
    for url in named:
        refused(lambda u=url: read_image(u, storage=storage), url, STATE_RULE)
    # and no write lands there either
    refused(lambda: blob.write_bytes(str(state / "queues.db"), b"x", policy=storage),
            str(state / "queues.db"), STATE_RULE)
    ctx.close()


def test_a_root_equal_to_the_state_folder_opens_nothing_in_it(tmp_path: Path) -> None:
    from asya_agents.storage import mesh_policy

    state = tmp_path / "state"
    policy = mesh_policy(BlobSettings(roots=(state,)), folder=tmp_path / "mesh",
                         state_dir=state, specs=[])
    (state / "output").mkdir(parents=True)
    (state / "queues.db").write_bytes(b"SQLite format 3\x00")
    refused(read(policy, str(state / "queues.db")), str(state / "queues.db"), STATE_RULE)
    (state / "output" / "a.txt").write_text("fine")
    assert blob.read_bytes(str(state / "output" / "a.txt"), policy=policy) == b"fine"


@pytest.mark.parametrize(("key", "route"), [("image_url", None),
                                            ("enhanced_url", ["upload"])])
def test_a_payload_naming_the_state_databases_ends_in_error_end(
        key: str, route: list[str] | None, tmp_path: Path) -> None:
    # Given the food-image mesh whose root holds its state folder
    state = tmp_path / "state"
    with LocalMesh(food_mesh(tmp_path), state_dir=state) as mesh:
        target = str(state / "queues.db")
        payload = {"image_url": target} if key == "image_url" else {
            "image_url": target, "enhanced_url": str(state / "results.db")}
        # When a payload names its queue or result database
        env_id = mesh.send(payload, route=route)
        mesh.join(timeout=60)
        [record] = mesh.results()
    # Then it ended once, refused for the state folder, at its first attempt
    assert record.id == env_id and record.status == "failed"
    assert record.error is not None and record.error["reason"] == "blob-refused"
    assert STATE_RULE in record.error["message"]
    assert record.envelope["meta"]["attempt"] == 1
    assert not (tmp_path / "accepted").exists()

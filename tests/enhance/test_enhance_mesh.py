"""The enhance actor behind its queue: LocalMesh runs the real runtime on the embedded
transport, which fills batches for ``enhance_batch`` from ``spec.batch``."""

from __future__ import annotations

from pathlib import Path

import pytest

from asya_agents.manifest import LoadedMesh, load_mesh
from asya_agents.testing import LocalMesh

MESH = Path(__file__).parent / "mesh"


def run_mesh(mesh: Path | LoadedMesh, tmp_path: Path,
             urls: list[str]) -> list[dict[str, object]]:
    loaded = mesh if isinstance(mesh, LoadedMesh) else load_mesh(mesh)
    loaded.mesh.spec.storage.roots.append(str(tmp_path))  # where the photos are
    with LocalMesh(loaded, state_dir=tmp_path / "state") as local:
        ids = [local.send({"image_url": url, "n": i}) for i, url in enumerate(urls)]
        local.join(timeout=90)
        records = [local.result(i) for i in ids]
    assert [r.status for r in records] == ["succeeded"] * len(urls)
    return [r.payload for r in records]


def test_pillow_batches_through_the_queue(tmp_path: Path, photos: list[str]) -> None:
    # Given six photos sent at once to a batch actor with maxSize 4
    urls = photos * 2
    # When the mesh runs them
    payloads = run_mesh(MESH, tmp_path, urls)
    # Then each payload came back in order with its enhanced image, and batches formed
    assert [p["n"] for p in payloads] == list(range(6))
    for payload in payloads:
        assert Path(str(payload["enhanced_url"]).removeprefix("file://")).is_file()
    sizes = [p["enhancement"]["batch_size"] for p in payloads]  # type: ignore[index]
    assert max(sizes) > 1 and max(sizes) <= 4


@pytest.mark.slow
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_tiny_sdxl_batches_through_the_queue(tmp_path: Path, photos: list[str],
                                             tiny_sdxl_path: Path) -> None:
    # Given the same mesh with the sdxl backend on the tiny random pipeline
    loaded = load_mesh(MESH)
    loaded.actors["enhance"].spec.config.update(
        backend="sdxl", model=str(tiny_sdxl_path), device="cpu", size=64, steps=2,
        strength=0.5, max_batch=4)
    # When three photos go through the queue
    payloads = run_mesh(loaded, tmp_path, photos)
    # Then all three are enhanced by SDXL, in batches
    assert {p["enhancement"]["backend"] for p in payloads} == {"sdxl"}  # type: ignore[index]
    assert max(p["enhancement"]["batch_size"] for p in payloads) > 1  # type: ignore[index]
    assert all(Path(str(p["enhanced_url"])[7:]).is_file() for p in payloads)

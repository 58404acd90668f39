"""The enhance actor's diffusion backend on a tiny random-weight SDXL img2img pipeline:
the real ``from_pretrained`` path, the batch path (one pipeline call per batch), and a
model that cannot be loaded. Random weights make noise, not food: these tests check the
wiring and the contract, the benchmark checks the speed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from actors.enhance.handler import Enhancer
from asya_agents.errors import ConfigError, HandlerError
from asya_agents.handlers import load_handler
from asya_agents.storage import StoragePolicy

pytest.importorskip("diffusers")
# diffusers' Euler scheduler calls np.array on a tensor the numpy-2 way it deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")

TINY = {"backend": "sdxl", "device": "cpu", "size": 64, "steps": 2, "strength": 0.5,
        "max_batch": 4}


class CountingPipe:
    """Forwards to the real pipeline and counts its calls (a spy, not a stand-in)."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.calls = pipe, []  # type: list[int]

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(int(kwargs["image"].shape[0]))
        return self.pipe(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)


@pytest.fixture(scope="module")
def enhancer(tiny_sdxl_path: Path, storage: StoragePolicy) -> Enhancer:
    return Enhancer(storage=storage, model=str(tiny_sdxl_path), **TINY)


def test_from_pretrained_path_enhances_and_writes_beside(enhancer: Enhancer,
                                                        photos: list[str]) -> None:
    out = enhancer.enhance({"image_url": photos[0]})
    path = Path(out["enhanced_url"].removeprefix("file://"))
    assert path.name == "coffee.enhanced.png" and path.parent.name == "in"
    with Image.open(path) as after, Image.open(photos[0].removeprefix("file://")) as before:
        assert after.size == before.size  # back to the photo's own size
    e = out["enhancement"]
    assert e["backend"] == "sdxl" and e["dtype"] == "float32" and e["device"] == "cpu"
    assert e["applied"] == ["sdxl img2img strength 0.5, 2 steps, cfg 5"]
    assert e["settings"]["prompt"].startswith("professional food photography")


def test_a_batch_is_one_pipeline_call_and_equals_single_calls(enhancer: Enhancer,
                                                              photos: list[str]) -> None:
    spy = CountingPipe(enhancer.backend.pipe)
    enhancer.backend.pipe = spy
    try:
        batch = enhancer.enhance_batch([{"image_url": u} for u in photos])
        batch_px = [np.asarray(Image.open(r["enhanced_url"][7:]), dtype=np.int16)
                    for r in batch]
        assert spy.calls == [3]
        singles = [enhancer.enhance({"image_url": u}) for u in photos]
        assert spy.calls == [3, 1, 1, 1]
    finally:
        enhancer.backend.pipe = spy.pipe
    for px, single in zip(batch_px, singles, strict=True):
        one = np.asarray(Image.open(single["enhanced_url"][7:]), dtype=np.int16)
        assert np.abs(px - one).max() <= 2  # same seed per image: equal up to rounding


def test_different_settings_in_one_batch_split_into_groups(enhancer: Enhancer,
                                                           photos: list[str]) -> None:
    spy = CountingPipe(enhancer.backend.pipe)
    enhancer.backend.pipe = spy
    try:
        out = enhancer.enhance_batch([
            {"image_url": photos[0]},
            {"image_url": photos[1], "enhance_settings": {"strength": 0.9}},
            {"image_url": photos[2], "enhance_settings": {"exposure": 0.6}},  # not SDXL's
        ])
    finally:
        enhancer.backend.pipe = spy.pipe
    assert sorted(spy.calls) == [1, 2]
    assert [r["enhancement"]["settings"]["strength"] for r in out] == [0.5, 0.9, 0.5]


def test_padded_batches_keep_one_shape(tiny_sdxl_path: Path, photos: list[str],
                                       storage: StoragePolicy) -> None:
    padded = Enhancer(storage=storage, model=str(tiny_sdxl_path), pad_batches=True,
                      fuse_qkv=False,
                      channels_last=False, **TINY)
    spy = CountingPipe(padded.backend.pipe)
    padded.backend.pipe = spy
    out = padded.enhance_batch([{"image_url": u} for u in photos[:2]])
    assert spy.calls == [4] and len(out) == 2


def test_a_model_that_cannot_be_loaded_is_a_startup_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError) as info:
        Enhancer(model=missing, local_files_only=True, **TINY)
    message = str(info.value)
    assert f"cannot load the SDXL model {missing!r}" in message
    assert "HF_HUB_OFFLINE" in message and "local folder" in message
    # Through the handler loader, as a replica starts it, the path and the reason show
    with pytest.raises(HandlerError, match=re.escape("Enhancer(**spec.config) raised")):
        load_handler("actors.enhance.handler.Enhancer.enhance_batch",
                     config={"model": "nobody/missing-sdxl", "local_files_only": True, **TINY})


def test_classical_finish_follows_diffusion(tiny_sdxl_path: Path, photos: list[str],
                                            storage: StoragePolicy) -> None:
    finishing = Enhancer(storage=storage, model=str(tiny_sdxl_path), classical_finish=True,
                         **TINY)
    out = finishing.enhance({"image_url": photos[0],
                             "enhance_settings": {"saturation": 1.5}})
    steps = out["enhancement"]["applied"]
    # the requested factor is adapted to the photo's chroma (pillow_backend._saturation),
    # so the step names a boost, not exactly 1.50; it comes after the diffusion pass
    assert steps[0].startswith("sdxl img2img")
    boosts = [s for s in steps[1:] if s.startswith("saturation x")]
    assert boosts and float(boosts[0].split("x")[1].split()[0]) > 1.0

"""Fixtures for the enhance actor and the blob module: a real moto S3 server on a free
port of 127.0.0.1, and a tiny random-weight SDXL img2img pipeline saved to disk once per
session (see ``tiny_sdxl.py``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from asya_agents.settings import BlobSettings
from asya_agents.storage import StoragePolicy


@pytest.fixture
def s3_settings(moto_url: str) -> BlobSettings:
    return BlobSettings(endpoint_url=moto_url, region="us-east-1",
                        access_key_id="testing", secret_access_key="testing")


@pytest.fixture(scope="session")
def storage(tmp_path_factory: pytest.TempPathFactory) -> StoragePolicy:
    """The storage policy an enhancer gets in these tests: every folder pytest makes
    (each test's photos live in its own), and any bucket of the moto server."""
    return StoragePolicy(roots=(tmp_path_factory.getbasetemp(),), buckets=frozenset({"*"}))


@pytest.fixture
def bucket(s3_settings: BlobSettings) -> str:
    """A fresh bucket on the moto server."""
    from botocore.session import get_session

    name = f"asya-test-{time.monotonic_ns()}"
    client = get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=s3_settings.endpoint_url,
        aws_access_key_id="testing", aws_secret_access_key="testing")
    try:
        client.create_bucket(Bucket=name)
    finally:
        client.close()
    return name


@pytest.fixture(scope="session")
def tiny_sdxl_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight SDXL img2img pipeline, saved once per session in diffusers
    layout, so tests load it through the real ``from_pretrained`` path."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    from actors.enhance.random_sdxl import save_random_sdxl

    # One intra-op thread: the tiny model gains nothing from more, and on a busy 2-core
    # machine more threads spin against the other tests' processes.
    torch.set_num_threads(1)

    return save_random_sdxl(tmp_path_factory.mktemp("tiny-sdxl"), "tiny")


def degraded(image: Any) -> Any:
    """A dull version of a photo: darker, greyer, softer."""
    from PIL import ImageEnhance, ImageFilter

    image = ImageEnhance.Brightness(image).enhance(0.55)
    image = ImageEnhance.Color(image).enhance(0.45)
    return image.filter(ImageFilter.GaussianBlur(1.5))


@pytest.fixture
def photos(tmp_path: Path) -> list[str]:
    """Three degraded photos from scikit-image's bundled data, as file:// URLs."""
    from PIL import Image
    from skimage import data

    urls = []
    for name in ("coffee", "chelsea", "rocket"):
        path = tmp_path / "in" / f"{name}.jpg"
        path.parent.mkdir(exist_ok=True)
        small = Image.fromarray(getattr(data, name)()).convert("RGB").reduce(4)
        degraded(small).save(path, quality=92)
        urls.append(path.as_uri())
    return urls

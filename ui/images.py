"""Reading the images a payload points at, for the reviewer's side-by-side view.

Payloads carry URLs (``file://``, ``s3://`` or a plain path), never pixels; the console
reads them through :mod:`asya_agents.blob`, the same module the actors write with, so a
URL means the same thing to the enhancer that wrote it and the reviewer who looks at it.
``http(s)://`` URLs are left to the browser.

A payload is untrusted: whoever sent it, or edited it in review, chose its URLs. So the
console reads within the mesh's storage policy (``MeshContext.storage()``: the mesh's
``data/`` and state folders, ``spec.storage`` of ``mesh.yaml`` and ``ASYA_BLOB_*``), and
reads no more than :data:`MAX_IMAGE_BYTES` of any file: ``/etc/passwd`` is refused, and
``/dev/zero`` is neither opened nor read.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from asya_agents.settings import BlobSettings
from asya_agents.storage import StoragePolicy

__all__ = ["MAX_IMAGE_BYTES", "ImageRef", "image_refs", "read_image"]

#: Larger files are not inlined into the page (they would stall the browser).
MAX_IMAGE_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class ImageRef:
    label: str
    url: str | None


def image_refs(payload: Any) -> list[ImageRef]:
    """The original and the enhanced image of a payload (``None`` where absent)."""
    data = payload if isinstance(payload, dict) else {}
    original = data.get("image_url") or data.get("original_url")
    enhanced = data.get("enhanced_url")
    return [ImageRef("original", _str(original)), ImageRef("enhanced", _str(enhanced))]


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_image(url: str, *, storage: StoragePolicy | None = None) -> bytes | str:
    """The image's bytes, or the URL itself for the browser to fetch (http/https).
    Raises :class:`~asya_agents.errors.BlobError` with the URL and the reason when it
    cannot be read or ``storage`` (unset: ``ASYA_BLOB_*`` alone) refuses it."""
    if url.startswith(("http://", "https://")):
        return url
    from asya_agents import blob

    policy = storage if storage is not None else StoragePolicy.from_settings(BlobSettings())
    capped = dataclasses.replace(policy, max_bytes=min(policy.max_bytes, MAX_IMAGE_BYTES))
    return blob.read_bytes(url, policy=capped)

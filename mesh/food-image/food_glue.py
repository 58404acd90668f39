"""Glue of the food-image mesh: store an accepted photo in the output location.

The output is a ``file://`` folder or an ``s3://`` bucket/prefix, through
``asya_agents.blob`` like every other image access; a plain relative path is taken
relative to this mesh folder. The file is named after the envelope's photo, so a
redelivered envelope overwrites its own copy instead of adding one.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from asya_agents import blob

HERE = Path(__file__).resolve().parent


class Uploader:
    def __init__(self, output: str = ".asya/output") -> None:
        if "://" not in output:
            path = Path(output)
            output = (path if path.is_absolute() else HERE / path).as_uri()
        self.output = output
        self._store = blob.BlobStore()

    def upload(self, payload: dict[str, Any]) -> dict[str, Any]:
        source = payload.get("enhanced_url") or payload["image_url"]
        name = PurePosixPath(urlsplit(source).path).name
        target = blob.join_url(self.output, name)
        self._store.copy(source, target)
        return {**payload, "uploaded_url": target}

"""Glue of the food-image mesh: store an accepted photo in the output location.

The output is a ``file://`` folder or an ``s3://`` bucket/prefix, through
``asya_agents.blob`` like every other image access; a plain relative path is taken
relative to this mesh folder. The file is named after the envelope's photo, so a
redelivered envelope overwrites its own copy instead of adding one.

Reads and writes stay within the actor's storage policy (``storage``, given by the
runtime): the output itself must be inside it, or the actor refuses to start.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from asya_agents import blob
from asya_agents.errors import BlobRefused, ConfigError
from asya_agents.storage import StoragePolicy

HERE = Path(__file__).resolve().parent


class Uploader:
    def __init__(self, output: str = ".asya/output",
                 storage: StoragePolicy | None = None) -> None:
        if "://" not in output:
            path = Path(output)
            output = (path if path.is_absolute() else HERE / path).as_uri()
        self.output = output
        self._store = blob.BlobStore(policy=storage)
        try:
            self._store.check_folder(output)
        except BlobRefused as exc:
            raise ConfigError(f"upload: output {output} is not allowed: {exc.rule}") from exc

    def upload(self, payload: dict[str, Any]) -> dict[str, Any]:
        source = payload.get("enhanced_url") or payload["image_url"]
        name = PurePosixPath(urlsplit(source).path).name
        target = blob.join_url(self.output, name)
        self._store.copy(source, target)
        return {**payload, "uploaded_url": target}

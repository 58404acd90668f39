"""The ``enhance`` actor: a photo given by URL, enhanced, written beside it.

A class handler, built once per replica with ``spec.config`` as keyword arguments, with
two entry points over the same code:

- ``actors.enhance.handler.Enhancer.enhance``: one payload in, one out;
- ``actors.enhance.handler.Enhancer.enhance_batch``: the batch handler for
  ``spec.batch`` (the ``gpu`` flavor), a list of payloads in, one pipeline call per
  group of equal settings (seeds may differ within one: each image has its own
  generator), a list of the same length out.

Each payload needs ``image_url`` (``file://``, a path, or ``s3://``). The enhanced image
is written at ``sibling_url(image_url, output_suffix)`` (or under ``output_location``)
and the payload comes back with ``enhanced_url`` and ``enhancement``: the backend, the
settings used, the steps applied, the attempt number and the time taken. A judge may
send an image back with ``enhance_settings`` (overrides) and a reviewer with
``review_notes``; one of N candidates of a photo (best-of-N) says how it differs in
``candidate``; see ``settings.py``.

Every read and write goes through the actor's
:class:`~asya_agents.storage.StoragePolicy` (``storage``, given by the runtime: the
mesh's folders and buckets and the actor's ``spec.storage``), so a payload cannot make
it read or write outside them; a URL it refuses fails with reason ``blob-refused``.

Two backends: ``pillow`` (classical, CPU, the default) and ``sdxl`` (diffusion, GPU).
Images are read, decoded, encoded and written on a small thread pool, outside the
backend's device lock.
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import PurePosixPath
from typing import Any

from PIL import Image, ImageOps

from actors.enhance import pillow_backend
from actors.enhance.settings import Candidate, EnhanceSettings, for_payload
from asya_agents.blob import BlobStore, join_url, parse_url, sibling_url
from asya_agents.errors import BlobError, BlobRefused, ConfigError
from asya_agents.storage import StoragePolicy

__all__ = ["SDXL_BASE", "Enhancer"]

SDXL_BASE = "stabilityai/stable-diffusion-xl-base-1.0"
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


class Enhancer:
    """Enhances photos by URL with the ``pillow`` or the ``sdxl`` backend."""

    def __init__(
        self,
        *,
        backend: str = "pillow",
        model: str = SDXL_BASE,
        device: str | None = None,
        dtype: str = "auto",
        variant: str | None = None,
        local_files_only: bool = False,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        strength: float | None = None,
        steps: int = 30,
        guidance: float = 5.0,
        seed: int | None = 0,
        exposure: float | None = 0.46,
        white_balance: float = 0.5,
        contrast: float = 1.12,
        saturation: float = 1.25,
        sharpen: float = 80.0,
        size: int = 1024,
        max_batch: int = 8,
        compile: bool | None = None,
        compile_mode: str = "max-autotune-no-cudagraphs",
        compile_vae: bool = True,
        channels_last: bool = True,
        fuse_qkv: bool = True,
        pad_batches: bool | None = None,
        warmup: bool | None = None,
        output_suffix: str = ".enhanced.png",
        output_location: str | None = None,
        classical_finish: bool = False,
        io_threads: int = 4,
        storage: StoragePolicy | None = None,
    ) -> None:
        if backend not in ("pillow", "sdxl"):
            raise ConfigError(f"enhance: backend must be 'pillow' or 'sdxl', got {backend!r}")
        if PurePosixPath(output_suffix).suffix.lower() not in FORMATS:
            raise ConfigError(f"enhance: output_suffix {output_suffix!r} must be a tag and "
                              f"an extension, e.g. '.enhanced.png'; extensions: "
                              f"{', '.join(FORMATS)}")
        defaults = EnhanceSettings()
        self.defaults = EnhanceSettings(
            prompt=defaults.prompt if prompt is None else prompt,
            negative_prompt=(defaults.negative_prompt if negative_prompt is None
                             else negative_prompt),
            strength=strength if strength is not None else (0.3 if backend == "sdxl" else 1.0),
            steps=steps, guidance=guidance, seed=seed, exposure=exposure,
            white_balance=white_balance, contrast=contrast, saturation=saturation,
            sharpen=sharpen)
        self.output_suffix = output_suffix
        self.output_location = output_location
        self.classical_finish = classical_finish and backend == "sdxl"
        self.blobs = BlobStore(policy=storage)
        if output_location is not None:
            try:
                self.blobs.check_folder(output_location)
            except BlobRefused as exc:
                raise ConfigError(f"enhance: output_location {output_location} is not "
                                  f"allowed: {exc.rule}") from exc
        self._pool = ThreadPoolExecutor(max(io_threads, 1), thread_name_prefix="enhance-io")
        self.backend: Any = None
        if backend == "sdxl":
            from actors.enhance.sdxl_backend import SDXLBackend, SDXLOptions

            self.backend = SDXLBackend(SDXLOptions(
                model=model, device=device, dtype=dtype, variant=variant,
                local_files_only=local_files_only, size=size, max_batch=max_batch,
                compile=compile, compile_mode=compile_mode, compile_vae=compile_vae,
                channels_last=channels_last, fuse_qkv=fuse_qkv, pad_batches=pad_batches,
                warmup=warmup))

    # -- handlers ------------------------------------------------------------------------

    def enhance(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Payload mode: enhance ``payload["image_url"]``."""
        return self.enhance_batch([payload])[0]

    def enhance_batch(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Batch mode (``spec.batch``): one result per payload, in order."""
        started = time.perf_counter()
        plans = [self._plan(p) for p in payloads]
        images = list(self._pool.map(self._load, [p["image_url"] for p in payloads]))
        outputs = self._run(images, plans)
        list(self._pool.map(self._save, outputs, [plan["url"] for plan in plans]))
        seconds = round(time.perf_counter() - started, 4)
        return [self._result(p, plan, steps, len(payloads), seconds)
                for p, plan, (_, steps) in zip(payloads, plans, outputs, strict=True)]

    def describe(self) -> dict[str, Any]:
        return self.backend.describe() if self.backend else {"backend": "pillow"}

    # -- steps ---------------------------------------------------------------------------

    def _plan(self, payload: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(payload, dict) or not payload.get("image_url"):
            got = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
            raise ValueError("enhance: the payload needs an 'image_url' (file://, s3:// or a "
                             f"path); got {got}")
        url = str(payload["image_url"])
        settings, notes = for_payload(self.defaults, payload)
        candidate = Candidate.of_payload(payload)
        tag = "" if candidate is None else f".c{candidate.index}"
        return {"settings": settings, "notes": notes, "url": self._output_url(url, tag)}

    def _output_url(self, image_url: str, tag: str = "") -> str:
        beside = sibling_url(image_url, tag + self.output_suffix)
        if self.output_location is None:
            return beside
        return join_url(self.output_location, PurePosixPath(parse_url(beside).path).name)

    def _load(self, url: str) -> Image.Image:
        data = self.blobs.read_bytes(url)
        try:
            with Image.open(io.BytesIO(data)) as raw:
                return ImageOps.exif_transpose(raw).convert("RGB")
        except Exception as exc:  # Pillow's decoders raise more than OSError on bad bytes
            raise BlobError(f"not a readable image: {type(exc).__name__}: {exc}",
                            url=url) from exc

    def _run(self, images: list[Image.Image],
             plans: list[dict[str, Any]]) -> list[tuple[Image.Image, list[str]]]:
        if self.backend is None:
            return list(self._pool.map(pillow_backend.enhance_image, images,
                                       [p["settings"] for p in plans]))
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        for index, plan in enumerate(plans):
            groups[plan["settings"].diffusion_key()].append(index)
        out: list[Any] = [None] * len(images)
        for indices in groups.values():
            s = plans[indices[0]]["settings"]
            done = self.backend.run([images[i] for i in indices], s,
                                    seeds=[plans[i]["settings"].seed for i in indices])
            steps = [f"sdxl img2img strength {s.strength:g}, {s.steps} steps, cfg {s.guidance:g}"]
            for i, image in zip(indices, done, strict=True):
                out[i] = (image, steps)
        if self.classical_finish:
            out = list(self._pool.map(self._finish, out, plans))
        return out

    def _finish(self, done: tuple[Image.Image, list[str]],
                plan: dict[str, Any]) -> tuple[Image.Image, list[str]]:
        """The classical steps after diffusion, at their configured amounts (``strength``
        is the diffusion's here), so a judge's exposure or saturation changes count."""
        classical = dataclasses.replace(plan["settings"], strength=1.0)
        image, steps = pillow_backend.enhance_image(done[0], classical)
        return image, done[1] + steps

    def _save(self, output: tuple[Image.Image, list[str]], url: str) -> None:
        image = output[0]
        fmt = FORMATS[PurePosixPath(parse_url(url).path).suffix.lower()]
        buf = io.BytesIO()
        options: dict[str, Any] = {"compress_level": 1} if fmt == "PNG" else {"quality": 95}
        image.save(buf, format=fmt, **options)
        self.blobs.write_bytes(url, buf.getvalue())

    def _result(self, payload: dict[str, Any], plan: dict[str, Any], steps: list[str],
                batch: int, seconds: float) -> dict[str, Any]:
        previous = payload.get("enhancement") or {}
        enhancement = {
            **self.describe(),
            "settings": plan["settings"].as_dict(),
            "applied": steps,
            "review_notes_applied": plan["notes"],
            "attempt": int(previous.get("attempt", 0)) + 1 if isinstance(previous, dict) else 1,
            "batch_size": batch,
            "seconds": seconds,
        }
        return {**payload, "enhanced_url": plan["url"], "enhancement": enhancement}

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self.blobs.close()


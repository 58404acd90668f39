"""The diffusion backend: SDXL img2img at low strength, batched, for a GPU.

Loaded once per replica with ``from_pretrained`` from a Hugging Face model id or a local
folder. What makes a batch fast is decided here, at load time, and each piece can be
switched off in ``spec.config``:

- one pipeline call per batch, with the prompt embeddings computed once per prompt and
  reused (the text encoders never run in the steady state);
- the VAE encode and decode done here, batched, in the model dtype (bf16 needs no fp32
  upcast), with the pixels converted to ``uint8`` on the device;
- channels-last memory, fused QKV projections, PyTorch SDPA attention, cuDNN autotuning;
- ``torch.compile`` of the UNet and of the VAE encoder and decoder, with batches padded to
  ``max_batch`` so that the compiled graphs see one shape and never recompile. The
  default mode autotunes kernels but records no CUDA graphs: batches arrive on the
  handler's worker threads, and CUDA graph trees are kept per thread (at batch 8 and
  1024x1024 the GPU is busy enough that launch overhead is small anyway);
- a lock around the device work only, so with ``concurrency: 2`` one batch decodes and
  encodes images on the CPU while the other runs on the GPU.

torch and diffusers are imported here, lazily, with an install hint when missing.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from asya_agents.errors import ConfigError

__all__ = ["SDXLBackend", "SDXLOptions", "import_torch_diffusers", "load_pipeline"]

INSTALL_HINT = "the sdxl backend needs torch and diffusers: pip install 'asya-agents[enhance]'"
DTYPES = {"fp16": "float16", "float16": "float16", "bf16": "bfloat16",
          "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32"}


def import_torch_diffusers() -> tuple[Any, Any]:
    try:
        import diffusers
        import torch
    except ImportError as exc:
        raise ConfigError(f"{INSTALL_HINT} ({exc})") from exc
    return torch, diffusers


@dataclass(frozen=True)
class SDXLOptions:
    """Load-time options of the backend (documented in actors/enhance/README.md)."""

    model: str
    device: str | None = None
    dtype: str = "auto"
    variant: str | None = None
    local_files_only: bool = False
    size: int = 1024
    max_batch: int = 8
    compile: bool | None = None
    compile_mode: str = "max-autotune-no-cudagraphs"
    compile_vae: bool = True
    channels_last: bool = True
    fuse_qkv: bool = True
    pad_batches: bool | None = None
    warmup: bool | None = None


class SDXLBackend:
    """Runs batches of images through one loaded SDXL img2img pipeline."""

    name = "sdxl"

    def __init__(self, options: SDXLOptions) -> None:
        self.torch, _ = import_torch_diffusers()
        torch = self.torch
        self.o = options
        self.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = _dtype(torch, options.dtype, self.device)
        on_gpu = self.device.startswith("cuda")
        self.compiled = on_gpu if options.compile is None else options.compile
        self.pad = self.compiled if options.pad_batches is None else options.pad_batches
        self.pipe = load_pipeline(options, self.dtype)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self._lock = threading.Lock()
        self._embeds: dict[tuple[str, str], tuple[Any, ...]] = {}
        self._speedups(on_gpu)
        if self.compiled if options.warmup is None else options.warmup:
            self.warmup()

    # -- set-up --------------------------------------------------------------------------

    def _speedups(self, on_gpu: bool) -> None:
        torch, pipe = self.torch, self.pipe
        if on_gpu:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
        if self.o.fuse_qkv:
            pipe.fuse_qkv_projections()
        else:
            pipe.unet.set_default_attn_processor()  # PyTorch SDPA
        if self.o.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        pipe.vae.disable_tiling()
        if pipe.vae.dtype == torch.float16 and pipe.vae.config.force_upcast:
            pipe.vae.to(torch.float32)  # SDXL's VAE overflows in fp16; bf16 does not
        self._decode = pipe.vae.decode
        self._encode_mean = self._vae_mean
        if self.compiled:
            import torch._inductor.config as inductor

            inductor.conv_1x1_as_mm = True
            inductor.epilogue_fusion = False
            if "max-autotune" in self.o.compile_mode:  # more tuning, minutes more compiling
                inductor.coordinate_descent_tuning = True
                inductor.coordinate_descent_check_all_directions = True
            # fullgraph: a graph break in the UNet would cost speed silently; fail instead.
            pipe.unet = torch.compile(pipe.unet, mode=self.o.compile_mode, fullgraph=True)
            if self.o.compile_vae:
                self._decode = torch.compile(pipe.vae.decode, mode=self.o.compile_mode)
                self._encode_mean = torch.compile(self._vae_mean, mode=self.o.compile_mode)

    def warmup(self) -> None:
        """One full batch at startup, so compilation happens before the first message."""
        from actors.enhance.settings import EnhanceSettings

        gray = Image.new("RGB", (self.o.size, self.o.size), (128, 110, 90))
        self.run([gray] * self.o.max_batch, EnhanceSettings(strength=0.3, steps=10))

    def describe(self) -> dict[str, Any]:
        return {"backend": "sdxl", "model": self.o.model, "device": self.device,
                "dtype": str(self.dtype).removeprefix("torch."), "compiled": self.compiled,
                "size": self.o.size}

    # -- running -------------------------------------------------------------------------

    def run(self, images: list[Image.Image], s: Any,
            seeds: list[int | None] | None = None) -> list[Image.Image]:
        """Enhance ``images`` with one settings object ``s``; any length (chunked).
        ``seeds``: one per image (default ``s.seed`` for all; ``None``: a random one)."""
        seeds = list(seeds) if seeds is not None else [s.seed] * len(images)
        if len(seeds) != len(images):
            raise ValueError(f"sdxl: {len(seeds)} seeds for {len(images)} images")
        out: list[Image.Image] = []
        for start in range(0, len(images), self.o.max_batch):
            chunk = images[start:start + self.o.max_batch]
            square = [_resized(im.convert("RGB"), (self.o.size, self.o.size)) for im in chunk]
            pixels = self._device_run(square, s, seeds[start:start + self.o.max_batch])
            out += [_resized(Image.fromarray(px), im.size)
                    for px, im in zip(pixels, chunk, strict=False)]
        return out

    def _device_run(self, images: list[Image.Image], s: Any,
                    seeds: list[int | None]) -> np.ndarray:
        torch, pipe = self.torch, self.pipe
        n = len(images)
        if self.pad and n < self.o.max_batch:
            images = images + [images[-1]] * (self.o.max_batch - n)
            seeds = seeds + [seeds[-1]] * (self.o.max_batch - n)
        drawn = int(np.random.default_rng().integers(1 << 31))  # for seeds left to chance
        batch = np.stack([np.asarray(im, dtype=np.uint8) for im in images])
        with self._lock, torch.inference_mode():
            latents = self._encode(batch)
            embeds = [e.repeat(len(images), *([1] * (e.dim() - 1)))
                      for e in self._prompt_embeds(s.prompt, s.negative_prompt)]
            generators = [torch.Generator(self.device).manual_seed(drawn if seed is None
                                                                   else seed)
                          for seed in seeds]
            denoised = pipe(
                image=latents, prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1],
                pooled_prompt_embeds=embeds[2], negative_pooled_prompt_embeds=embeds[3],
                strength=min(float(s.strength), 1.0), num_inference_steps=int(s.steps),
                guidance_scale=float(s.guidance), generator=generators, output_type="latent",
            ).images
            pixels = self._to_uint8(denoised)
        return pixels[:n]

    def _encode(self, batch: np.ndarray) -> Any:
        torch, vae = self.torch, self.pipe.vae
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2)
        x = x.to(vae.dtype).div(127.5).sub(1.0)
        if self.o.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        latents = self._encode_mean(x)
        mean, std = _latent_stats(torch, vae, latents)
        return ((latents - mean) * vae.config.scaling_factor / std).to(self.dtype)

    def _vae_mean(self, x: Any) -> Any:
        """The mode of the VAE's latent distribution (its mean): no sampling, so a photo
        encodes the same in any batch."""
        vae = self.pipe.vae
        moments = vae.encoder(x)
        if vae.quant_conv is not None:
            moments = vae.quant_conv(moments)
        return moments.chunk(2, dim=1)[0]

    def _to_uint8(self, latents: Any) -> np.ndarray:
        torch, vae = self.torch, self.pipe.vae
        mean, std = _latent_stats(torch, vae, latents)
        latents = (latents * std / vae.config.scaling_factor + mean).to(vae.dtype)
        image = self._decode(latents, return_dict=False)[0]
        image = (image.float() / 2 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8)
        return np.asarray(image.permute(0, 2, 3, 1).cpu().numpy())

    def _prompt_embeds(self, prompt: str, negative: str) -> tuple[Any, ...]:
        key = (prompt, negative)
        if key not in self._embeds:
            self._embeds[key] = tuple(self.pipe.encode_prompt(
                prompt, device=self.device, num_images_per_prompt=1,
                do_classifier_free_guidance=True, negative_prompt=negative))
        return self._embeds[key]


def _resized(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def _latent_stats(torch: Any, vae: Any, like: Any) -> tuple[Any, Any]:
    cfg = vae.config
    if getattr(cfg, "latents_mean", None) is None or getattr(cfg, "latents_std", None) is None:
        return 0.0, 1.0
    shape = (1, -1, 1, 1)
    return (torch.tensor(cfg.latents_mean).view(shape).to(like.device, like.dtype),
            torch.tensor(cfg.latents_std).view(shape).to(like.device, like.dtype))


def _dtype(torch: Any, name: str, device: str) -> Any:
    if name == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if name not in DTYPES:
        raise ConfigError(f"enhance: dtype {name!r} is not one of auto, {', '.join(DTYPES)}")
    return getattr(torch, DTYPES[name])


def load_pipeline(o: SDXLOptions, dtype: Any) -> Any:
    """``StableDiffusionXLImg2ImgPipeline.from_pretrained(o.model)`` in ``dtype``, or a
    :class:`ConfigError` that names the model and the ways to provide it."""
    _, diffusers = import_torch_diffusers()
    from diffusers.pipelines import pipeline_utils

    # diffusers renamed torch_dtype to dtype; the old name warns in newer releases.
    dtype_key = "dtype" if hasattr(pipeline_utils, "_resolve_dtype") else "torch_dtype"
    try:
        return diffusers.StableDiffusionXLImg2ImgPipeline.from_pretrained(
            o.model, variant=o.variant, add_watermarker=False,
            local_files_only=o.local_files_only, **{dtype_key: dtype})
    except Exception as exc:
        raise ConfigError(
            f"enhance: cannot load the SDXL model {o.model!r} ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}). "
            "Provide it as a local folder in diffusers layout (config model: /path/to/model, "
            "e.g. from save_pretrained), or put it in the Hugging Face cache beforehand "
            f"(huggingface-cli download {o.model}) and run with HF_HUB_OFFLINE=1, "
            "or allow this replica to reach the Hugging Face Hub."
        ) from exc

"""Benchmark: the enhance actor's batch path through the queue against a plain
per-image diffusers loop, same model, same settings, in one run.

Workload (the defaults): SDXL img2img at 1024x1024, 30 steps x strength 0.3 (9 denoising
steps), CFG 5, bf16. Without ``--model`` the model is the full-size SDXL architecture
with random weights, built on the GPU and saved once in diffusers layout, because
throughput depends on shapes, not values; both sides load it with ``from_pretrained``.

- baseline: ``StableDiffusionXLImg2ImgPipeline`` called once per photo (read the JPEG,
  call the pipeline with the prompt strings, write a PNG), after one warm-up call;
- actor: ``actors.enhance.handler.Enhancer.enhance_batch`` behind its queue in a
  ``LocalMesh`` (the real runtime on the embedded transport) with ``spec.batch``, batches
  of ``--batch``, ``concurrency: 2``, ``torch.compile`` (warmed up at startup), channels
  last, fused QKV, cached prompt embeddings, bf16 VAE. Timed from the first send to the
  last result recorded by happy-end, after one warm-up round through the queue.

    python bench/bench_enhance.py                  # a CUDA GPU; the reference run
    python bench/bench_enhance.py --ablation       # plus the actor without compile
    python bench/bench_enhance.py --model /models/sdxl-base
    python bench/bench_enhance.py --tiny           # CPU: tiny random SDXL, 64x64, 2 steps

Target (issue 5): >= 3.3 images/s through the queue on one H200, >= 2.5x the baseline.
Compilation happens before the clock starts (the actor warms up at startup) but costs
wall time. The benchmark defaults to ``--compile-mode default``, the quickest to compile,
so that a whole run has a chance to fit one ten-minute call on a lent GPU; the actor's own
default, ``--compile-mode max-autotune-no-cudagraphs``, adds kernel autotuning (minutes
more on a machine's first run; the inductor cache makes later starts fast).
``--no-compile`` measures batching alone; ``--ablation`` adds that row to the same run.
When this script was written no GPU was at hand: it was checked with ``--tiny`` on a CPU
only, and the compiled path with the tiny model on a CPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from actors.enhance.settings import FOOD_NEGATIVE_PROMPT, FOOD_PROMPT  # noqa: E402
from asya_agents.manifest import load_mesh  # noqa: E402
from asya_agents.testing import LocalMesh  # noqa: E402

PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "cat", "immunohistochemistry")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true",
                   help="tiny random pipeline on the CPU at 64x64, 2 steps (a check, not a figure)")
    p.add_argument("--model", help="a model id or folder (default: random full-size SDXL)")
    p.add_argument("--images", type=int, help="photos through the actor (default 64; tiny 8)")
    p.add_argument("--naive-images", type=int, help="photos through the baseline (16; tiny 4)")
    p.add_argument("--batch", type=int, default=8, help="spec.batch.maxSize and max_batch")
    p.add_argument("--concurrency", type=int, default=2, help="batches in flight per replica")
    p.add_argument("--max-wait", default="500ms", help="spec.batch.maxWait")
    p.add_argument("--size", type=int, help="resolution (1024; tiny 64)")
    p.add_argument("--steps", type=int, help="scheduler steps (30; tiny 2)")
    p.add_argument("--strength", type=float, help="img2img strength (0.3; tiny 0.5)")
    p.add_argument("--guidance", type=float, default=5.0, help="CFG scale")
    p.add_argument("--dtype", default=None, help="bf16 (GPU default), fp16, fp32 (CPU)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode: default (compiles in a minute or two), "
                        "max-autotune-no-cudagraphs (the actor's default; autotunes for "
                        "several minutes on first start)")
    p.add_argument("--no-compile", action="store_true", help="no torch.compile")
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--no-fuse-qkv", action="store_true")
    p.add_argument("--ablation", action="store_true",
                   help="also run the actor with batching alone (no compile) for the table")
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    tiny = args.tiny
    args.images = args.images or (8 if tiny else 64)
    args.naive_images = args.naive_images or (4 if tiny else 16)
    args.size = args.size or (64 if tiny else 1024)
    args.steps = args.steps or (2 if tiny else 30)
    args.strength = args.strength or (0.5 if tiny else 0.3)
    return args


# -- inputs ----------------------------------------------------------------------------


def make_photos(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` degraded JPEGs at ``size`` from scikit-image's bundled photos."""
    from PIL import Image, ImageEnhance, ImageFilter
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        raw = getattr(data, PHOTOS[i % len(PHOTOS)])()
        image = Image.fromarray(raw).convert("RGB").resize((size, size))
        image = ImageEnhance.Brightness(image).enhance(0.6 + 0.05 * (i % 5))
        image = ImageEnhance.Color(image).enhance(0.5).filter(ImageFilter.GaussianBlur(1))
        path = folder / f"photo-{i:04d}.jpg"
        image.save(path, quality=92)
        paths.append(path)
    return paths


def prepare_model(args: argparse.Namespace, device: str, folder: Path) -> str:
    if args.model:
        return str(args.model)
    import torch

    from actors.enhance.random_sdxl import save_random_sdxl

    started = time.perf_counter()
    dtype = torch.float32 if args.tiny else torch.bfloat16
    save_random_sdxl(folder, "tiny" if args.tiny else "full", device=device, dtype=dtype)
    print(f"random {'tiny' if args.tiny else 'full-size'} SDXL saved to {folder} "
          f"in {time.perf_counter() - started:.1f}s")
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return str(folder)


# -- the two sides ---------------------------------------------------------------------


def run_naive(args: argparse.Namespace, model: str, device: str, dtype: Any,
              photos: list[Path]) -> float:
    import torch
    from PIL import Image

    from actors.enhance.sdxl_backend import SDXLOptions, load_pipeline

    pipe = load_pipeline(SDXLOptions(model=model), dtype).to(device)
    pipe.set_progress_bar_config(disable=True)

    def one(path: Path) -> None:
        with Image.open(path) as raw:
            image = raw.convert("RGB")
        out = pipe(prompt=FOOD_PROMPT, negative_prompt=FOOD_NEGATIVE_PROMPT, image=image,
                   strength=args.strength, num_inference_steps=args.steps,
                   guidance_scale=args.guidance,
                   generator=torch.Generator(device).manual_seed(0)).images[0]
        out.save(path.with_suffix(".naive.png"), compress_level=1)

    one(photos[0])  # warm-up: cuDNN autotuning, allocator
    sync(device)
    started = time.perf_counter()
    for path in photos[:args.naive_images]:
        one(path)
    sync(device)
    return args.naive_images / (time.perf_counter() - started)


def write_mesh(folder: Path, args: argparse.Namespace, model: str, device: str,
               *, compile_: bool) -> Path:
    config = {
        "backend": "sdxl", "model": model, "device": device, "size": args.size,
        "steps": args.steps, "strength": args.strength, "guidance": args.guidance,
        "max_batch": args.batch, "compile": compile_, "compile_mode": args.compile_mode,
        "warmup": compile_, "channels_last": not args.no_channels_last,
        "fuse_qkv": not args.no_fuse_qkv,
    }
    if args.dtype:
        config["dtype"] = args.dtype
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mesh.yaml").write_text(json.dumps({
        "apiVersion": "asya.sh/v1alpha1", "kind": "Mesh", "metadata": {"name": "bench-enhance"},
        "spec": {"route": ["enhance"], "transport": "embedded", "pythonPath": [str(ROOT)],
                 "flavorPaths": [],
                 # the photos are beside this folder, in ../in: the actor may read there
                 "storage": {"roots": [".."]}},
    }))
    (folder / "enhance.yaml").write_text(json.dumps({
        "apiVersion": "asya.sh/v1alpha1", "kind": "AsyncActor", "metadata": {"name": "enhance"},
        "spec": {"handler": "actors.enhance.handler.Enhancer.enhance_batch", "config": config,
                 "batch": {"maxSize": args.batch, "maxWait": args.max_wait},
                 "concurrency": args.concurrency, "resiliency": {"actorTimeout": "900s"}},
    }))
    return folder


def run_actor(args: argparse.Namespace, mesh: Path, photos: list[Path]) -> tuple[float, int]:
    started = time.perf_counter()
    with LocalMesh(load_mesh(mesh), state_dir=mesh / "state") as local:
        print(f"actor ready (load, compile, warm-up) in {time.perf_counter() - started:.1f}s")
        warm = [local.send({"image_url": p.as_uri()})
                for p in photos[:args.batch * args.concurrency]]
        local.join(warm, timeout=1800)
        started = time.perf_counter()
        ids = [local.send({"image_url": photos[i % len(photos)].as_uri()})
               for i in range(args.images)]
        local.join(ids, timeout=1800)
        elapsed = time.perf_counter() - started
        records = [local.result(i) for i in ids]
    failed = [r for r in records if r.status != "succeeded"]
    if failed:
        raise SystemExit(f"{len(failed)} envelope(s) failed, first: {failed[0].error}")
    biggest = max(r.payload["enhancement"]["batch_size"] for r in records)
    return args.images / elapsed, biggest


def quiet_libraries() -> None:
    """diffusers and transformers log per call (fp32 VAE casts, prompt truncation by the
    random byte-level tokenizer); the benchmark prints only its figures."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free(device: str) -> None:
    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main() -> None:
    args = parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.tiny:
        raise SystemExit("no CUDA device: the reference run needs a GPU; use --tiny on a CPU")
    if device == "cpu":
        torch.set_num_threads(1)  # both sides alike; a busy small CPU thrashes otherwise
    quiet_libraries()
    dtype_name = args.dtype or ("bf16" if device == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    with tempfile.TemporaryDirectory(prefix="asya-bench-enhance-") as tmp_name:
        tmp = Path(tmp_name)
        model = prepare_model(args, device, tmp / "model")
        photos = make_photos(tmp / "in", max(args.images, args.naive_images), args.size)
        naive = run_naive(args, model, device, dtype, photos)
        free(device)  # the baseline's pipeline is gone once run_naive returns
        print(f"naive per-image loop: {naive:.3f} images/s")
        rows = [("naive diffusers loop (batch 1)", 1, args.naive_images, naive)]
        compiled = not args.no_compile and device.startswith("cuda")
        variants = [(False, "batching only")] if args.ablation and compiled else []
        variants.append((compiled, "compiled" if compiled else "batching"))
        for compile_, label in variants:
            mesh = write_mesh(tmp / f"mesh-{label.replace(' ', '-')}", args, model, device,
                              compile_=compile_)
            rate, biggest = run_actor(args, mesh, photos)
            free(device)
            print(f"enhance actor ({label}): {rate:.3f} images/s")
            rows.append((f"enhance actor via queue, {label}", biggest, args.images, rate))
    print(f"\n{gpu}, {args.size}x{args.size}, {args.steps} steps x strength {args.strength}, "
          f"CFG {args.guidance:g}, {dtype_name}, compile mode "
          f"{args.compile_mode if compiled else 'off'}, concurrency {args.concurrency}")
    print(f"{'path':44} {'max batch':>9} {'images':>7} {'images/s':>9} {'ratio':>6}")
    for name, size, count, rate in rows:
        print(f"{name:44} {size:>9} {count:>7} {rate:>9.3f} {rate / naive:>5.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": gpu, "rows": [dict(zip(("path", "max_batch", "images", "images_per_s"),
                                             row, strict=True)) for row in rows],
            "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()

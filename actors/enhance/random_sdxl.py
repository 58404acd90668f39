"""SDXL img2img pipelines with random weights, built from configs in code.

Two uses, neither of which may touch the network: tests need a *tiny* pipeline with the
real SDXL wiring (two CLIP text encoders, a UNet with ``addition_embed_type="text_time"``,
an ``AutoencoderKL``) so that the actor's ``from_pretrained`` and batch paths run on a
CPU in seconds; the benchmark needs the *full-size* SDXL architecture where no weights
are present, because throughput depends on the shapes, not on the values.

The tokenizers are byte-level CLIP tokenizers made here from a vocabulary of the 256
byte symbols (with and without the end-of-word mark) and no merges: every prompt
tokenizes, no tokenizer file is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["FULL", "TINY", "build_random_sdxl", "byte_level_clip_tokenizer", "save_random_sdxl"]

# Small enough to build, save and load in a few seconds on two CPU cores.
TINY: dict[str, Any] = {
    "unet": {
        "block_out_channels": (32, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (2, 4),
        "transformer_layers_per_block": (1, 1),
        "cross_attention_dim": 64,  # text encoder 1 (32) + text encoder 2 (32)
        "addition_time_embed_dim": 8,
        "projection_class_embeddings_input_dim": 80,  # pooled 32 + 6 time ids x 8
        "norm_num_groups": 8,
        "sample_size": 8,
    },
    "vae": {
        "block_out_channels": (16, 32),
        "down_block_types": ("DownEncoderBlock2D",) * 2,
        "up_block_types": ("UpDecoderBlock2D",) * 2,
        "layers_per_block": 1,
        "norm_num_groups": 8,
        "sample_size": 64,
    },
    "text_encoder": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "projection_dim": 32},
    "text_encoder_2": {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2,
                       "num_attention_heads": 4, "projection_dim": 32},
}

# stabilityai/stable-diffusion-xl-base-1.0's architecture: 2.57 B (UNet) + 84 M (VAE) +
# 123 M + 695 M (text encoders) parameters, as in the released checkpoint.
FULL: dict[str, Any] = {
    "unet": {
        "block_out_channels": (320, 640, 1280),
        "layers_per_block": 2,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": (5, 10, 20),
        "transformer_layers_per_block": (1, 2, 10),
        "cross_attention_dim": 2048,
        "addition_time_embed_dim": 256,
        "projection_class_embeddings_input_dim": 2816,
        "norm_num_groups": 32,
        "sample_size": 128,
    },
    "vae": {
        "block_out_channels": (128, 256, 512, 512),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": 1024,
    },
    # CLIP's vocabulary size, so parameter counts match; the byte tokenizer uses 514 ids.
    "text_encoder": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                     "num_attention_heads": 12, "projection_dim": 768,
                     "hidden_act": "quick_gelu", "vocab_size": 49408},
    "text_encoder_2": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
                       "num_attention_heads": 20, "projection_dim": 1280,
                       "hidden_act": "gelu", "vocab_size": 49408},
}


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible map of bytes to printable characters."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(keep, map(chr, chars), strict=True))


def byte_level_clip_tokenizer() -> Any:
    """A CLIPTokenizer over single bytes: 514 tokens, no merges, no files."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate([*symbols, *(s + "</w>" for s in symbols)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def build_random_sdxl(arch: dict[str, Any] | str = "tiny", *, seed: int = 0,
                      device: str | None = None, dtype: Any = None) -> Any:
    """A ``StableDiffusionXLImg2ImgPipeline`` with random weights; ``arch`` is ``"tiny"``,
    ``"full"`` or a dict shaped like :data:`TINY`. Weights are created on ``device``
    (a GPU builds the full-size model in seconds where a CPU takes minutes)."""
    import diffusers
    import torch

    d: Any = diffusers  # diffusers' constructors are untyped
    cfg = {"tiny": TINY, "full": FULL}[arch] if isinstance(arch, str) else arch
    tokenizer = byte_level_clip_tokenizer()
    torch.manual_seed(seed)
    default_dtype = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)  # weights born in dtype: half the peak memory
    try:
        modules = _modules(cfg, tokenizer, device or "cpu")
    finally:
        torch.set_default_dtype(default_dtype)
    scheduler = d.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading", prediction_type="epsilon")
    pipe = d.StableDiffusionXLImg2ImgPipeline(
        **modules, tokenizer=tokenizer, tokenizer_2=tokenizer, scheduler=scheduler,
        requires_aesthetics_score=False, force_zeros_for_empty_prompt=True,
        add_watermarker=False)
    return pipe


def _modules(cfg: dict[str, Any], tokenizer: Any, device: str) -> dict[str, Any]:
    """The UNet, the VAE and both text encoders, with random weights, on ``device``."""
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    d: Any = diffusers

    with torch.device(device):
        unet = d.UNet2DConditionModel(
            in_channels=4, out_channels=4, addition_embed_type="text_time",
            use_linear_projection=True, **cfg["unet"])
        vae = d.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                              scaling_factor=0.13025, force_upcast=True, **cfg["vae"])
        text = {
            name: CLIPTextConfig(**{"vocab_size": len(tokenizer), **cfg[name]},
                                 max_position_embeddings=77,
                                 bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
            for name in ("text_encoder", "text_encoder_2")
        }
        return {"unet": unet, "vae": vae, "text_encoder": CLIPTextModel(text["text_encoder"]),
                "text_encoder_2": CLIPTextModelWithProjection(text["text_encoder_2"])}


def save_random_sdxl(folder: str | Path, arch: dict[str, Any] | str = "tiny",
                     **kwargs: Any) -> Path:
    """Build a random pipeline and ``save_pretrained`` it to ``folder`` (a model path)."""
    folder = Path(folder)
    build_random_sdxl(arch, **kwargs).save_pretrained(folder)
    return folder

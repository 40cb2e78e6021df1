"""Tiny, random, deterministic demo models (SD1.5, SDXL, FLUX) built locally, for tests and first runs.

They have the real architectures at toy sizes (diffusers' own test sizes), so they go through exactly the code
that loads and runs real checkpoints. Nothing is downloaded: tokenizers are built here from byte-level vocabularies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

ARCHES = ("sd15", "sdxl", "flux")
FORMATS = ("diffusers", "single-file")

# SD-style schedulers: the real SD1.5/SDXL training schedule, so scheduler swapping behaves as with real models.
_SD_SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    steps_offset=1,
    timestep_spacing="leading",
    prediction_type="epsilon",
)
# flux-dev's flow-match schedule (resolution-dependent shift).
_FLUX_SCHEDULER = dict(
    num_train_timesteps=1000,
    shift=3.0,
    use_dynamic_shifting=True,
    base_shift=0.5,
    max_shift=1.15,
    base_image_seq_len=256,
    max_image_seq_len=4096,
)


def _bytes_to_unicode() -> list[str]:
    # GPT-2/CLIP byte-level alphabet: every byte maps to a printable unicode char.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


def clip_demo_tokenizer():
    """A CLIP BPE tokenizer over single bytes (no merges): 514 ids, every text encodes, nothing downloaded."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_demo_tokenizer():
    """A T5 Unigram tokenizer over ASCII characters (with and without the word-start marker)."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    for c in range(33, 127):
        pieces.append(("▁" + chr(c), -3.0))
        pieces.append((chr(c), -4.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=512)


def _clip_config(with_projection: bool = False):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=32,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=5,
        vocab_size=1000,
        hidden_act="quick_gelu",
        projection_dim=32,
        max_position_embeddings=77,
    )


def _sd_vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=latent_channels,
        sample_size=64,
        **extra,
    )


def build_pipeline(arch: str):
    """The demo pipeline for `arch`, with fixed-seed random weights."""
    from diffusers import (
        EulerDiscreteScheduler,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    if arch not in ARCHES:
        raise ValueError(f"unknown demo arch {arch!r}; choose one of {ARCHES}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if arch == "sd15":
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=2,
                sample_size=32,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=32,
                attention_head_dim=8,
            )
            vae = _sd_vae()
            text_encoder = CLIPTextModel(_clip_config())
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=clip_demo_tokenizer(),
                unet=unet,
                scheduler=EulerDiscreteScheduler(**_SD_SCHEDULER),
                safety_checker=None,
                feature_extractor=None,
                image_encoder=None,
                requires_safety_checker=False,
            )
        if arch == "sdxl":
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=2,
                sample_size=32,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                attention_head_dim=(2, 4),
                use_linear_projection=True,
                addition_embed_type="text_time",
                addition_time_embed_dim=8,
                transformer_layers_per_block=(1, 2),
                projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + pooled text 32
                cross_attention_dim=64,  # te1 hidden 32 + te2 hidden 32
            )
            vae = _sd_vae(scaling_factor=0.13025, force_upcast=False)
            return StableDiffusionXLPipeline(
                vae=vae,
                text_encoder=CLIPTextModel(_clip_config()),
                text_encoder_2=CLIPTextModelWithProjection(_clip_config()),
                tokenizer=clip_demo_tokenizer(),
                tokenizer_2=clip_demo_tokenizer(),
                unet=unet,
                scheduler=EulerDiscreteScheduler(**_SD_SCHEDULER),
                force_zeros_for_empty_prompt=True,
            )
        # flux: 16 latent channels packed 2x2 into 64 transformer input channels, as in the real model.
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=64,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=[4, 4, 8],
        )
        t5 = T5EncoderModel(
            T5Config(
                vocab_size=256,
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",
                is_encoder_decoder=False,
                use_cache=False,
                tie_word_embeddings=False,
                pad_token_id=0,
                eos_token_id=1,
            )
        )
        vae = _sd_vae(latent_channels=16, use_quant_conv=False, use_post_quant_conv=False,
                      shift_factor=0.1159, scaling_factor=0.3611)
        return FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler(**_FLUX_SCHEDULER),
            vae=vae,
            text_encoder=CLIPTextModel(_clip_config()),
            tokenizer=clip_demo_tokenizer(),
            text_encoder_2=t5,
            tokenizer_2=t5_demo_tokenizer(),
            transformer=transformer,
        )


def make_demo(dest: Path, arch: str, fmt: str = "diffusers") -> Path:
    """Write a tiny demo model under `dest` and return the path to load (a folder, or one .safetensors file).

    fmt="single-file" writes one .safetensors in the original (CompVis / SGM / BFL) key layout, like community
    checkpoints; its tokenizers are the byte-level demo ones, which the loader rebuilds (see loader.py).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown demo format {fmt!r}; choose one of {FORMATS}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    pipe = build_pipeline(arch)
    if fmt == "diffusers":
        out = dest / f"demo-{arch}"
        if out.exists():
            shutil.rmtree(out)
        pipe.save_pretrained(out, safe_serialization=True)
        return out
    from safetensors.torch import save_file

    from engine.models import convert

    out = dest / f"demo-{arch}.safetensors"
    sd = convert.pipeline_to_original(pipe, arch)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out), metadata={"paintbridge_demo": arch})
    return out

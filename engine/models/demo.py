"""Tiny, random, deterministic demo models (SD1.5, SDXL, FLUX) built locally, for tests and first runs.

They have the real architectures at toy sizes (diffusers' own test sizes), so they go through exactly the code
that loads and runs real checkpoints. Nothing is downloaded: tokenizers are built here from byte-level vocabularies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .tokenizers import bytes_to_unicode

ARCHES = ("sd15", "sd2", "sdxl", "flux")
CONTROL_ARCHES = ("controlnet-sd15", "controlnet-sdxl", "t2i-sd15", "ipadapter-sd15")
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


def clip_demo_tokenizer():
    """A CLIP BPE tokenizer over single bytes (no merges): 514 ids, every text encodes, nothing downloaded."""
    from transformers import CLIPTokenizer

    alphabet = bytes_to_unicode()
    chars = [alphabet[b] for b in range(256)]   # in byte order
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


def _clip_config(hidden_size: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=hidden_size,
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
        if arch in ("sd15", "sd2"):
            # SD2 differs by an OpenCLIP-style text encoder of width 1024 (what marks a model as SD2), linear
            # attention projections and v-prediction; one encoder layer keeps it at ~25 MB.
            sd2 = arch == "sd2"
            unet = UNet2DConditionModel(
                block_out_channels=(32, 64),
                layers_per_block=2,
                sample_size=32,
                in_channels=4,
                out_channels=4,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                cross_attention_dim=1024 if sd2 else 32,
                attention_head_dim=(2, 4) if sd2 else 8,
                use_linear_projection=sd2,
            )
            vae = _sd_vae()
            config = _clip_config(hidden_size=1024) if sd2 else _clip_config()
            if sd2:
                config.num_hidden_layers, config.hidden_act = 1, "gelu"
            text_encoder = CLIPTextModel(config)
            prediction = "v_prediction" if sd2 else _SD_SCHEDULER["prediction_type"]
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=clip_demo_tokenizer(),
                unet=unet,
                scheduler=EulerDiscreteScheduler(**{**_SD_SCHEDULER, "prediction_type": prediction}),
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
                projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + pooled text (projection_dim) 32
                cross_attention_dim=80,  # te1 hidden 32 + te2 hidden 48
            )
            vae = _sd_vae(scaling_factor=0.13025, force_upcast=False)
            return StableDiffusionXLPipeline(
                vae=vae,
                text_encoder=CLIPTextModel(_clip_config()),
                # te2 wider than te1, as in real SDXL; single-file loading tells the two apart by width.
                text_encoder_2=CLIPTextModelWithProjection(_clip_config(hidden_size=48)),
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



# ---- diffusers -> original (CompVis / SGM) key layout, for single-file demo checkpoints ----------------------
# The inverse of diffusers' single_file_utils conversions (after its convert_diffusers_to_original_* scripts),
# generalised to any number of UNet/VAE levels so that toy sizes work.

_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "add_embedding.linear_1.": "label_emb.0.0.",
    "add_embedding.linear_2.": "label_emb.0.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]


def _unet_to_original(sd: dict, config) -> dict:
    n, lpb = len(config.block_out_channels), config.layers_per_block
    up_has_attn = ["CrossAttn" in t for t in config.up_block_types]
    prefixes = dict(_UNET_TOP)
    for i in range(n):
        for j in range(lpb):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{(lpb + 1) * i + j + 1}.0."
            prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{(lpb + 1) * i + j + 1}.1."
        for j in range(lpb + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{(lpb + 1) * i + j}.0."
            prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{(lpb + 1) * i + j}.1."
        if i < n - 1:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(lpb + 1) * (i + 1)}.0.op."
            prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(lpb + 1) * i + lpb}.{2 if up_has_attn[i] else 1}."
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    for j in range(2):
        prefixes[f"mid_block.resnets.{j}."] = f"middle_block.{2 * j}."
    out = {}
    for k, v in sd.items():
        for hf, orig in prefixes.items():
            if k.startswith(hf):
                rest = k[len(hf):]
                if ".resnets." in hf:
                    for a, b in _UNET_RESNET:
                        rest = rest.replace(a, b)
                out["model.diffusion_model." + orig + rest] = v
                break
        else:
            raise KeyError(f"no original-layout name for UNet key {k}")
    return out


def _vae_to_original(sd: dict, config, prefix: str) -> dict:
    n = len(config.block_out_channels)
    prefixes = {"quant_conv.": "quant_conv.", "post_quant_conv.": "post_quant_conv."}
    for side in ("encoder", "decoder"):
        prefixes[f"{side}.conv_in."] = f"{side}.conv_in."
        prefixes[f"{side}.conv_out."] = f"{side}.conv_out."
        prefixes[f"{side}.conv_norm_out."] = f"{side}.norm_out."
        prefixes[f"{side}.mid_block.attentions.0."] = f"{side}.mid.attn_1."
        for j in range(2):
            prefixes[f"{side}.mid_block.resnets.{j}."] = f"{side}.mid.block_{j + 1}."
    for i in range(n):
        for j in range(config.layers_per_block + 1):
            prefixes[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
            prefixes[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{n - 1 - i}.block.{j}."
        prefixes[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
        prefixes[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{n - 1 - i}.upsample."
    attn = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for k, v in sd.items():
        for hf, orig in prefixes.items():
            if k.startswith(hf):
                rest = k[len(hf):].replace("conv_shortcut", "nin_shortcut")
                if "attentions" in hf:
                    for a, b in attn:
                        rest = rest.replace(a, b)
                    if rest.endswith("weight") and v.ndim == 2:
                        v = v[:, :, None, None]  # original attention projections are 1x1 convs
                out[prefix + orig + rest] = v
                break
        else:
            raise KeyError(f"no original-layout name for VAE key {k}")
    return out


def _clip_to_original(sd: dict, prefix: str) -> dict:
    # HF CLIP keys under the original prefix; transformers >= 5.6 drops the `text_model.` level, put it back.
    return {prefix + (k if k.startswith("text_model.") else "text_model." + k): v for k, v in sd.items()}


def _open_clip_to_original(sd: dict, prefix: str) -> dict:
    out, qkv = {}, {}
    for k, v in sd.items():
        if k == "text_projection.weight":
            out[prefix + "text_projection"] = v.T
            continue
        k = k.removeprefix("text_model.")
        if k == "embeddings.token_embedding.weight":
            out[prefix + "token_embedding.weight"] = v
        elif k == "embeddings.position_embedding.weight":
            out[prefix + "positional_embedding"] = v
        elif k.startswith("final_layer_norm."):
            out[prefix + "ln_final." + k.split(".")[-1]] = v
        elif k.startswith("encoder.layers."):
            _, _, i, rest = k.split(".", 3)
            base = f"{prefix}transformer.resblocks.{i}."
            if rest.startswith("self_attn.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault((base, rest.split(".")[-1]), {})[rest.split(".")[1]] = v
                continue
            rest = (rest.replace("self_attn.", "attn.").replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2")
                    .replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj"))
            out[base + rest] = v
        elif k != "embeddings.position_ids":
            raise KeyError(f"no OpenCLIP name for text encoder key {k}")
    for (base, kind), parts in qkv.items():
        out[f"{base}attn.in_proj_{kind}"] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def _configs_for_metadata(pipe) -> str:
    """Every config/tokenizer file of the pipeline (no weights), as JSON {relative path: text}."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_config(tmp)
        for name in pipe.components:
            comp = getattr(pipe, name)
            if comp is None:
                continue
            sub = Path(tmp) / name
            if hasattr(comp, "save_pretrained") and not isinstance(comp, torch.nn.Module):
                comp.save_pretrained(sub)  # tokenizers, schedulers
            elif hasattr(comp, "config") and hasattr(comp.config, "to_json_file"):
                sub.mkdir(parents=True, exist_ok=True)
                comp.config.to_json_file(sub / "config.json")  # transformers models
            else:
                comp.save_config(sub)  # diffusers models
        files = {}
        for f in sorted(Path(tmp).rglob("*")):
            if f.is_file() and f.suffix in (".json", ".txt", ".model"):
                files[str(f.relative_to(tmp))] = f.read_text()
        return json.dumps(files)


def pipeline_to_original(pipe, arch: str) -> tuple[dict, dict]:
    """(state dict in the original single-file layout, safetensors metadata) for an sd15/sdxl demo pipeline."""
    sd = _unet_to_original(pipe.unet.state_dict(), pipe.unet.config)
    sd.update(_vae_to_original(pipe.vae.state_dict(), pipe.vae.config, "first_stage_model."))
    if arch == "sd15":
        sd.update(_clip_to_original(pipe.text_encoder.state_dict(), "cond_stage_model.transformer."))
    elif arch == "sd2":
        sd.update(_open_clip_to_original(pipe.text_encoder.state_dict(), "cond_stage_model.model."))
    elif arch == "sdxl":
        sd.update(_clip_to_original(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))
        sd.update(_open_clip_to_original(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    else:
        raise ValueError(f"single-file demo is not available for {arch!r} (use fmt='diffusers')")
    return sd, {"paintbridge_demo": arch, "paintbridge_configs": _configs_for_metadata(pipe)}


def tiny_esrgan(scale: int = 2, seed: int = 0):
    """A tiny random-weight ESRGAN (spandrel's architecture): upscales by `scale`, produces smeared noise."""
    from .upscale import import_spandrel

    import_spandrel()
    from spandrel.architectures.ESRGAN import ESRGAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)


def tiny_lora(pipe, path: Path, layout: str = "kohya", scale: float = 0.5, seed: int = 0) -> Path:
    """A LoRA for the tiny SD1.5 demo (kohya or peft key layout): the UNet's attention k/v/q and the text
    encoder's q projections, random low-rank weights that visibly change the output."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sd = {}
    targets = [(n, m) for n, m in pipe.unet.named_modules() if isinstance(m, torch.nn.Linear)
               and ("attn2.to_k" in n or "attn2.to_v" in n or "attn1.to_q" in n)]
    te = [(n, m) for n, m in pipe.text_encoder.named_modules() if isinstance(m, torch.nn.Linear) and "q_proj" in n]
    for comp, mods in (("unet", targets), ("text_encoder", te)):
        for n, m in mods:
            down = torch.randn(4, m.in_features, generator=g) * scale
            up = torch.randn(m.out_features, 4, generator=g) * scale
            if layout == "kohya":
                n2 = n if comp == "unet" else ("text_model." + n if not n.startswith("text_model.") else n)
                k = ("lora_unet_" if comp == "unet" else "lora_te_") + n2.replace(".", "_")
                sd.update({k + ".lora_down.weight": down, k + ".lora_up.weight": up, k + ".alpha": torch.tensor(4.0)})
            else:
                k = f"{comp}.{n}"
                sd.update({k + ".lora_A.weight": down, k + ".lora_B.weight": up})
    save_file(sd, str(path))
    return path


# ---- control models for the demo models ------------------------------------------------------------------------
def _visible(module, seed: int, std: float = 0.05):
    """Random weights where a real ControlNet starts at zero (its zero convolutions), so a random one has an
    effect (diffusers' fast tests do the same)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data = torch.randn(m.weight.shape, generator=g) * std
            if m.bias is not None:
                m.bias.data = torch.randn(m.bias.shape, generator=g) * std


def tiny_controlnet(arch: str, seed: int = 0):
    """A ControlNet for the sd15 or sdxl demo: the demo UNet's encoder copied (ControlNetModel.from_unet, as real
    ControlNets start), a conditioning embedding that downscales by 2 like the demo VAE."""
    from diffusers import ControlNetModel

    unet = build_pipeline(arch).unet
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
        _visible(net.controlnet_down_blocks, seed)
        _visible(net.controlnet_mid_block, seed + 1)
        _visible(net.controlnet_cond_embedding.conv_out, seed + 2)
    return net


def tiny_t2i_adapter(seed: int = 0):
    """A T2I-Adapter for the sd15 demo: one 32-channel feature at 1/4 of the image (the demo UNet's first block
    output: 64 px image, 32 px latents, 16 px after its downsampler)."""
    from diffusers import T2IAdapter

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return T2IAdapter(in_channels=3, channels=[32], num_res_blocks=2, downscale_factor=4,
                          adapter_type="full_adapter")


def tiny_clip_vision(seed: int = 0):
    """A tiny CLIP image encoder (32 px, 32 wide) for the IP-Adapter demo."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
            patch_size=4, projection_dim=32, num_channels=3))


def tiny_ip_adapter(arch: str = "sd15", image_width: int = 32, seed: int = 0) -> dict:
    """An IP-Adapter state dict (flat, as the real .safetensors files) for a demo UNet: an image projection to 4
    tokens and to_k_ip/to_v_ip for every cross-attention layer, numbered as diffusers and the originals do (the
    n-th attention processor in the UNet's order gets key n+1... only cross-attention ones: 1, 3, 5, ...)."""
    unet = build_pipeline(arch).unet
    cross = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(seed)
    sd = {"image_proj.proj.weight": torch.randn(4 * cross, image_width, generator=g) * 0.2,
          "image_proj.proj.bias": torch.zeros(4 * cross),
          "image_proj.norm.weight": torch.ones(cross), "image_proj.norm.bias": torch.zeros(cross)}
    key = 1
    for name, module in unet.attn_processors.items():
        if name.endswith("attn1.processor"):
            continue
        path = name.rsplit(".processor", 1)[0]
        attn = unet.get_submodule(path)
        hidden = attn.to_k.out_features
        sd[f"ip_adapter.{key}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.5
        sd[f"ip_adapter.{key}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.5
        key += 2
    return sd


def _module_meta(module, arch: str) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if hasattr(module, "save_config"):
            module.save_config(tmp)
        else:
            module.config.to_json_file(Path(tmp) / "config.json")
        files = {"config.json": (Path(tmp) / "config.json").read_text()}
    return {"paintbridge_demo": arch, "paintbridge_configs": json.dumps(files)}


def make_control_demo(dest: Path, arch: str, fmt: str = "diffusers") -> Path:
    """A control model for the demo models (CONTROL_ARCHES): a diffusers folder, or one .safetensors with its
    config in the metadata. ipadapter-sd15 writes the adapter file and, beside it, its image encoder
    (demo-clip-vision, a transformers folder or one file), and returns the adapter."""
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if arch == "ipadapter-sd15":
        enc = tiny_clip_vision()
        if fmt == "diffusers":
            out = dest / "demo-clip-vision"
            if out.exists():
                shutil.rmtree(out)
            enc.save_pretrained(out, safe_serialization=True)
        else:
            save_file({k: v.contiguous() for k, v in enc.state_dict().items()},
                      str(dest / "demo-clip-vision.safetensors"), metadata=_module_meta(enc, "clip-vision"))
        out = dest / "demo-ipadapter-sd15.safetensors"
        save_file(tiny_ip_adapter("sd15", enc.config.projection_dim), str(out))
        return out
    if arch in ("controlnet-sd15", "controlnet-sdxl"):
        model = tiny_controlnet(arch.split("-")[1])
    elif arch == "t2i-sd15":
        model = tiny_t2i_adapter()
    else:
        raise ValueError(f"unknown demo control arch {arch!r}; choose one of {CONTROL_ARCHES}")
    if fmt == "diffusers":
        out = dest / f"demo-{arch}"
        if out.exists():
            shutil.rmtree(out)
        model.save_pretrained(out, safe_serialization=True)
        return out
    out = dest / f"demo-{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out), metadata=_module_meta(model, arch))
    return out


def make_demo(dest: Path, arch: str, fmt: str = "diffusers") -> Path:
    """Write a tiny demo model under `dest` and return the path to load (a folder, or one .safetensors file).

    fmt="single-file" writes one .safetensors in the original (CompVis / SGM / BFL) key layout, like community
    checkpoints; its tokenizers are the byte-level demo ones, which the loader rebuilds (see loader.py).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown demo format {fmt!r}; choose one of {FORMATS}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if arch in CONTROL_ARCHES:
        return make_control_demo(dest, arch, fmt)
    if arch == "esrgan":   # an upscaler is one file whatever fmt says
        from safetensors.torch import save_file

        out = dest / "demo-esrgan.safetensors"
        save_file({k: v.contiguous() for k, v in tiny_esrgan().state_dict().items()}, str(out))
        return out
    if arch == "lora-sd15":   # a LoRA for the sd15 demo (same seeded architecture, so the shapes match)
        return tiny_lora(build_pipeline("sd15"), dest / "demo-lora-sd15.safetensors")
    pipe = build_pipeline(arch)
    if fmt == "diffusers":
        out = dest / f"demo-{arch}"
        if out.exists():
            shutil.rmtree(out)
        pipe.save_pretrained(out, safe_serialization=True)
        return out
    from safetensors.torch import save_file

    out = dest / f"demo-{arch}.safetensors"
    sd, meta = pipeline_to_original(pipe, arch)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(out), metadata=meta)
    return out

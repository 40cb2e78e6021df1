"""What is this model file or folder? Answered from names and shapes only, never by loading weights.

Sources: a .safetensors header (tensor names, shapes, metadata), a diffusers folder's config files, or a
.ckpt/.pt/.pth/.bin opened with `torch.load(weights_only=True, mmap=True)` (tensors stay on disk; a pickle that
needs more than plain tensors/containers is refused, never executed).

The answer: {"type": main|lora|embedding|vae|controlnet|t2i_adapter|ip_adapter|clip_vision|upscaler, "base": sd1|sd2|sdxl|flux|null,
"variant": normal|inpaint|depth, "prediction_type": epsilon|v_prediction|flow|null (null: cannot be known from
the file), "format": checkpoint|diffusers}.

Limits of the guesswork (documented in protocol/SPEC.md):
- SD1, SD2 and SDXL VAEs have identical shapes: a 4-channel VAE is "sd1" unless its name, metadata or diffusers
  config (scaling_factor 0.13025) says SDXL.
- An SD2 checkpoint's prediction type (v for 768-v, epsilon for 512-base) is not in its weights: null unless the
  file says so (a `v_pred` key or `modelspec.prediction_type` metadata).
- Bases come from widths where real models differ (text width 768 / 1024 / 2048, FLUX block names); LoRAs and
  embeddings for tiny test models (widths that match no real base) count as sd1 unless they name SDXL parts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from engine.errors import ModelError

from .loader import read_safetensors_header

TYPES = ("main", "lora", "embedding", "vae", "controlnet", "t2i_adapter", "ip_adapter", "clip_vision", "upscaler")
BASES = ("sd1", "sd2", "sdxl", "flux")
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")

_CROSS_DIM_BASE = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def _result(type_: str, base: str | None, fmt: str, variant: str = "normal", prediction: str | None = None) -> dict:
    return {"type": type_, "base": base, "variant": variant, "prediction_type": prediction, "format": fmt}


# ---- reading ------------------------------------------------------------------------------------------------
def read_pickle_shapes(path: Path) -> tuple[dict[str, list[int]], dict]:
    """{flattened key: shape} of a torch pickle, opened safely (weights_only) and memory-mapped when possible."""
    import torch

    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e).lower() and "zip" not in str(e).lower():
                raise
            obj = torch.load(str(path), map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:  # UnpicklingError for anything but tensors/containers, or a broken file
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ModelError(f"{path.name} cannot be opened safely as a torch file (only plain tensors are read, "
                         f"never code): {msg}") from None
    shapes: dict[str, list[int]] = {}
    meta: dict = {}

    def walk(prefix: str, value, depth: int):
        if depth > 6 or len(shapes) > 200000:
            return
        if isinstance(value, torch.Tensor):
            shapes[prefix] = list(value.shape)
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
        elif isinstance(value, (str, int, float)) and prefix and depth <= 1:
            meta[prefix] = value

    if not isinstance(obj, dict):
        raise ModelError(f"{path.name} holds a {type(obj).__name__}, not a state dict")
    # common wrappers: SD checkpoints (state_dict), BasicSR/ESRGAN (params_ema / params)
    for wrapper in ("state_dict", "params_ema", "params", "model"):
        inner = obj.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(k, str) for k in inner) and wrapper != "model":
            obj = inner
            break
    walk("", obj, 0)
    return shapes, meta


def read_shapes(path: Path) -> tuple[dict[str, list[int]], dict]:
    """({tensor name: shape}, metadata) of a single-file model, without reading weights."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        header, meta = read_safetensors_header(path)
        return {k: list(v.get("shape", [])) for k, v in header.items() if isinstance(v, dict)}, meta
    if suffix in PICKLE_SUFFIXES:
        return read_pickle_shapes(path)
    raise ModelError(f"{path.name}: not a model file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")


# ---- single files -------------------------------------------------------------------------------------------
def _has(keys, *prefixes) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _contains(keys, *parts) -> bool:
    return any(p in k for k in keys for p in parts)


def _name_says_xl(name: str, meta: dict) -> bool:
    arch = str(meta.get("modelspec.architecture", "")).lower()
    return "xl" in arch or bool(re.search(r"(^|[^a-z])(sdxl|xl)([^a-z]|$)", name.lower()))


def _embedding_base(dim: int) -> str:
    return "sd2" if dim == 1024 else "sd1"


def _probe_embedding(shapes: dict, name: str) -> dict | None:
    keys = set(shapes)
    if {"clip_l", "clip_g"} & keys:
        return _result("embedding", "sdxl", "checkpoint")
    if "emb_params" in keys:
        return _result("embedding", _embedding_base(shapes["emb_params"][-1]), "checkpoint")
    params = [k for k in keys if k.startswith("string_to_param.")]
    if params:
        return _result("embedding", _embedding_base(shapes[params[0]][-1]), "checkpoint")
    # diffusers textual inversion: {"<token>": tensor[dim] or [n, dim]}
    if len(keys) == 1:
        (k,) = keys
        shape = shapes[k]
        if 1 <= len(shape) <= 2 and (len(shape) == 1 or shape[0] <= 256) and "." not in k.strip("<>"):
            return _result("embedding", _embedding_base(shape[-1]), "checkpoint")
    return None


LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.", ".lora_down.", ".lora_up.", "_lora.down.",
                "_lora.up.", ".lora_A.weight", ".hada_w1_a", ".lokr_w1")


def _probe_lora(shapes: dict, meta: dict, name: str) -> dict | None:
    keys = list(shapes)
    kohya = _has(keys, "lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_transformer_")
    if not kohya and not _contains(keys, *LORA_MARKERS):
        return None
    if _contains(keys, "double_blocks", "single_blocks", "single_transformer_blocks", "context_embedder",
                 "x_embedder") or _has(keys, "transformer.transformer_blocks.", "lora_transformer_"):
        return _result("lora", "flux", "checkpoint")
    if _has(keys, "lora_te2_", "text_encoder_2.", "lora_unet_input_blocks_", "lora_unet_output_blocks_",
            "lora_unet_middle_block_") or _contains(keys, "add_embedding", "label_emb"):
        return _result("lora", "sdxl", "checkpoint")
    for k in keys:  # cross-attention key projections take the text width
        if "attn2" in k and ("to_k" in k) and any(m in k for m in ("down", "lora_A")) and len(shapes[k]) == 2:
            base = _CROSS_DIM_BASE.get(shapes[k][1])
            if base:
                return _result("lora", base, "checkpoint")
    for k in keys:  # text encoder only: its width
        if ("q_proj" in k or "self_attn_q" in k) and any(m in k for m in ("down", "lora_A")) and len(shapes[k]) == 2:
            if shapes[k][1] == 1024:
                return _result("lora", "sd2", "checkpoint")
    if _name_says_xl(name, meta):
        return _result("lora", "sdxl", "checkpoint")
    return _result("lora", "sd1", "checkpoint")


def _cross_dim_base(shapes: dict) -> str | None:
    for k, s in shapes.items():
        if k.endswith("attn2.to_k.weight") and len(s) == 2:
            return _CROSS_DIM_BASE.get(s[1])
    return None


def _probe_controlnet(shapes: dict, meta: dict, name: str) -> dict | None:
    keys = list(shapes)
    if _has(keys, "controlnet_x_embedder.", "controlnet_blocks.", "controlnet_single_blocks."):
        if _contains(keys, "transformer_blocks", "double_blocks", "x_embedder"):
            return _result("controlnet", "flux", "checkpoint")
    if not (_has(keys, "control_model.", "input_hint_block.", "controlnet_cond_embedding.")
            or _contains(keys, "input_hint_block.")):
        return None
    if _contains(keys, "label_emb", "add_embedding"):
        return _result("controlnet", "sdxl", "checkpoint")
    return _result("controlnet", _cross_dim_base(shapes) or "sd1", "checkpoint")


def _probe_ip_adapter(shapes: dict, meta: dict, name: str) -> dict | None:
    """IP-Adapter: image_proj.* (its image projection) + ip_adapter.N.to_k_ip/to_v_ip (cross-attention width)."""
    if not (_has(shapes, "image_proj.") and _has(shapes, "ip_adapter.")):
        return None
    for k, s in shapes.items():
        if k.endswith(".to_k_ip.weight") and len(s) == 2:
            base = _CROSS_DIM_BASE.get(s[1])
            if base is None and _name_says_xl(name, meta):
                base = "sdxl"
            return _result("ip_adapter", base or "sd1", "checkpoint")
    return None


def _probe_t2i_adapter(shapes: dict, meta: dict, name: str) -> dict | None:
    """T2I-Adapter (diffusers layout, adapter.*): SDXL's take a 16x pixel-unshuffle (3*256 input channels)."""
    conv_in = shapes.get("adapter.conv_in.weight")
    if conv_in is None or not _has(shapes, "adapter.body."):
        return None
    base = "sdxl" if (len(conv_in) == 4 and conv_in[1] == 3 * 256) or _name_says_xl(name, meta) else "sd1"
    return _result("t2i_adapter", base, "checkpoint")


def _probe_clip_vision(shapes: dict, meta: dict, name: str) -> dict | None:
    """A CLIP image encoder (transformers layout) without a text tower: what IP-Adapters encode images with."""
    if "vision_model.embeddings.patch_embedding.weight" in shapes and not _has(shapes, "text_model."):
        return _result("clip_vision", None, "checkpoint")
    return None


def _probe_vae(shapes: dict, meta: dict, name: str) -> dict | None:
    for prefix in ("", "first_stage_model.", "vae."):
        dec = shapes.get(prefix + "decoder.conv_in.weight")
        if dec is not None and (prefix + "encoder.conv_in.weight") in shapes:
            if _has(shapes, "model.diffusion_model.", "double_blocks.", "cond_stage_model.", "conditioner."):
                return None  # a whole checkpoint, not a VAE
            latent = dec[1] if len(dec) > 1 else 4
            base = "flux" if latent == 16 else ("sdxl" if _name_says_xl(name, meta) else "sd1")
            return _result("vae", base, "checkpoint")
    return None


_UPSCALER_PATTERNS = [
    ("conv_first.weight", ("RRDB_trunk.", "body.", "layers.", "conv_body.", "residual_groups.")),  # (Real)ESRGAN, SwinIR...
    ("model.0.weight", ("model.1.sub.",)),  # old-architecture ESRGAN
    ("body.0.weight", ("body.1.weight",)),  # Real-ESRGAN compact (SRVGGNetCompact)
]


def _probe_upscaler(shapes: dict, meta: dict, name: str) -> dict | None:
    keys = set(shapes)
    for must, any_of in _UPSCALER_PATTERNS:
        if must in keys and _has(keys, *any_of):
            return _result("upscaler", None, "checkpoint")
    # anything else spandrel recognises (HAT, DAT, OmniSR, ...), tested on shape-only meta tensors
    try:
        import torch

        from .upscale import import_spandrel
        spandrel = import_spandrel()
        if len(shapes) > 5000:
            return None
        sd = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
        for arch in spandrel.MAIN_REGISTRY.architectures("accuracy"):
            try:
                if arch.detect(sd):
                    return _result("upscaler", None, "checkpoint")
            except Exception:
                continue
    except Exception:
        return None
    return None


def _probe_main(shapes: dict, meta: dict, name: str) -> dict | None:
    from .loader import _family_from_keys

    try:
        family = _family_from_keys(shapes and {k: {"shape": s} for k, s in shapes.items()}, name)
    except ModelError:
        return None
    variant, prediction = "normal", None
    if family == "flux":
        img_in = shapes.get("img_in.weight") or shapes.get("model.diffusion_model.img_in.weight") \
            or shapes.get("x_embedder.weight")
        if img_in and len(img_in) == 2:
            variant = {384: "inpaint", 128: "depth"}.get(img_in[1], "normal")
        prediction = "flow"
    else:
        conv_in = shapes.get("model.diffusion_model.input_blocks.0.0.weight")
        if conv_in and len(conv_in) == 4:
            variant = {9: "inpaint", 5: "depth"}.get(conv_in[1], "normal")
        spec = str(meta.get("modelspec.prediction_type", "")).lower()
        if "v_pred" in shapes or spec in ("v", "v_prediction", "v-prediction"):
            prediction = "v_prediction"
        elif spec in ("epsilon", "eps"):
            prediction = "epsilon"
        elif family in ("sd1", "sdxl"):
            prediction = "epsilon"
    return _result("main", family, "checkpoint", variant, prediction)


def classify(shapes: dict[str, list[int]], meta: dict, name: str) -> dict:
    """The probe answer for a single file's {tensor name: shape}; ModelError when nothing matches."""
    if not shapes:
        raise ModelError(f"{name} holds no tensors")
    for fn in (_probe_embedding, _probe_ip_adapter, _probe_t2i_adapter, _probe_clip_vision, _probe_lora, _probe_main, _probe_controlnet, _probe_vae, _probe_upscaler):
        out = fn(shapes, meta, name) if fn is not _probe_embedding else fn(shapes, name)
        if out is not None:
            return out
    raise ModelError(f"{name}: unknown kind of model (not a SD1/SD2/SDXL/FLUX checkpoint, LoRA, embedding, VAE, "
                     "ControlNet, T2I-Adapter, IP-Adapter, CLIP image encoder or an upscaler Paintbridge recognises)")


# ---- diffusers folders --------------------------------------------------------------------------------------
def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"{path.parent.name}/{path.name} is unreadable: {e}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.parent.name}/{path.name} is not a JSON map")
    return data


def _probe_folder(path: Path) -> dict:
    index = path / "model_index.json"
    if index.is_file():
        cls = str(_json(index).get("_class_name", ""))
        variant = "inpaint" if ("Inpaint" in cls or "Fill" in cls) else ("depth" if "Depth" in cls else "normal")
        prediction = None
        sched = path / "scheduler" / "scheduler_config.json"
        if cls.startswith("Flux"):
            base, prediction = "flux", "flow"
            cfg = path / "transformer" / "config.json"
            if cfg.is_file():
                ch = _json(cfg).get("in_channels")
                variant = {384: "inpaint", 128: "depth"}.get(ch, variant)
        elif cls.startswith("StableDiffusionXL"):
            base = "sdxl"
        elif cls.startswith("StableDiffusion"):
            unet = _json(path / "unet" / "config.json")
            base = "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"
            variant = {9: "inpaint", 5: "depth"}.get(unet.get("in_channels"), variant)
        else:
            raise ModelError(f"{path.name} is a {cls or 'diffusers pipeline of unknown class'}, which Paintbridge "
                             "does not support (SD1/SD2/SDXL/FLUX only)")
        if base != "flux":
            if base == "sdxl":
                unet_cfg = path / "unet" / "config.json"
                if unet_cfg.is_file():
                    variant = {9: "inpaint", 5: "depth"}.get(_json(unet_cfg).get("in_channels"), variant)
            prediction = _json(sched).get("prediction_type", "epsilon") if sched.is_file() else "epsilon"
        return _result("main", base, "diffusers", variant, prediction)
    config = path / "config.json"
    if config.is_file():
        cfg = _json(config)
        cls = str(cfg.get("_class_name", ""))
        if cls.startswith("AutoencoderKL"):
            latent = cfg.get("latent_channels", 4)
            base = "flux" if latent == 16 else ("sdxl" if abs(float(cfg.get("scaling_factor", 0.18215)) - 0.13025) < 1e-4
                                                else "sd1")
            return _result("vae", base, "diffusers")
        if cls == "T2IAdapter":
            xl = cfg.get("adapter_type") == "full_adapter_xl"
            return _result("t2i_adapter", "sdxl" if xl else "sd1", "diffusers")
        if "CLIPVisionModel" in " ".join(cfg.get("architectures") or []) or cfg.get("model_type") == "clip_vision_model":
            return _result("clip_vision", None, "diffusers")
        if cls == "FluxControlNetModel":
            return _result("controlnet", "flux", "diffusers")
        if cls.startswith("ControlNet"):
            if cfg.get("addition_embed_type") == "text_time" or cfg.get("cross_attention_dim") == 2048:
                base = "sdxl"
            else:
                base = "sd2" if cfg.get("cross_attention_dim") == 1024 else "sd1"
            return _result("controlnet", base, "diffusers")
    for fname, kind in (("pytorch_lora_weights.safetensors", "lora"), ("learned_embeds.safetensors", "embedding"),
                        ("pytorch_lora_weights.bin", "lora"), ("learned_embeds.bin", "embedding")):
        f = path / fname
        if f.is_file():
            shapes, meta = read_shapes(f)
            out = classify(shapes, meta, path.name)
            out["format"] = "diffusers"
            return out
    raise ModelError(f"{path.name} is a folder but not a diffusers model (no model_index.json or known config)")


def weight_file(path: Path) -> Path | None:
    """The file that holds a folder model's weights, for lora/embedding folders (None for a pipeline)."""
    for fname in ("pytorch_lora_weights.safetensors", "learned_embeds.safetensors", "pytorch_lora_weights.bin",
                  "learned_embeds.bin", "diffusion_pytorch_model.safetensors"):
        if (path / fname).is_file():
            return path / fname
    return None


def probe(path: str | Path) -> dict:
    """Type, base, variant, prediction type and format of a model file or folder. ModelError if unknown."""
    path = Path(path)
    if path.is_dir():
        return _probe_folder(path)
    if not path.exists():
        raise ModelError(f"{path} does not exist")
    if not path.is_file():
        raise ModelError(f"{path} is not a file or folder")
    if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise ModelError(f"{path.name}: not a model file (expected one of {', '.join(CHECKPOINT_SUFFIXES)})")
    shapes, meta = read_shapes(path)
    return classify(shapes, meta, path.name)

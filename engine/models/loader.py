"""Find out what a model file/folder is and load it into a diffusers pipeline, offline.

Two on-disk forms are supported:
- a diffusers folder (model_index.json + component folders);
- one .safetensors file in the original key layout (CompVis SD1/SD2, SGM SDXL, BFL/ComfyUI FLUX), loaded
  with diffusers' from_single_file against a LOCAL config folder. The configs come from the file's own
  safetensors metadata (`paintbridge_configs`, written by our demo models) or else from engine/configs/<family>/,
  with tokenizers built offline from CLIP's BPE table (engine/models/tokenizers.py).

Every from_pretrained/from_single_file gets a local path and local_files_only=True. The one thing ever fetched
is FLUX's T5 tokenizer for a single-file FLUX checkpoint, once, into the data dir's cache.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.errors import ModelError
from engine.models import tokenizers

FAMILIES = ("sd1", "sd2", "sdxl", "flux")
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
META_CONFIGS = "paintbridge_configs"
MAX_HEADER = 100 * 1024 * 1024


@dataclass
class LoadedModel:
    name: str
    path: Path
    family: str  # "sd1" | "sd2" | "sdxl" | "flux"
    pipe: Any  # the diffusers txt2img pipeline holding all components
    device: torch.device
    dtype: torch.dtype
    native_size: int
    prediction_type: str  # "epsilon" | "v_prediction" | "flow"
    # img2img / inpaint variants built with from_pipe (components shared), keyed by mode.
    variants: dict = field(default_factory=dict, repr=False)
    # LoRAs/embeddings put on for the running job (engine/models/patch.py), undone after it.
    patcher: Any = field(default=None, repr=False)
    # The scheduler config the model came with: every job's scheduler is built from it, never from the previous
    # job's (whose karras/trailing choices would otherwise carry over). Filled on first use.
    scheduler_config: Any = field(default=None, repr=False)


def pick_device() -> tuple[torch.device, torch.dtype]:
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.float16
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps"), torch.float16
    return torch.device("cpu"), torch.float32


def read_safetensors_header(path: Path) -> tuple[dict, dict]:
    """(tensors {key: {"dtype", "shape", ...}}, metadata) from the JSON header only; no weights are read."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ModelError(f"{path.name} is not a model file (too short to be .safetensors)")
            (n,) = struct.unpack("<Q", raw)
            if n <= 1 or n > MAX_HEADER or n > path.stat().st_size - 8:
                raise ModelError(f"{path.name} is not a valid .safetensors file (bad header length)")
            header = json.loads(f.read(n))
    except ModelError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"{path.name} is not a readable .safetensors file: {e}") from e
    if not isinstance(header, dict):
        raise ModelError(f"{path.name} is not a valid .safetensors file (header is not a map)")
    meta = header.pop("__metadata__", None) or {}
    return header, meta


def _family_from_keys(keys: dict, name: str) -> str:
    def has_prefix(*prefixes):
        return any(k.startswith(prefixes) for k in keys)

    if has_prefix("double_blocks.", "model.diffusion_model.double_blocks."):
        return "flux"  # BFL / ComfyUI layout
    if "x_embedder.weight" in keys and has_prefix("single_transformer_blocks."):
        return "flux"  # a diffusers-layout transformer saved alone
    if "conditioner.embedders.1.model.ln_final.weight" in keys or "model.diffusion_model.label_emb.0.0.weight" in keys:
        return "sdxl"
    if has_prefix("model.diffusion_model.input_blocks."):
        if "cond_stage_model.model.ln_final.weight" in keys:
            return "sd2"  # OpenCLIP ViT-H text encoder
        for k, v in keys.items():
            if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight"):
                return "sd2" if v["shape"][-1] == 1024 else "sd1"
        return "sd1"
    raise ModelError(
        f"{name} does not look like a Stable Diffusion 1.x/2.x, SDXL or FLUX checkpoint "
        "(no known UNet/transformer weights found); LoRAs, VAEs and other add-ons are not base models"
    )


def _family_from_folder(path: Path) -> str:
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelError(f"{path.name} is a folder without model_index.json, so it is not a diffusers model")
    try:
        cls = json.loads(index.read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{path.name}/model_index.json is unreadable: {e}") from e
    if cls.startswith("StableDiffusionXL"):
        return "sdxl"
    if cls.startswith("Flux"):
        return "flux"
    if cls.startswith("StableDiffusion"):
        try:
            unet = json.loads((path / "unet" / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"{path.name}/unet/config.json is unreadable: {e}") from e
        return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"
    raise ModelError(f"{path.name} is a {cls}, which Paintbridge does not support (SD1/SD2/SDXL/FLUX only)")


def detect_family(path: Path) -> str:
    """Cheap: reads configs or the safetensors header, never the weights."""
    path = Path(path)
    if path.is_dir():
        return _family_from_folder(path)
    if not path.is_file():
        raise ModelError(f"model {path} does not exist")
    if path.suffix.lower() != ".safetensors":
        raise ModelError(
            f"{path.name}: only .safetensors single files are loaded (pickled .ckpt/.pt files can run code)"
        )
    keys, _ = read_safetensors_header(path)
    return _family_from_keys(keys, path.name)


def _pipeline_class(family: str):
    import diffusers

    return {
        "sd1": diffusers.StableDiffusionPipeline,
        "sd2": diffusers.StableDiffusionPipeline,
        "sdxl": diffusers.StableDiffusionXLPipeline,
        "flux": diffusers.FluxPipeline,
    }[family]


def write_embedded_configs(meta: dict, name: str, dest: Path) -> bool:
    """Write the config (and tokenizer) files a single file of ours carries in its header into `dest`; False when
    it carries none. Each path must stay inside `dest`."""
    if META_CONFIGS not in meta:
        return False
    try:
        files = json.loads(meta[META_CONFIGS])
    except ValueError as e:
        raise ModelError(f"{name}: embedded configs are corrupt: {e}") from e
    for rel, text in files.items():
        target = (dest / rel).resolve()
        if dest.resolve() not in target.parents:
            raise ModelError(f"{name}: embedded config path {rel!r} escapes the config folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return True


def _write_config_dir(dest: Path, family: str, meta: dict, keys: dict, name: str,
                      cache_dir: Path | None = None) -> None:
    """Fill `dest` with a diffusers config folder (no weights) that matches the single file."""
    if write_embedded_configs(meta, name, dest):   # our own files (demo models) carry every config they need
        return
    if family == "flux" and not any(k.startswith(("vae.", "first_stage_model.")) for k in keys):
        raise ModelError(
            f"{name} holds only the FLUX transformer; Paintbridge needs an all-in-one FLUX checkpoint "
            "(with VAE and text encoders) or a diffusers folder"
        )
    variant = family
    if family == "flux":
        variant = "flux-dev" if any(k.endswith("guidance_in.in_layer.weight") for k in keys) else "flux-schnell"
    src = CONFIGS_DIR / variant
    if not src.is_dir():
        raise ModelError(f"{name}: no shipped configs for {variant} (expected {src})")
    for f in src.rglob("*"):
        if f.is_file():
            t = dest / f.relative_to(src)
            t.parent.mkdir(parents=True, exist_ok=True)
            t.write_bytes(f.read_bytes())
    # Single files carry no tokenizer: build CLIP's from the BPE table (engine/models/tokenizers.py), offline.
    needed = {"sd1": {"tokenizer": "clip"}, "sd2": {"tokenizer": "open_clip"},
              "sdxl": {"tokenizer": "clip", "tokenizer_2": "open_clip"},
              "flux": {"tokenizer": "clip", "tokenizer_2": "t5"}}[family]
    for sub, kind in needed.items():
        user = tokenizers.user_tokenizer_dir(kind)
        if user is not None:
            shutil.copytree(user, dest / sub, dirs_exist_ok=True)
        elif kind == "t5":
            shutil.copytree(tokenizers.t5_tokenizer_dir(cache_dir), dest / sub, dirs_exist_ok=True)
        else:
            tokenizers.write_clip_tokenizer(dest / sub, kind)


def _check_folder_tokenizers(path: Path) -> None:
    for sub in ("tokenizer", "tokenizer_2"):
        if (path / sub).is_dir():
            tokenizers.check_tokenizer_dir(path / sub, f"{path.name}/{sub}")


def load_model(path: Path, name: str | None = None, device=None, dtype=None,
               cache_dir: Path | None = None) -> LoadedModel:
    """Load a main model. `cache_dir` (the engine's data dir cache) keeps a FLUX T5 tokenizer fetched once."""
    path = Path(path)
    name = name or path.stem
    family = detect_family(path)
    if device is None or dtype is None:
        d, t = pick_device()
        device = device if device is not None else d
        if dtype is None:
            dtype = torch.bfloat16 if (family == "flux" and torch.device(device).type == "cuda") else t
    device = torch.device(device)
    cls = _pipeline_class(family)
    extra = {"safety_checker": None, "requires_safety_checker": False} if family in ("sd1", "sd2") else {}
    try:
        if path.is_dir():
            _check_folder_tokenizers(path)
            pipe = cls.from_pretrained(path, dtype=dtype, local_files_only=True, **extra)
        else:
            keys, meta = read_safetensors_header(path)
            with tempfile.TemporaryDirectory(prefix="pb-config-") as cfg:
                _write_config_dir(Path(cfg), family, meta, keys, path.name, cache_dir)
                pipe = cls.from_single_file(
                    str(path), config=cfg, local_files_only=True, dtype=dtype, **extra
                )
    except ModelError:
        raise
    except Exception as e:  # diffusers/transformers raise many types for bad files; a person needs one message
        raise ModelError(f"cannot load {family} model {path.name}: {type(e).__name__}: {e}") from e
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if family == "flux":
        prediction_type = "flow"
        native = int(getattr(pipe.vae.config, "sample_size", 1024) or 1024)
    else:
        prediction_type = pipe.scheduler.config.get("prediction_type", "epsilon")
        native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    return LoadedModel(
        name=name, path=path, family=family, pipe=pipe, device=device, dtype=dtype,
        native_size=native, prediction_type=prediction_type, scheduler_config=pipe.scheduler.config,
    )


def load_vae(path: Path, family: str, device=None, dtype=None):
    """A VAE (AutoencoderKL) from a diffusers folder or a single .safetensors (original or diffusers key layout),
    for a model of `family`, to use instead of the model's own (the `vae` generate argument)."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if device is None or dtype is None:
        d, t = pick_device()
        device, dtype = device if device is not None else d, dtype if dtype is not None else t
    cfg_family = "sd1" if family in ("sd1", "sd2") else ("flux-dev" if family == "flux" else family)
    config = CONFIGS_DIR / cfg_family / "vae"
    try:
        if path.is_dir():
            vae = AutoencoderKL.from_pretrained(path, dtype=dtype, local_files_only=True)
        else:
            keys, _ = read_safetensors_header(path)
            if any(k.startswith(("encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
                from safetensors.torch import load_file

                vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config))
                missing, unexpected = vae.load_state_dict(load_file(str(path)), strict=False)
                if missing:
                    raise ModelError(f"VAE {path.name} lacks {len(missing)} weights, e.g. {missing[:2]}")
                vae.to(dtype=dtype)
            else:
                vae = AutoencoderKL.from_single_file(str(path), config=str(config.parent), subfolder="vae",
                                                     local_files_only=True, dtype=dtype)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot load VAE {path.name}: {type(e).__name__}: {e}") from e
    return vae.to(device).eval()

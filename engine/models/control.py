"""Control models: ControlNet, T2I-Adapter, IP-Adapter and the CLIP image encoder IP-Adapter needs.

Loading (offline, like main models): a diffusers folder (`config.json`), or one file. A single-file ControlNet in
the original layout (`control_model.*` / `input_blocks.*` + `zero_convs.*`) is converted by diffusers'
`from_single_file` against a config: the file's own (`paintbridge_configs` metadata, written by demo models) or
the one shipped in engine/configs/controlnet/<base>/. A ControlNet or T2I-Adapter saved in diffusers' key layout as
one file gets the same config. IP-Adapter files are plain state dicts (`image_proj.*` + `ip_adapter.*`, flat in a
.safetensors, nested in a .bin). CLIP image encoders: a transformers folder, or one file with its config in its
metadata or shipped (engine/configs/clip_vision/, picked by the encoder's width).

How they act in a denoise (engine/diffusion.py runs this; nothing here touches a pipeline):
- ControlNet / T2I-Adapter: `ControlHook` is a forward pre-hook on the UNet, installed for one pipeline call. At
  each UNet call it works out which controls act at the current step (diffusers' rule for control_guidance_start/
  end: step i of n acts when start <= i/n and (i+1)/n <= end), runs those ControlNets on the same latents,
  timestep, text embeddings and SDXL added conditions the UNet gets, sums their residuals
  (`down_block_additional_residuals`, `mid_block_additional_residual`), and adds the T2I-Adapters' features
  (computed once per call, times strength) as `down_intrablock_additional_residuals`. A step where none acts
  gets no extra arguments at all, so the UNet computes exactly what it does without controls.
- IP-Adapter: `attach_ip_adapters` installs diffusers' `IPAdapterAttnProcessor2_0` on every cross-attention
  layer (through `UNet2DConditionModel._load_ip_adapter_weights`, with the adapters' `to_k_ip`/`to_v_ip`
  weights) and the adapters' image projection as `unet.encoder_hid_proj`; `detach_ip_adapters` puts back the
  processors, projection and config the UNet had. The image embeds are computed once per job by
  `image_embeds()` (CLIP vision; zeros or the encoder's answer for a black image as the negative) and handed to
  the pipeline as `ip_adapter_image_embeds`. The per-step strength (0 outside start/end) is set on the
  processors' `scale` by the same pre-hook, before each UNet call. A module that needs its own attention
  processor (e.g. regional prompts) replaces `attach_ip_adapters`/`set_ip_scales` and keeps this contract.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ModelError
from .loader import CONFIGS_DIR, read_safetensors_header, write_embedded_configs

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ---- what acts in a denoise ----------------------------------------------------------------------------------
@dataclass(eq=False)
class Control:
    """A ControlNet or T2I-Adapter for one denoise: its image at the generation size (HxWx3 uint8 RGB)."""

    name: str
    kind: str            # "controlnet" | "t2i_adapter"
    model: Any           # diffusers ControlNetModel | T2IAdapter
    image: np.ndarray
    strength: float = 1.0
    start: float = 0.0
    end: float = 1.0


@dataclass(eq=False)
class Reference:
    """An IP-Adapter for one denoise, with its image already encoded: embeds/negative (1, 1, D) or (1, 1, T, D)."""

    name: str
    adapter: "IPAdapterWeights"
    embeds: Any
    negative: Any
    strength: float = 0.6
    start: float = 0.0
    end: float = 1.0


def acts(item, step: int, steps: int) -> bool:
    """Whether a control/reference acts at step `step` of `steps` (diffusers' control_guidance_start/end rule)."""
    return item.strength != 0 and not (step / steps < item.start or (step + 1) / steps > item.end)


def ever_acts(item, steps: int) -> bool:
    return any(acts(item, i, steps) for i in range(max(int(steps), 1)))


def control_tensor(image: np.ndarray, width: int, height: int, device, dtype) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1], what ControlNets and T2I-Adapters take (resized if the image is another size)."""
    if image.shape[:2] != (height, width):
        from PIL import Image as PILImage
        image = np.asarray(PILImage.fromarray(image, "RGB").resize((width, height), PILImage.BILINEAR))
    t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
    return t.to(device=device, dtype=dtype)


class ControlHook:
    """The UNet forward pre-hook of one pipeline call (see the module doc). `step` is advanced by the pipeline's
    step-end callback; `steps` is read from the pipeline once it knows how many it runs (img2img runs fewer)."""

    def __init__(self, pipe, controls: list[Control], references: list[Reference], width: int, height: int,
                 steps: int):
        self.pipe, self.controls, self.references = pipe, controls, references
        self.step, self.default_steps = 0, steps
        unet = pipe.unet
        self.conds = [control_tensor(c.image, width, height, unet.device, c.model.dtype) for c in controls]
        self.features: dict[int, list] = {}
        with torch.inference_mode():
            for i, c in enumerate(controls):
                if c.kind == "t2i_adapter":
                    df = int(getattr(c.model, "downscale_factor", 1))
                    if width % df or height % df:
                        from ..errors import BadRequest
                        raise BadRequest(f"T2I-Adapter {c.name!r} needs a generation size that is a multiple of "
                                         f"{df}; this one is {width}x{height}", details={"field": "control"})
                    self.features[i] = [f * c.strength for f in c.model(self.conds[i])]
        self.processors: list = []
        self.handle = None

    @property
    def steps(self) -> int:
        return max(int(getattr(self.pipe, "_num_timesteps", 0) or self.default_steps), 1)

    def __enter__(self):
        # IP-Adapter processors are installed (attach_ip_adapters) before the hook is entered
        self.processors = ip_processors(self.pipe.unet) if self.references else []
        if self.references and not self.processors:
            raise RuntimeError("references given but no IP-Adapter attention processor is installed")
        self.handle = self.pipe.unet.register_forward_pre_hook(self, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def __call__(self, module, args, kwargs):
        i, n = self.step, self.steps
        if self.references:
            set_ip_scales(self.processors, [r.strength if acts(r, i, n) else 0.0 for r in self.references])
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        batch = sample.shape[0]
        down = mid = intra = None
        for k, c in enumerate(self.controls):
            if not acts(c, i, n):
                continue
            if c.kind == "t2i_adapter":
                feats = [f.repeat(batch // f.shape[0], 1, 1, 1).to(sample.dtype) for f in self.features[k]]
                intra = feats if intra is None else [a + b for a, b in zip(intra, feats)]
                continue
            added = kwargs.get("added_cond_kwargs") or {}
            added = {key: added[key] for key in ("text_embeds", "time_ids") if key in added} or None
            cond = self.conds[k].repeat(batch, 1, 1, 1)
            d, m = c.model(sample[:, :c.model.config.in_channels].to(c.model.dtype), timestep,
                           encoder_hidden_states=kwargs["encoder_hidden_states"].to(c.model.dtype),
                           controlnet_cond=cond, conditioning_scale=float(c.strength), added_cond_kwargs=added,
                           return_dict=False)
            down = list(d) if down is None else [a + b for a, b in zip(down, d)]
            mid = m if mid is None else mid + m
        if down is not None:
            kwargs["down_block_additional_residuals"] = [t.to(sample.dtype) for t in down]
            kwargs["mid_block_additional_residual"] = mid.to(sample.dtype)
        if intra is not None:
            kwargs["down_intrablock_additional_residuals"] = list(intra)   # the UNet pops from this list
        return args, kwargs


# ---- IP-Adapter ----------------------------------------------------------------------------------------------
@dataclass
class IPAdapterWeights:
    name: str
    state: dict = field(repr=False)     # {"image_proj": {...}, "ip_adapter": {...}}
    plus: bool                          # image tokens from the encoder's hidden states (IP-Adapter Plus)
    width: int                          # the embedding width it takes from the image encoder

    @property
    def tensors(self) -> dict:          # for ModelCache's size accounting
        return {f"{a}.{k}": v for a, part in self.state.items() for k, v in part.items()}


def ip_processors(unet) -> list:
    from diffusers.models.attention_processor import IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0

    return [p for p in unet.attn_processors.values() if isinstance(p, (IPAdapterAttnProcessor,
                                                                        IPAdapterAttnProcessor2_0))]


def set_ip_scales(processors: list, scales: list[float]) -> None:
    for p in processors:
        p.scale = list(scales)


def attach_ip_adapters(unet, adapters: list[IPAdapterWeights]):
    """Install the adapters' attention processors and image projection; returns what detach_ip_adapters needs."""
    saved = (dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type)
    try:
        unet._load_ip_adapter_weights([a.state for a in adapters], low_cpu_mem_usage=False)
    except Exception:
        detach_ip_adapters(unet, saved)
        raise
    return saved


def detach_ip_adapters(unet, saved) -> None:
    procs, proj, kind = saved
    unet.set_attn_processor(procs)
    unet.encoder_hid_proj = proj
    unet.config.encoder_hid_dim_type = kind


def image_embeds(encoder, rgb: np.ndarray, plus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(embeds, negative) of one HxWx3 uint8 image for an IP-Adapter: CLIP's preprocessing (shorter side to the
    encoder's size, centre crop, CLIP mean/std), then image_embeds (negative: zeros) or, for Plus adapters, the
    penultimate hidden states (negative: those of a black image). Shapes (1, 1, D) / (1, 1, T, D)."""
    from PIL import Image as PILImage

    size = int(encoder.config.image_size)
    im = PILImage.fromarray(rgb, "RGB")
    scale = size / min(im.size)
    im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))), PILImage.BICUBIC)
    left, top = (im.width - size) // 2, (im.height - size) // 2
    im = im.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(im, np.float32) / 255.0).permute(2, 0, 1)[None]
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    x = x.to(device=encoder.device, dtype=encoder.dtype)
    with torch.inference_mode():
        if plus:
            pos = encoder(x, output_hidden_states=True).hidden_states[-2]
            neg = encoder(torch.zeros_like(x), output_hidden_states=True).hidden_states[-2]
        else:
            pos = encoder(x).image_embeds
            neg = torch.zeros_like(pos)
    return pos[:, None], neg[:, None]


def _nest_ip_state(flat: dict) -> dict:
    state: dict = {"image_proj": {}, "ip_adapter": {}}
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        if head in state and rest:
            state[head][rest] = v
    return state


def ip_adapter_width(shapes: dict) -> tuple[bool, int] | None:
    """(plus, width of the image embedding it takes) from an IP-Adapter's flat tensor shapes, or None."""
    if "image_proj.proj.weight" in shapes and "image_proj.norm.weight" in shapes:
        return False, int(shapes["image_proj.proj.weight"][1])
    if "image_proj.proj_in.weight" in shapes:
        return True, int(shapes["image_proj.proj_in.weight"][1])
    return None


def load_ip_adapter(path: Path, name: str) -> IPAdapterWeights:
    from .upscale import load_state_dict

    path = Path(path)
    raw = load_state_dict(path)
    if "image_proj" in raw and isinstance(raw["image_proj"], dict):   # a .bin holds the two parts nested
        flat = {f"{part}.{k}": v for part in ("image_proj", "ip_adapter") for k, v in raw.get(part, {}).items()}
    else:
        flat = raw
    kind = ip_adapter_width({k: list(v.shape) for k, v in flat.items()})
    if kind is None or not any(k.startswith("ip_adapter.") for k in flat):
        raise ModelError(f"{path.name} is not an IP-Adapter Paintbridge can use (image_proj.proj/proj_in and "
                         "ip_adapter.* weights expected)")
    return IPAdapterWeights(name, _nest_ip_state(flat), kind[0], kind[1])


# ---- image encoder -------------------------------------------------------------------------------------------
def clip_vision_widths(path: Path) -> tuple[int, int] | None:
    """(projection width, hidden width) of a CLIP image encoder, from its config or tensor shapes; no weights read."""
    path = Path(path)
    if path.is_dir():
        try:
            cfg = json.loads((path / "config.json").read_text())
        except (OSError, ValueError):
            return None
        vc = cfg.get("vision_config", cfg)
        return int(cfg.get("projection_dim", vc.get("projection_dim", 512))), int(vc.get("hidden_size", 768))
    from .probe import read_shapes

    shapes, _ = read_shapes(path)
    proj = shapes.get("visual_projection.weight")
    if proj and len(proj) == 2:
        return int(proj[0]), int(proj[1])
    return None


def load_clip_vision(path: Path, device, dtype):
    from safetensors.torch import load_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    try:
        if path.is_dir():
            model = CLIPVisionModelWithProjection.from_pretrained(path, local_files_only=True, dtype=dtype)
        else:
            _, meta = read_safetensors_header(path)
            with tempfile.TemporaryDirectory(prefix="pb-clipvision-") as tmp:
                if not write_embedded_configs(meta, path.name, Path(tmp)):
                    widths = clip_vision_widths(path)
                    shipped = {1280: "vit-h", 1664: "vit-bigg"}.get(widths[1] if widths else 0)
                    if shipped is None:
                        raise ModelError(f"{path.name}: no shipped config for a CLIP image encoder of this width "
                                         f"({widths}); use a transformers folder with its config.json")
                    Path(tmp, "config.json").write_text((CONFIGS_DIR / "clip_vision" / shipped / "config.json")
                                                        .read_text())
                config = CLIPVisionConfig.from_pretrained(tmp, local_files_only=True)
            model = CLIPVisionModelWithProjection(config)
            sd = load_file(str(path))
            missing, unexpected = model.load_state_dict(sd, strict=False)
            missing = [k for k in missing if not k.endswith("position_ids")]
            if missing:
                raise ModelError(f"{path.name} lacks {len(missing)} image-encoder weights, e.g. {missing[:2]}")
            model.to(dtype=dtype)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot load image encoder {path.name}: {type(e).__name__}: {e}") from e
    return model.to(device).eval()


# ---- ControlNet / T2I-Adapter --------------------------------------------------------------------------------
def _shipped_config(kind: str, base: str | None, name: str) -> Path:
    folder = CONFIGS_DIR / kind / (base or "sd1")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{name}: no shipped {kind} config for base {base} (expected {folder}/config.json)")
    return folder


def load_controlnet(path: Path, base: str | None, device, dtype):
    from diffusers import ControlNetModel

    path = Path(path)
    try:
        if path.is_dir():
            model = ControlNetModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        else:
            keys, meta = read_safetensors_header(path) if path.suffix.lower() == ".safetensors" else ({}, {})
            with tempfile.TemporaryDirectory(prefix="pb-controlnet-") as tmp:
                cfg = Path(tmp)
                if not write_embedded_configs(meta, path.name, cfg):
                    cfg = _shipped_config("controlnet", base, path.name)
                if any(k.startswith("controlnet_cond_embedding.") for k in keys):   # diffusers key layout
                    from safetensors.torch import load_file

                    model = ControlNetModel.from_config(ControlNetModel.load_config(cfg))
                    missing, _ = model.load_state_dict(load_file(str(path)), strict=False)
                    if missing:
                        raise ModelError(f"{path.name} lacks {len(missing)} ControlNet weights, e.g. {missing[:2]}")
                    model.to(dtype=dtype)
                else:
                    model = ControlNetModel.from_single_file(str(path), config=str(cfg), local_files_only=True,
                                                             torch_dtype=dtype)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot load ControlNet {path.name}: {type(e).__name__}: {e}") from e
    return model.to(device).eval()


def t2i_config_from_shapes(shapes: dict) -> dict:
    """A T2IAdapter config for a diffusers-layout single file (adapter.*), read from its shapes."""
    conv_in = shapes["adapter.conv_in.weight"]
    df = int(round((conv_in[1] / 3) ** 0.5))
    n = len({k.split(".")[2] for k in shapes if k.startswith("adapter.body.")})
    channels = []
    for i in range(n):
        w = shapes.get(f"adapter.body.{i}.resnets.0.block1.weight")
        if w is None:
            raise ModelError("not a full T2I-Adapter (no adapter.body.N.resnets.0.block1)")
        channels.append(int(w[0]))
    res = len({k.split(".")[4] for k in shapes if k.startswith("adapter.body.0.resnets.")})
    xl = df == 16
    return {"in_channels": 3, "channels": channels, "num_res_blocks": res, "downscale_factor": df,
            "adapter_type": "full_adapter_xl" if xl else "full_adapter"}


def load_t2i_adapter(path: Path, device, dtype):
    from diffusers import T2IAdapter
    from safetensors.torch import load_file

    path = Path(path)
    try:
        if path.is_dir():
            model = T2IAdapter.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
        else:
            if path.suffix.lower() != ".safetensors":
                raise ModelError(f"{path.name}: a single-file T2I-Adapter must be .safetensors in diffusers' layout")
            keys, meta = read_safetensors_header(path)
            with tempfile.TemporaryDirectory(prefix="pb-t2i-") as tmp:
                if write_embedded_configs(meta, path.name, Path(tmp)):
                    config = T2IAdapter.load_config(tmp)
                else:
                    config = t2i_config_from_shapes({k: v["shape"] for k, v in keys.items()})
            model = T2IAdapter.from_config(config)
            missing, _ = model.load_state_dict(load_file(str(path)), strict=False)
            if missing:
                raise ModelError(f"{path.name} lacks {len(missing)} T2I-Adapter weights, e.g. {missing[:2]}")
            model.to(dtype=dtype)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"cannot load T2I-Adapter {path.name}: {type(e).__name__}: {e}") from e
    return model.to(device).eval()


# ---- checks before queueing (registry entries only; headers and configs are read, never weights) --------------
CONTROL_TYPES = ("controlnet", "t2i_adapter")


def check_control(entry, family: str, model_name: str) -> None:
    """A ControlNet/T2I-Adapter entry fits a main model of `family`; BadRequest naming what is wrong."""
    from ..errors import BadRequest

    if entry.type not in CONTROL_TYPES:
        raise BadRequest(f"{entry.name!r} is a {entry.type} model, not a ControlNet or T2I-Adapter")
    if entry.family and entry.family != family:
        raise BadRequest(f"{entry.type} {entry.name!r} is for {entry.family} models, but {model_name!r} is {family}")


def find_image_encoder(registry, entry) -> Any:
    """The registered CLIP image encoder (clip_vision) an IP-Adapter entry needs: the first whose embedding width
    is what the adapter takes (projection width; hidden width for Plus adapters). BadRequest naming it if none."""
    from ..errors import BadRequest
    from .probe import read_shapes

    path = Path(entry.path)
    try:
        shapes, _ = read_shapes(path)
    except ModelError as exc:
        raise BadRequest(f"IP-Adapter {entry.name!r}: {exc.message}") from None
    kind = ip_adapter_width(shapes)
    if kind is None:
        raise BadRequest(f"{entry.name!r} is not an IP-Adapter Paintbridge can use")
    plus, width = kind
    for enc in registry.list(type="clip_vision"):
        if enc.missing:
            continue
        try:
            widths = clip_vision_widths(enc.path)
        except ModelError:
            continue
        if widths is not None and widths[1 if plus else 0] == width:
            return enc
    size = {1024: "ViT-H/14 (the SD1.5 IP-Adapters' image_encoder)", 1280: "ViT-bigG/14 (SDXL's) or ViT-H/14",
            1664: "ViT-bigG/14"}.get(width, f"{width}-wide")
    raise BadRequest(f"IP-Adapter {entry.name!r} needs a CLIP image encoder ({size} embeddings); no clip_vision model "
                     "with that width is installed: install its image_encoder (e.g. `paintbridge models install "
                     "PATH`)", details={"missing": "clip_vision", "width": width})

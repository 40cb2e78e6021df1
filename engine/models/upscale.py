"""Upscaler models (ESRGAN family and whatever else spandrel knows) and tiled upscaling in bounded memory.

spandrel imports torchvision at import time for two architectures we do not use for upscaling (LaMa
inpainting, RestoreFormer face restoration). PyPI's torchvision does not work beside our torch build, so when
torchvision is missing, `import_spandrel` lends spandrel a stand-in module for the duration of its import only
(functions that raise if ever called) and removes it again, so nothing else in the process sees a fake
torchvision. Every upscaling architecture (ESRGAN, Real-ESRGAN, SwinIR, HAT, ...) works without it.
"""

from __future__ import annotations

import sys
import threading
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError

_lock = threading.Lock()


def import_spandrel():
    with _lock:
        if "spandrel" in sys.modules:
            return sys.modules["spandrel"]
        try:
            import torchvision  # noqa: F401
            have_tv = True
        except Exception:
            have_tv = False
        injected = []
        if not have_tv:
            def unavailable(*a, **k):
                raise RuntimeError("torchvision is not installed; this spandrel architecture needs it")

            tv = types.ModuleType("torchvision")
            tr = types.ModuleType("torchvision.transforms")
            fn = types.ModuleType("torchvision.transforms.functional")
            fn.InterpolationMode = types.SimpleNamespace(NEAREST=0, BILINEAR=2, BICUBIC=3)
            fn.rotate = fn.normalize = unavailable
            tv.transforms, tr.functional = tr, fn
            for name, mod in (("torchvision", tv), ("torchvision.transforms", tr),
                              ("torchvision.transforms.functional", fn)):
                sys.modules[name] = mod
                injected.append(name)
        try:
            import spandrel
        except ImportError as e:
            raise ModelError(f"upscaler support needs the 'spandrel' package ({e})") from None
        finally:
            for name in injected:
                sys.modules.pop(name, None)
        return spandrel


def load_state_dict(path: Path) -> dict:
    """Tensors of a .safetensors / .pth / .pt / .ckpt file; pickles are read with weights_only=True."""
    import torch

    path = Path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"cannot read {path.name}: {type(e).__name__}: {str(e)[:200]}") from None


@dataclass
class Upscaler:
    name: str
    descriptor: Any      # spandrel ImageModelDescriptor
    scale: int
    device: Any
    dtype: Any

    @property
    def size_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.descriptor.model.parameters())


def load_upscaler(path: Path, name: str, device=None) -> Upscaler:
    import torch

    from .loader import pick_device

    spandrel = import_spandrel()
    sd = load_state_dict(path)
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except Exception as e:
        raise ModelError(f"{path.name} is not an upscaler spandrel recognises: {str(e)[:200]}") from None
    if not isinstance(desc, spandrel.ImageModelDescriptor):
        raise ModelError(f"{path.name} is a {desc.architecture.name} model, not an image upscaler")
    dev, half = pick_device()
    device = torch.device(device) if device is not None else dev
    dtype = torch.float32
    if device.type == "cuda" and desc.supports_half:
        dtype = torch.float16
    desc.to(device)
    desc.model.to(dtype)
    desc.eval()
    return Upscaler(name=name, descriptor=desc, scale=int(desc.scale), device=device, dtype=dtype)


def _run(up: Upscaler, rgb: np.ndarray) -> np.ndarray:
    """One model pass over a whole (small) uint8 HxWx3 array -> uint8 (H*s)x(W*s)x3."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(rgb)).to(up.device).permute(2, 0, 1)[None].to(up.dtype) / 255.0
    req = up.descriptor.size_requirements
    h, w = x.shape[-2:]
    ph = pw = 0
    mult = max(1, getattr(req, "multiple_of", 1))
    minimum = max(0, getattr(req, "minimum", 0))
    ph = max(minimum - h, (-h) % mult, 0)
    pw = max(minimum - w, (-w) % mult, 0)
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate" if (ph < h and pw < w) else "constant")
    with torch.inference_mode():
        y = up.descriptor(x)
    y = y[..., : h * up.scale, : w * up.scale]
    y = (y[0].float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return y


def upscale_pass(up: Upscaler, rgb: np.ndarray, tile: int = 512, pad: int = 32,
                 is_canceled=None, on_tile=None) -> np.ndarray:
    """One pass of the model's own factor, in tiles of `tile` px (input side) that each see `pad` px of
    context around them; only each tile's centre is kept, so seams match the untiled result closely and
    memory is one tile's activations plus the uint8 output."""
    h, w = rgb.shape[:2]
    s = up.scale
    if tile <= 0 or (h <= tile and w <= tile):
        out = _run(up, rgb)
        if on_tile is not None:
            on_tile(1, 1)
        return out
    out = np.empty((h * s, w * s, 3), np.uint8)
    ys, xs = list(range(0, h, tile)), list(range(0, w, tile))
    n, done = len(ys) * len(xs), 0
    for y0 in ys:
        for x0 in xs:
            if is_canceled is not None and is_canceled():
                from engine.errors import Canceled
                raise Canceled("canceled while upscaling")
            y1, x1 = min(h, y0 + tile), min(w, x0 + tile)
            cy0, cx0 = max(0, y0 - pad), max(0, x0 - pad)
            cy1, cx1 = min(h, y1 + pad), min(w, x1 + pad)
            res = _run(up, rgb[cy0:cy1, cx0:cx1])
            oy, ox = (y0 - cy0) * s, (x0 - cx0) * s
            out[y0 * s:y1 * s, x0 * s:x1 * s] = res[oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
            done += 1
            if on_tile is not None:
                on_tile(done, n)
    return out


def upscale_image(up: Upscaler, rgba: np.ndarray, width: int, height: int, tile: int = 512, pad: int = 32,
                  is_canceled=None, on_tile=None) -> np.ndarray:
    """RGBA uint8 -> RGBA uint8 of exactly width x height: model passes until the image is at least that big
    (at most 3), then Lanczos to the exact size. Alpha is scaled with Lanczos."""
    from PIL import Image as PILImage

    rgb = np.ascontiguousarray(rgba[..., :3])
    h, w = rgb.shape[:2]
    passes = 0
    while (rgb.shape[1] < width or rgb.shape[0] < height) and passes < 3:
        rgb = upscale_pass(up, rgb, tile, pad, is_canceled, on_tile)
        passes += 1
    if passes == 0 and (w, h) != (width, height):
        pass  # downscale only: no model pass needed
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(PILImage.fromarray(rgb, "RGB").resize((width, height), PILImage.LANCZOS))
    alpha = rgba[..., 3]
    if alpha.shape != (height, width):
        if (alpha == 255).all():
            alpha = np.full((height, width), 255, np.uint8)
        else:
            alpha = np.asarray(PILImage.fromarray(alpha, "L").resize((width, height), PILImage.LANCZOS))
    return np.concatenate([rgb, alpha[..., None]], axis=2)

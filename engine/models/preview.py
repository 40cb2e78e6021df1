"""Cheap latent -> RGB previews: one 3xC linear map per family, no VAE decode.

Factor tables are the widely used per-family approximations (as in ComfyUI's latent_formats), fitted on
scaled model-space latents, which is exactly what diffusers pipelines hold during denoising.
"""

from __future__ import annotations

import numpy as np
import torch

MAX_SIDE = 256

# rows: latent channels; columns: R, G, B. Output is roughly in [-1, 1].
SD1_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
SD1_BIAS = [0.0, 0.0, 0.0]
SDXL_FACTORS = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
]
SDXL_BIAS = [0.1084, -0.0175, -0.0011]
FLUX_FACTORS = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
]
FLUX_BIAS = [-0.0329, -0.0718, -0.0851]

TABLES = {
    "sd1": (SD1_FACTORS, SD1_BIAS),
    "sd2": (SD1_FACTORS, SD1_BIAS),  # SD2 shares the SD1 VAE
    "sdxl": (SDXL_FACTORS, SDXL_BIAS),
    "flux": (FLUX_FACTORS, FLUX_BIAS),
}
_NP = {k: (np.asarray(f, np.float32), np.asarray(b, np.float32)) for k, (f, b) in TABLES.items()}


def unpack_flux(latents: torch.Tensor, height: int | None = None, width: int | None = None) -> torch.Tensor:
    """(B, h/2*w/2, C*4) packed FLUX latents -> (B, C, h, w). Without sizes the latent is assumed square."""
    b, n, c4 = latents.shape
    if height is None or width is None:
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError("packed FLUX latents of a non-square image need height and width to unpack")
        ph = pw = side
    else:
        ph, pw = height // 2, width // 2
    x = latents.view(b, ph, pw, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, ph * 2, pw * 2)


def latent_preview(family: str, latents: torch.Tensor) -> np.ndarray:
    """HxWx3 uint8 from the first batch item; one pixel per latent pixel, strided down to <= MAX_SIDE."""
    if latents.ndim == 3:
        latents = unpack_flux(latents)
    x = latents[0].detach()
    step = max(1, -(-max(x.shape[-2:]) // MAX_SIDE))  # ceil division
    if step > 1:
        x = x[:, ::step, ::step]
    x = x.to("cpu", torch.float32).numpy()
    factors, bias = _NP[family]
    if x.shape[0] != factors.shape[0]:
        raise ValueError(f"{family} preview expects {factors.shape[0]} latent channels, got {x.shape[0]}")
    rgb = np.tensordot(factors.T, x, axes=1) + bias[:, None, None]  # (3, H, W)
    rgb = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(rgb.transpose(1, 2, 0))

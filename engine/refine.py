"""Refine an image of any size in tiles at the model's native size: upscale with a model, and hires txt2img.

Each tile is plain img2img (diffusion.denoise, then decode) of the unrefined pixels under it, seeded with
seed + its index, and blended into the image with its neighbours (engine/tiles.py Merge: a smoothstep
across each overlap). So a one-tile layout is exactly img2img of the image, every sampler and model family works as
it does for img2img, and memory is one tile's activations plus two uint8 copies of the image and one strip of tiles, whatever its
size. Why blended tiles rather than latents averaged every step (MultiDiffusion): protocol/SPEC.md,
"Upscale and refine".
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
from PIL import Image as PILImage

from engine import diffusion, tiles
from engine.errors import Canceled
from engine.models.loader import LoadedModel

log = logging.getLogger("paintbridge.refine")

PREVIEW_SIDE = 256   # job.progress previews are at most this many px a side


def tile_multiple(model: LoadedModel) -> int:
    return 16 if model.family == "flux" else tiles.MULTIPLE


def plan(width: int, height: int, tile: int, overlap: int, multiple: int = tiles.MULTIPLE) -> list[tiles.Tile]:
    """The tiles an image of width x height is refined in: the image padded up to `multiple`, tiles of `tile`
    px (rounded down to `multiple`), overlap at most half a tile."""
    pw, ph = -(-width // multiple) * multiple, -(-height // multiple) * multiple
    tile = max(multiple, tile // multiple * multiple)
    return tiles.layout(pw, ph, tile, min(overlap, tile // 2), multiple)


def refine(
    model: LoadedModel,
    cond: diffusion.Conditioning,
    rgba: np.ndarray,
    *,
    steps: int,
    guidance: float,
    seed: int,
    strength: float,
    tile: int,
    overlap: int,
    scheduler: str = "euler",
    schedule: str = "default",
    extras: Callable[[tiles.Tile], dict] | None = None,
    on_step: Callable[[int, int, int, int, np.ndarray], None] | None = None,
    is_canceled: Callable[[], bool] | None = None,
) -> np.ndarray:
    """rgba (H, W, 4 uint8) refined in tiles -> a new (H, W, 4) array; alpha is kept as it is.

    extras(tile) -> more diffusion.denoise arguments for that tile: the one place where a conditioning layer
    that has a position in the image (a control image, a region mask) is cut to the tile's box.
    on_step(step, total, tile (1-based), tiles, preview RGB of the whole image, <= 256 px a side, or None)."""
    h, w = rgba.shape[:2]
    multiple = tile_multiple(model)
    layout = plan(w, h, tile, overlap, multiple)
    ph, pw = layout[-1].y + layout[-1].h, layout[-1].x + layout[-1].w
    src = rgba   # every tile starts from the unrefined pixels; `out` collects the blended results
    if (pw, ph) != (w, h):   # padded with its edge pixels to the model's multiple; cut off at the end
        src = np.pad(rgba, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
    out = np.array(src)
    merge = tiles.Merge(out[..., :3])
    preview = Preview(out) if on_step is not None else None
    for t in layout:
        if is_canceled is not None and is_canceled():
            raise Canceled(f"canceled before tile {t.index + 1} of {len(layout)}")

        def step(i, total, latents, t=t):
            try:
                rgb = preview.with_tile(t, diffusion.preview(model, latents))
            except Exception:   # a preview is a nicety; never fail a job for it
                log.debug("preview failed", exc_info=True)
                rgb = None
            on_step(i, total, t.index + 1, len(layout), rgb)

        latents = diffusion.denoise(
            model, cond, width=t.w, height=t.h, steps=steps, guidance=guidance, seed=seed + t.index,
            scheduler=scheduler, schedule=schedule, strength=strength,
            init_image=np.ascontiguousarray(src[t.y:t.y + t.h, t.x:t.x + t.w, :3]),
            on_step=step if on_step is not None else None, is_canceled=is_canceled,
            **(extras(t) if extras is not None else {}))
        rgb = diffusion.decode(model, latents)
        merge.add(t, rgb)
        if preview is not None:
            preview.paste(t, rgb)
    return out[:h, :w] if (pw, ph) != (w, h) else out


class Preview:
    """The whole image at most PREVIEW_SIDE px a side: the input, with each tile pasted in once refined and
    the running tile drawn from its latents, so a client's preview shows the image growing tile by tile."""

    def __init__(self, rgba: np.ndarray):
        h, w = rgba.shape[:2]
        self.scale = min(1.0, PREVIEW_SIDE / max(w, h))
        self.size = (max(1, round(w * self.scale)), max(1, round(h * self.scale)))
        self.rgb = np.array(_resized(rgba[..., :3], *self.size))   # its own, writable: tiles are pasted in

    def _box(self, t: tiles.Tile) -> tuple[int, int, int, int]:
        x0, y0 = int(t.x * self.scale), int(t.y * self.scale)
        x1 = min(self.size[0], max(x0 + 1, round((t.x + t.w) * self.scale)))
        y1 = min(self.size[1], max(y0 + 1, round((t.y + t.h) * self.scale)))
        return x0, y0, x1, y1

    def paste(self, t: tiles.Tile, rgb: np.ndarray):
        x0, y0, x1, y1 = self._box(t)
        self.rgb[y0:y1, x0:x1] = _resized(rgb, x1 - x0, y1 - y0)

    def with_tile(self, t: tiles.Tile, rgb: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self._box(t)
        out = self.rgb.copy()
        out[y0:y1, x0:x1] = _resized(rgb, x1 - x0, y1 - y0)
        return out


def _resized(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgb.shape[1] == width and rgb.shape[0] == height:
        return rgb
    img = PILImage.fromarray(np.ascontiguousarray(rgb), "RGB")
    return np.asarray(img.resize((width, height), PILImage.BILINEAR))

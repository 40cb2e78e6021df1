"""Tile layouts for refining an image in tiles (upscale with a model, hires txt2img), and how tiles are merged.

Pure arithmetic on sizes, no pixels and no torch: the layout of an image is a function of its size, the tile
size and the overlap only, and the default overlap a function of the tile size and the strength. Merge is how engine/refine.py
blends the refined tiles back into one image.

Tiles are laid out in rows, top to bottom, left to right. Along each axis the fewest tiles that cover the side
with at least the asked overlap are spread evenly, so the first tile starts at 0, the last ends at the side and
every overlap is at least the asked one (usually a little more).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MULTIPLE = 8          # tile sides are multiples of this (the VAE's; FLUX asks 16: the caller passes it)
MIN_TILE = 64
MAX_TILE = 2048


@dataclass(frozen=True)
class Tile:
    index: int        # 0-based, in the order tiles are refined
    x: int
    y: int
    w: int
    h: int
    left: int         # pixels shared with the tile on the left (0: none), which this one is blended over
    top: int          # pixels shared with the row above (0: none)

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.w, self.h


def default_overlap(tile: int, strength: float) -> int:
    """Overlap in pixels for `tile`-px tiles: an eighth of the tile, plus a quarter of it times the strength
    (more change per tile needs a wider band to blend the disagreement away), rounded up to a multiple of 8.
    512-px tiles: 64 px at strength 0, 104 at 0.3, 192 at 1."""
    return int(math.ceil((tile / 8 + tile / 4 * float(strength)) / MULTIPLE) * MULTIPLE)


def axis_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one side of `size` px (tile <= size)."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    n = 1 + math.ceil((size - tile) / stride)
    span = size - tile
    return [round(i * span / (n - 1)) for i in range(n)]


def layout(width: int, height: int, tile: int, overlap: int, multiple: int = MULTIPLE) -> list[Tile]:
    """The tiles of a width x height image (both multiples of `multiple`): each tile is tile x tile px, or the
    image's side where that is smaller; 0 <= overlap <= tile / 2."""
    if width % multiple or height % multiple or width <= 0 or height <= 0:
        raise ValueError(f"the image {width}x{height} must be a positive multiple of {multiple} on each side")
    if tile % multiple or tile < multiple:
        raise ValueError(f"tile {tile} must be a positive multiple of {multiple}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap {overlap} must be between 0 and half the tile ({tile // 2})")
    tw, th = min(tile, width), min(tile, height)
    xs, ys = axis_starts(width, tw, overlap), axis_starts(height, th, overlap)
    tiles = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            left = xs[i - 1] + tw - x if i else 0
            top = ys[j - 1] + th - y if j else 0
            tiles.append(Tile(len(tiles), x, y, tw, th, left, top))
    return tiles


def ramp(n: int, shared: int) -> np.ndarray:
    """Weights (float32, length n) of a new tile along one axis: a smoothstep from ~0 to ~1 across the `shared`
    pixels it overlaps the previous tile by, then 1. No overlap: 1 everywhere."""
    w = np.ones(n, np.float32)
    if shared > 0:
        t = (np.arange(shared, dtype=np.float32) + 0.5) / shared
        w[:shared] = t * t * (3 - 2 * t)
    return w


def blend(dst: np.ndarray, patch: np.ndarray, x: int, y: int, left: int, top: int) -> None:
    """Blend patch (h, w, c uint8) into dst at (x, y) in place: its weight rises across its first `left`
    columns and first `top` rows (ramp), and is 1 elsewhere. Memory: one patch's worth of floats."""
    h, w = patch.shape[:2]
    region = dst[y:y + h, x:x + w]
    if left == 0 and top == 0:
        region[...] = patch
        return
    wgt = (ramp(h, top)[:, None] * ramp(w, left)[None, :])[..., None]
    mixed = region.astype(np.float32) * (1.0 - wgt) + patch.astype(np.float32) * wgt
    region[...] = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


class Merge:
    """Blends refined tiles, given in layout order, into `out` (H, W, c uint8): the tiles of a row into a strip
    across the columns they share, then each finished strip into the image across the rows it shares with the
    row above. Every blend is along one axis, so where four tiles meet no tile's edge is left standing (a
    tile-by-tile 2-D blend leaves the edge of the tile before it visible there). A one-tile layout puts the
    tile in as it is. Memory beyond `out`: one strip, a tile high and the image wide."""

    def __init__(self, out: np.ndarray):
        self.out = out
        self.strip: np.ndarray | None = None

    def add(self, t: Tile, patch: np.ndarray) -> None:
        if t.x == 0:
            self.strip = np.zeros((t.h,) + self.out.shape[1:], np.uint8)
        blend(self.strip, patch, t.x, 0, t.left, 0)
        if t.x + t.w == self.out.shape[1]:   # the row is complete
            blend(self.out, self.strip, 0, t.y, 0, t.top)
            self.strip = None

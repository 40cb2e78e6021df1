"""Host-independent pixel helpers: the layer format on the wire, channel order, row order, masks, regions.

Pure Python on purpose (no numpy in Krita or GIMP): every loop here runs inside CPython's C slice and bytes
operations, not per pixel in Python.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

BPP = {"rgba8": 4, "gray8": 1}


@dataclass
class Pixels:
    """Raw 8-bit pixels: row-major, top-left origin, sRGB, straight alpha (the wire layer format)."""

    data: bytes
    w: int
    h: int
    format: str = "rgba8"
    x: int = 0
    y: int = 0

    def __post_init__(self):
        if self.format not in BPP:
            raise ValueError(f"unknown pixel format {self.format!r}")
        if len(self.data) != self.w * self.h * BPP[self.format]:
            raise ValueError(f"{self.format} {self.w}x{self.h} needs {self.w * self.h * BPP[self.format]} bytes, "
                             f"got {len(self.data)}")

    def sha256(self) -> str:
        return sha256_hex(self.data)

    def layer(self, sha256: str | None = None) -> dict:
        """The wire layer map referencing this data's blob."""
        return {"sha256": sha256 or self.sha256(), "w": self.w, "h": self.h, "format": self.format,
                "x": self.x, "y": self.y}


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_SWAP_CHUNK = 1 << 18   # bytes per slice: each holds the GIL for about a millisecond, not the whole image


def swap_red_blue(data: bytes) -> bytes:
    """BGRA <-> RGBA (its own inverse). Krita's pixelData is BGRA for RGBA/U8 documents.

    Done in slices of _SWAP_CHUNK bytes: it runs on a worker thread, and one slice over a 4K image (33 MB) would
    hold the GIL for 50-100 ms, stalling the host's UI thread for as long (issue 15, K4). After each slice it
    gives the GIL away (sleep(0)), so a UI thread waiting for it gets it at once instead of after the
    interpreter's switch interval (5 ms) - paid again at each of its Qt calls. The copy is made slice by slice
    too: no single 33 MB memcpy under the GIL."""
    out = bytearray(len(data))
    src = memoryview(data)
    for start in range(0, len(data), _SWAP_CHUNK):
        end = min(len(data), start + _SWAP_CHUNK)
        out[start:end] = src[start:end]
        out[start:end:4] = data[start + 2:end:4]
        out[start + 2:end:4] = data[start:end:4]
        time.sleep(0)
    return bytes(out)


bgra_to_rgba = swap_red_blue
rgba_to_bgra = swap_red_blue


def flip_rows(data: bytes, w: int, h: int, bpp: int) -> bytes:
    """Top-down <-> bottom-up (Blender stores the bottom row first)."""
    stride = w * bpp
    view = memoryview(data)
    return b"".join(view[(h - 1 - r) * stride:(h - r) * stride] for r in range(h))


def crop(data: bytes, w: int, h: int, bpp: int, x: int, y: int, cw: int, ch: int) -> bytes:
    if x < 0 or y < 0 or x + cw > w or y + ch > h or cw <= 0 or ch <= 0:
        raise ValueError(f"crop {cw}x{ch}+{x}+{y} outside {w}x{h}")
    stride = w * bpp
    view = memoryview(data)
    return b"".join(view[(y + r) * stride + x * bpp:(y + r) * stride + (x + cw) * bpp] for r in range(ch))


def alpha_of(rgba: bytes) -> bytes:
    return bytes(rgba[3::4])


def mask_from_transparency(rgba: bytes) -> bytes:
    """gray8 mask: 255 where the pixel is fully transparent (to be generated), 0 elsewhere."""
    return alpha_of(rgba).translate(_TRANSPARENT_TO_MASK)


_TRANSPARENT_TO_MASK = bytes([255] + [0] * 255)


def mask_bounds(mask: bytes, w: int, h: int) -> tuple[int, int, int, int] | None:
    """(x, y, w, h) of the non-zero part of a gray8 mask, or None when it is empty."""
    top = bottom = None
    left, right = w, -1
    view = memoryview(mask)
    for r in range(h):
        row = bytes(view[r * w:(r + 1) * w])
        stripped = row.lstrip(b"\x00")
        if not stripped:
            continue
        if top is None:
            top = r
        bottom = r
        left = min(left, w - len(stripped))
        right = max(right, len(row.rstrip(b"\x00")) - 1)
    if top is None:
        return None
    return left, top, right - left + 1, bottom - top + 1


def clear_outside(data: bytes, w: int, h: int, keep: tuple[int, int, int, int]) -> bytes:
    """4-byte pixels (RGBA or BGRA: alpha is last in both) made transparent outside the keep rect (x, y, w, h):
    an outpaint request for margins a host just added, whatever its layers' default colour is."""
    out = bytearray(data)
    kx, ky, kw, kh = keep
    stride = w * 4
    for y in range(h):
        row = memoryview(out)[y * stride:(y + 1) * stride]
        if ky <= y < ky + kh:
            row[3:kx * 4:4] = bytes(len(range(3, kx * 4, 4)))
            row[(kx + kw) * 4 + 3::4] = bytes(len(range((kx + kw) * 4 + 3, stride, 4)))
        else:
            row[3::4] = bytes(w)
    return bytes(out)


def solid(w: int, h: int, rgba: tuple[int, int, int, int]) -> bytes:
    return bytes(rgba) * (w * h)


def paste(base: Pixels, patch: Pixels) -> Pixels:
    """A copy of base with patch written over it at the patch's document position (both rgba8 or both gray8).

    For hosts without positioned layers (Blender images): an inpaint result covers only the mask's bounds."""
    if base.format != patch.format:
        raise ValueError(f"cannot paste {patch.format} onto {base.format}")
    bpp = BPP[base.format]
    dx, dy = patch.x - base.x, patch.y - base.y
    x0, y0 = max(0, dx), max(0, dy)
    x1, y1 = min(base.w, dx + patch.w), min(base.h, dy + patch.h)
    out = bytearray(base.data)
    if x1 > x0 and y1 > y0:
        bstride, pstride = base.w * bpp, patch.w * bpp
        for row in range(y0, y1):
            src = (row - dy) * pstride + (x0 - dx) * bpp
            dst = row * bstride + x0 * bpp
            out[dst:dst + (x1 - x0) * bpp] = patch.data[src:src + (x1 - x0) * bpp]
    return Pixels(bytes(out), base.w, base.h, base.format, base.x, base.y)


def pad(px: Pixels, left: int, top: int, right: int, bottom: int) -> Pixels:
    """px with transparent margins added (an outpaint request that grows the image); x, y move with the
    top-left corner, so the old pixels keep their document position."""
    if min(left, top, right, bottom) < 0:
        raise ValueError("margins are 0 or more")
    if not (left or top or right or bottom):
        return px
    bpp = BPP[px.format]
    w, h = px.w + left + right, px.h + top + bottom
    out = bytearray(w * h * bpp)
    stride, pstride = w * bpp, px.w * bpp
    for row in range(px.h):
        dst = (row + top) * stride + left * bpp
        out[dst:dst + pstride] = px.data[row * pstride:(row + 1) * pstride]
    return Pixels(bytes(out), w, h, px.format, px.x - left, px.y - top)


def context_region(bounds: tuple[int, int, int, int], img_w: int, img_h: int) -> tuple[int, int, int, int]:
    """The mask bounds grown by context padding (a quarter of their size, at least 16 px), inside the image.

    The engine generates inpaint regions with this context; plug-ins send the same region, nothing more."""
    bx, by, bw, bh = bounds
    pad = max(16, int(round(max(bw, bh) * 0.25)))
    x0, y0 = max(0, bx - pad), max(0, by - pad)
    x1, y1 = min(img_w, bx + bw + pad), min(img_h, by + bh + pad)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)   # empty when the bounds lie outside the image


def round8(v: int) -> int:
    """Generation sizes are multiples of 8 (the engine refuses others): round up."""
    return max(8, (int(v) + 7) // 8 * 8)

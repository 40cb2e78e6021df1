"""Control image preprocessors that need no downloaded weights (numpy and Pillow only).

Each takes an RGBA uint8 image and returns an RGB uint8 image of the same size, in what control models expect:
white (or bright) features on black.

- `none`: the image as it is (a depth render, a pose drawing, a white-on-black scribble).
- `canny`: Canny edges, OpenCV's algorithm (3x3 Sobel, L1 gradient, non-maximum suppression in four directions,
  hysteresis over 8 neighbours) with thresholds 100/200, as `cv2.Canny(gray, 100, 200)`.
- `scribble`: XDoG lines: a fine blur minus a wide blur, thresholded (the "scribble_xdog" annotator).
- `lineart`: the "standard" line-art annotator (a wide blur minus the image, normalised by its median).
- `invert`: 255 - image: black lines on white paper become the white lines on black line ControlNets take.
- `blur`: a Gaussian blur (for blur/tile ControlNets that add detail); `tile`: down- then up-sampled (the tile
  ControlNet's "resample").

Transparency: for the line methods (canny, scribble, lineart, invert) transparent pixels are white paper, so black
lines drawn on an empty layer work; for the others they are black (nothing there).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

METHODS = ("none", "canny", "scribble", "lineart", "invert", "blur", "tile")
_PAPER = ("canny", "scribble", "lineart", "invert")


def flatten(rgba: np.ndarray, background: int) -> np.ndarray:
    """RGB of an RGBA image composited over a grey level (0 black, 255 white)."""
    if rgba.shape[-1] == 3:
        return rgba
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * a + float(background) * (1.0 - a)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def gray(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's RGB->gray (0.299 R + 0.587 G + 0.114 B, fixed point, rounded)."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    return ((r * 4899 + g * 9617 + b * 1868 + (1 << 13)) >> 14).astype(np.uint8)


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel dx, dy (int32) with replicated borders, as OpenCV's Canny computes them."""
    p = np.pad(img.astype(np.int32), 1, mode="edge")
    tl, tc, tr = p[:-2, :-2], p[:-2, 1:-1], p[:-2, 2:]
    ml, mr = p[1:-1, :-2], p[1:-1, 2:]
    bl, bc, br = p[2:, :-2], p[2:, 1:-1], p[2:, 2:]
    dx = (tr + 2 * mr + br) - (tl + 2 * ml + bl)
    dy = (bl + 2 * bc + br) - (tl + 2 * tc + tr)
    return dx, dy


def canny(img: np.ndarray, low: int = 100, high: int = 200) -> np.ndarray:
    """Canny edges of a gray uint8 image: 255 on edges, 0 elsewhere (OpenCV's Canny, L1 gradient)."""
    if low > high:
        low, high = high, low
    h, w = img.shape
    dx, dy = _sobel(img)
    mag = np.abs(dx) + np.abs(dy)
    m = np.pad(mag, 1)                       # magnitudes outside the image are 0
    up, down = m[:-2, 1:-1], m[2:, 1:-1]
    left, right = m[1:-1, :-2], m[1:-1, 2:]
    ul, ur, dl, dr = m[:-2, :-2], m[:-2, 2:], m[2:, :-2], m[2:, 2:]
    shift = 15
    tg22 = int(0.4142135623730950488016887242097 * (1 << shift) + 0.5)
    xs = np.abs(dx).astype(np.int64)
    ys = np.abs(dy).astype(np.int64) << shift
    tg22x = xs * tg22
    tg67x = tg22x + (xs << (shift + 1))
    horizontal = ys < tg22x
    vertical = ys > tg67x
    same_sign = (dx ^ dy) >= 0
    diag = np.where(same_sign, (mag > ul) & (mag > dr), (mag > ur) & (mag > dl))
    peak = np.where(horizontal, (mag > left) & (mag >= right),
                    np.where(vertical, (mag > up) & (mag >= down), diag))
    candidate = peak & (mag > low)
    strong = candidate & (mag > high)
    # hysteresis: grow the strong edges into 8-connected candidates
    edges = strong.copy()
    frontier = strong
    while frontier.any():
        f = np.pad(frontier, 1)
        near = np.zeros_like(frontier)
        for oy in (0, 1, 2):
            for ox in (0, 1, 2):
                if oy != 1 or ox != 1:
                    near |= f[oy:oy + h, ox:ox + w]
        frontier = near & candidate & ~edges
        edges |= frontier
    return np.where(edges, 255, 0).astype(np.uint8)


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 HxWxC array in 0..255 (Pillow's, per channel, on rounded values)."""
    out = np.empty_like(a)
    for c in range(a.shape[2]):
        ch = Image.fromarray(np.clip(np.rint(a[..., c]), 0, 255).astype(np.uint8), "L")
        out[..., c] = np.asarray(ch.filter(ImageFilter.GaussianBlur(sigma)), np.float32)
    return out


def scribble(rgb: np.ndarray, threshold: float = 32.0) -> np.ndarray:
    x = rgb.astype(np.float32)
    g1, g2 = _blur(x, 0.5), _blur(x, 5.0)
    dog = np.clip(255.0 - np.min(g2 - g1, axis=2), 0, 255)
    lines = 2.0 * (255.0 - dog) > threshold
    return np.repeat(np.where(lines, 255, 0).astype(np.uint8)[..., None], 3, axis=2)


def lineart(rgb: np.ndarray, sigma: float = 6.0) -> np.ndarray:
    x = rgb.astype(np.float32)
    intensity = np.clip(np.min(_blur(x, sigma) - x, axis=2), 0, 255)
    bright = intensity[intensity > 8]
    intensity = intensity / max(16.0, float(np.median(bright)) if bright.size else 16.0) * 127.0
    return np.repeat(np.clip(intensity, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def preprocess(method: str, rgba: np.ndarray) -> np.ndarray:
    """The control image for `method` (one of METHODS) from an RGBA (or RGB) uint8 image."""
    if method not in METHODS:
        raise ValueError(f"unknown preprocessor {method!r}: one of {', '.join(METHODS)}")
    rgb = flatten(rgba, 255 if method in _PAPER else 0)
    if method == "none":
        return rgb
    if method == "canny":
        return np.repeat(canny(gray(rgb))[..., None], 3, axis=2)
    if method == "scribble":
        return scribble(rgb)
    if method == "lineart":
        return lineart(rgb)
    if method == "invert":
        return 255 - rgb
    if method == "blur":
        return np.asarray(Image.fromarray(rgb, "RGB").filter(ImageFilter.GaussianBlur(max(1.0, min(rgb.shape[:2]) / 128))))
    h, w = rgb.shape[:2]   # tile
    small = Image.fromarray(rgb, "RGB").resize((max(1, w // 4), max(1, h // 4)), Image.BICUBIC)
    return np.asarray(small.resize((w, h), Image.BICUBIC))

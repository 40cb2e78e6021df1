"""Regions: a prompt per mask, composed in one generation. The rules that turn the masks a person drew into the
coverage maps the attention uses (engine/attention.py). Pure numpy, no torch.

The rules (as krita-ai-diffusion's users learned them):
- a region's coverage is its gray8 mask (the layer's alpha): 255 = all this region, 0 = none of it;
- regions are listed bottom to top: a later (higher) region takes its area from the earlier ones below it;
- a region that ends up with less than MIN_SHARE of the area is dropped (its area goes back to what is below it);
- one region with more than BASE_SHARE of the area becomes the base: its prompt (joined with the base prompt)
  is the prompt for everything no other region covers;
- what no region covers is the background, conditioned by the base prompt.
A region's own prompt is followed by the base prompt (join_prompt), as both InvokeAI and krita-ai-diffusion do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SHARE = 0.02
BASE_SHARE = 0.90


def join_prompt(region: str, base: str) -> str:
    """The text a region is encoded with: its own prompt, then the base prompt. A region prompt that is empty or
    already the base prompt is just the base (so a region that repeats the base changes nothing)."""
    region, base = (region or "").strip(), (base or "").strip()
    if not base or region == base:
        return region
    if not region:
        return base
    return f"{region}, {base}"


@dataclass
class Region:
    index: int             # the region's position in the request (messages, metadata)
    prompt: str            # joined with the base prompt
    negative: str          # joined with the base negative prompt
    coverage: np.ndarray   # float32 (H, W) in [0, 1] over the generated area, after stacking


@dataclass
class Plan:
    prompt: str            # the base prompt (a region over BASE_SHARE replaces it)
    negative: str
    regions: list[Region]  # empty: nothing regional is left, generate with the base prompt alone
    background: np.ndarray  # float32 (H, W): 1 - the regions' coverage; where the base prompt applies
    dropped: list[int]     # indices of regions under MIN_SHARE
    became_base: int | None  # index of the region that became the base prompt


def crop_to_area(gray: np.ndarray, mx: int, my: int, area: tuple[int, int, int, int]) -> np.ndarray:
    """A gray8 mask placed at document (mx, my), cut to the area (x, y, w, h) as float32 coverage in [0, 1];
    what the mask does not reach is 0."""
    ax, ay, aw, ah = area
    out = np.zeros((ah, aw), np.float32)
    x0, y0 = max(ax, mx), max(ay, my)
    x1, y1 = min(ax + aw, mx + gray.shape[1]), min(ay + ah, my + gray.shape[0])
    if x0 < x1 and y0 < y1:
        out[y0 - ay:y1 - ay, x0 - ax:x1 - ax] = gray[y0 - my:y1 - my, x0 - mx:x1 - mx] / np.float32(255)
    return out


MAX_SIDE = 1024   # coverage is kept at most this many pixels a side: far finer than any latent grid it feeds


def shrink(cov: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """cov averaged over f x f blocks (f the smallest integer that brings both sides to max_side or less; the
    edge is padded with zeros, i.e. not covered) so that ten regions of a 4K document do not take gigabytes."""
    f = -(-max(cov.shape) // max_side)
    if f <= 1:
        return cov
    h, w = -(-cov.shape[0] // f) * f, -(-cov.shape[1] // f) * f
    padded = np.zeros((h, w), np.float32)
    padded[:cov.shape[0], :cov.shape[1]] = cov
    return padded.reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)


def stack(coverages: list[np.ndarray]) -> list[np.ndarray]:
    """Bottom first: each region keeps only what the regions above it leave, so the result never sums past 1."""
    taken = np.zeros_like(coverages[0]) if coverages else None
    out: list[np.ndarray] = [None] * len(coverages)
    for i in range(len(coverages) - 1, -1, -1):
        own = coverages[i] * (1 - taken)
        out[i] = own
        taken = taken + own
    return out


def plan(regions: list[tuple[str, str, np.ndarray]], prompt: str, negative: str,
         min_share: float = MIN_SHARE, base_share: float = BASE_SHARE) -> Plan:
    """regions: (prompt, negative prompt, coverage over the area) bottom first. Applies the rules above."""
    if not regions:
        raise ValueError("plan() needs at least one region")
    live = list(range(len(regions)))
    dropped: list[int] = []
    while True:   # dropping a region gives its area back to those below it, which may then pass the threshold
        eff = stack([regions[i][2] for i in live])
        small = [i for i, c in zip(live, eff) if float(c.mean()) < min_share]
        if not small:
            break
        dropped += small
        live = [i for i in live if i not in small]
        if not live:
            break
    became_base = None
    if live:
        shares = [float(c.mean()) for c in eff]
        big = int(np.argmax(shares))
        if shares[big] > base_share:
            became_base = live[big]
            p, n, _ = regions[became_base]
            prompt, negative = join_prompt(p, prompt), join_prompt(n, negative)
            live.pop(big)
            eff = stack([regions[i][2] for i in live]) if live else []
    shape = regions[0][2].shape
    background = np.ones(shape, np.float32)
    out = []
    for i, cov in zip(live, eff):
        p, n, _ = regions[i]
        out.append(Region(i, join_prompt(p, prompt), join_prompt(n, negative), cov.astype(np.float32)))
        background -= cov
    return Plan(prompt, negative, out, np.clip(background, 0, 1), sorted(dropped), became_base)

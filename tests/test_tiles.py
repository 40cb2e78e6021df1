"""Tile layouts and the blended merge (engine/tiles.py): pure arithmetic, no model.

The seam test refines a smooth gradient, upscaled 2×, in tiles that each come back a little off in tone (the
way tiles refined apart disagree: krita-ai-diffusion #1117), merges them as refine does, and measures the
largest jump across every tile border against the largest jump inside the tiles.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine import tiles

SEAM_TOLERANCE = 2   # 8-bit levels a border's largest jump may exceed the largest jump inside the tiles by


def test_one_tile_when_the_image_fits():
    assert tiles.layout(64, 64, 64, 16) == [tiles.Tile(0, 0, 0, 64, 64, 0, 0)]
    # smaller than the tile on one side: the tile takes that side
    assert [t.box for t in tiles.layout(512, 256, 512, 104)] == [(0, 0, 512, 256)]
    assert [t.box for t in tiles.layout(128, 64, 512, 104)] == [(0, 0, 128, 64)]


def test_layout_is_deterministic_from_the_sizes():
    lay = tiles.layout(1024, 768, 512, 104)
    assert [t.box for t in lay] == [(0, 0, 512, 512), (256, 0, 512, 512), (512, 0, 512, 512),
                                    (0, 256, 512, 512), (256, 256, 512, 512), (512, 256, 512, 512)]
    assert [(t.left, t.top) for t in lay] == [(0, 0), (256, 0), (256, 0), (0, 256), (256, 256), (256, 256)]
    assert tiles.layout(1024, 768, 512, 104) == lay
    assert [t.index for t in lay] == list(range(6))


@pytest.mark.parametrize("size,tile,overlap,count", [
    (512, 512, 104, 1), (520, 512, 104, 2), (920, 512, 104, 2), (921 // 8 * 8 + 8, 512, 104, 3),
    (2048, 512, 104, 5), (4096, 512, 104, 10), (4096, 1024, 208, 5), (128, 64, 16, 3), (128, 64, 0, 2),
])
def test_tile_count_and_overlap_along_a_side(size, tile, overlap, count):
    starts = tiles.axis_starts(size, tile, overlap)
    assert len(starts) == count
    assert starts[0] == 0 and starts[-1] + tile == size
    shared = [a + tile - b for a, b in zip(starts, starts[1:])]
    assert all(s >= overlap for s in shared)             # at least the overlap asked
    # the fewest tiles: one less would leave less than `overlap` shared somewhere
    if count > 1:
        assert (count - 2) * (tile - overlap) + tile < size


def test_default_overlap_grows_with_strength():
    assert tiles.default_overlap(512, 0.0) == 64
    assert tiles.default_overlap(512, 0.3) == 104
    assert tiles.default_overlap(512, 1.0) == 192
    assert tiles.default_overlap(1024, 0.3) == 208
    assert tiles.default_overlap(64, 0.3) == 16
    assert all(tiles.default_overlap(t, s) % 8 == 0 and tiles.default_overlap(t, s) <= t // 2
               for t in (64, 512, 768, 1024, 2048) for s in (0, 0.3, 0.5, 1))


def test_bad_layouts_are_refused():
    for args in [(100, 64, 64, 16), (64, 64, 60, 16), (128, 128, 64, 40), (128, 128, 64, -8)]:
        with pytest.raises(ValueError):
            tiles.layout(*args)


def test_one_tile_is_taken_as_it_is():
    (t,) = tiles.layout(64, 48, 64, 16)
    out = np.zeros((48, 64, 3), np.uint8)
    patch = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    tiles.Merge(out).add(t, patch)
    assert np.array_equal(out, patch)


def test_ramp_rises_across_the_overlap_only():
    r = tiles.ramp(64, 16)
    assert 0 < r[0] < 0.01 and r[15] > 0.99 and (r[16:] == 1.0).all() and (np.diff(r) >= 0).all()
    assert (tiles.ramp(64, 0) == 1.0).all()


def _merged(image, lay, patches):
    out = image.copy()
    merge = tiles.Merge(out)
    for t, patch in zip(lay, patches):
        merge.add(t, patch)
    return out


def _gradient(n: int) -> np.ndarray:
    """A smooth n x n gradient (red across, green down), upscaled 2x with Lanczos."""
    ramp = np.linspace(0, 255, n)
    img = np.zeros((n, n, 3), np.uint8)
    img[..., 0] = np.rint(ramp)[None, :]
    img[..., 1] = np.rint(ramp)[:, None]
    img[..., 2] = 128
    return np.asarray(Image.fromarray(img).resize((2 * n, 2 * n), Image.LANCZOS))


def _refine_apart(image: np.ndarray, lay, off: float = 8.0, seed: int = 0) -> list[np.ndarray]:
    """What refining tiles apart gives at worst on a smooth area: each tile its own tone, up to ±off levels."""
    rng = np.random.default_rng(seed)
    out = []
    for t in lay:
        shift = rng.uniform(-off, off, 3)
        out.append(np.clip(np.rint(image[t.y:t.y + t.h, t.x:t.x + t.w] + shift), 0, 255).astype(np.uint8))
    return out


def _seams(img: np.ndarray, lay) -> tuple[float, float]:
    """(largest jump across any tile border, largest jump between neighbours inside the tiles), max over
    channels, rows and columns."""
    f = img.astype(np.float32)
    jumps = {0: np.abs(np.diff(f, axis=0)).max(axis=(1, 2)), 1: np.abs(np.diff(f, axis=1)).max(axis=(0, 2))}
    border = {0: set(), 1: set()}
    for t in lay:   # a border sits between pixel e-1 and e, for each edge e of a tile inside the image
        border[1] |= {e for e in (t.x, t.x + t.w) if 0 < e < img.shape[1]}
        border[0] |= {e for e in (t.y, t.y + t.h) if 0 < e < img.shape[0]}
    at_border = max(jumps[a][e - 1] for a in (0, 1) for e in border[a])
    inside = max(jumps[a][i] for a in (0, 1) for i in range(len(jumps[a]))
                 if not any(abs(i + 1 - e) <= 1 for e in border[a]))
    return float(at_border), float(inside)


def test_no_seams_on_a_smooth_gradient_upscaled_2x():
    image = _gradient(128)                              # 256 x 256
    lay = tiles.layout(256, 256, 64, tiles.default_overlap(64, 0.3))
    assert len(lay) == 25                               # 5 x 5, 16 px shared
    out = _merged(image, lay, _refine_apart(image, lay))
    assert not np.array_equal(out, image)
    at_border, inside = _seams(out, lay)
    assert at_border <= inside + SEAM_TOLERANCE, (at_border, inside)

    # the measure finds the seams of tiles pasted without the blend
    hard = tiles.layout(256, 256, 64, 0)
    cut = image.copy()
    for t, patch in zip(hard, _refine_apart(image, hard)):
        cut[t.y:t.y + t.h, t.x:t.x + t.w] = patch
    at_border, inside = _seams(cut, hard)
    assert at_border > inside + SEAM_TOLERANCE, (at_border, inside)

"""Region mask rules (engine/regions.py), on masks: coverage from alpha, stacking, the 2 % and 90 % rules, the
background, cutting masks to the generated area, and how a region's prompt is joined with the base prompt."""

from __future__ import annotations

import numpy as np
import pytest

from engine.regions import BASE_SHARE, MIN_SHARE, crop_to_area, join_prompt, plan, shrink, stack

H = W = 100


def rect(x0, y0, x1, y1, value=1.0):
    m = np.zeros((H, W), np.float32)
    m[y0:y1, x0:x1] = value
    return m


def test_join_prompt():
    assert join_prompt("a knight", "oil painting") == "a knight, oil painting"
    assert join_prompt("", "oil painting") == "oil painting"          # an empty region prompt is the base
    assert join_prompt("oil painting", "oil painting") == "oil painting"   # repeating the base adds nothing
    assert join_prompt(" a knight ", "") == "a knight"


def test_crop_to_area_reads_alpha_in_document_coordinates():
    gray = np.full((10, 10), 255, np.uint8)
    gray[:, 5:] = 51                                   # 20 % alpha on its right half
    got = crop_to_area(gray, 95, 20, (90, 10, 20, 20))   # mask at doc (95, 20), area from (90, 10)
    assert got.shape == (20, 20) and got.dtype == np.float32
    assert got[10, 5] == 1.0 and got[10, 10] == pytest.approx(0.2)   # doc (95,20) and (100,20)
    assert got[9, 5] == 0 and got[10, 4] == 0          # outside the mask: nothing
    assert got[10:20, 5:15].sum() == pytest.approx(10 * 5 + 10 * 5 * 0.2)   # clipped at the area's edge
    assert not crop_to_area(gray, 500, 500, (0, 0, 20, 20)).any()


def test_higher_region_takes_its_area_from_lower():
    low, high = rect(0, 0, 60, 100), rect(40, 0, 100, 100)
    a, b = stack([low, high])
    assert a[:, :40].min() == 1 and not a[:, 40:].any()       # the overlap went to the higher one
    assert np.array_equal(b, high)
    soft = stack([low, rect(40, 0, 100, 100, 0.25)])           # a half-transparent layer takes only its share
    assert soft[0][0, 50] == pytest.approx(0.75) and soft[1][0, 50] == pytest.approx(0.25)
    assert (soft[0] + soft[1]).max() <= 1.0


def test_background_is_what_no_region_covers():
    p = plan([("a", "", rect(0, 0, 30, 100)), ("b", "", rect(50, 0, 80, 100))], "base", "neg")
    assert [r.index for r in p.regions] == [0, 1] and p.dropped == [] and p.became_base is None
    assert p.regions[0].prompt == "a, base" and p.regions[0].negative == "neg"
    assert p.background[:, 30:50].min() == 1 and p.background[:, 80:].min() == 1
    assert not p.background[:, :30].any() and not p.background[:, 50:80].any()
    total = p.background + sum(r.coverage for r in p.regions)
    assert np.allclose(total, 1.0)


def test_small_region_is_dropped_and_gives_its_area_back():
    tiny = rect(0, 0, 10, 10)   # 1 % of the area
    assert tiny.mean() < MIN_SHARE
    p = plan([("big", "", rect(0, 0, 50, 100)), ("tiny", "", tiny)], "base", "")
    assert p.dropped == [1] and [r.index for r in p.regions] == [0]
    assert p.regions[0].coverage[:10, :10].min() == 1   # the region below gets the dropped one's area back
    # a region that only a higher one leaves under 2 % is dropped too
    p = plan([("under", "", rect(0, 0, 52, 100)), ("over", "", rect(0, 0, 51, 100))], "base", "")
    assert p.dropped == [0] and [r.index for r in p.regions] == [1]


def test_region_over_90_percent_becomes_the_base():
    p = plan([("sky", "grey", rect(0, 0, 100, 95)), ("bird", "", rect(0, 0, 20, 20))], "photo", "blurry")
    assert p.became_base == 0 and p.prompt == "sky, photo" and p.negative == "grey, blurry"
    assert [r.index for r in p.regions] == [1] and p.regions[0].prompt == "bird, sky, photo"
    assert p.background[50, 50] == 1 and p.background[5, 5] == 0
    assert rect(0, 0, 100, 95).mean() > BASE_SHARE
    only = plan([("all", "", np.ones((H, W), np.float32))], "photo", "")
    assert only.regions == [] and only.prompt == "all, photo" and only.background.min() == 1


def test_every_region_dropped_leaves_the_base():
    p = plan([("speck", "", rect(0, 0, 5, 5))], "photo", "")
    assert p.regions == [] and p.dropped == [0] and p.prompt == "photo" and p.background.min() == 1


def test_big_coverage_is_averaged_down_keeping_shares():
    cov = np.zeros((3000, 2000), np.float32)
    cov[:, :1000] = 1
    small = shrink(cov, 1024)
    assert max(small.shape) <= 1024 and small.shape == (1000, 667)   # blocks of 3x3, the edge padded
    assert small[:, :333].min() == 1 and small[:, 334:].max() == 0 and 0 < small[0, 333] < 1
    assert abs(small.mean() * small.size * 9 - cov.sum()) < 1e-3 * cov.sum()
    assert shrink(rect(0, 0, 10, 10)) is not None and shrink(rect(0, 0, 10, 10)).shape == (H, W)

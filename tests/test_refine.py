"""Refine in tiles (engine/refine.py) on a tiny demo model, in process and through the engine: a one-tile layout
is img2img to the pixel, several tiles are each tile's img2img merged, progress counts tiles and previews the
whole image; upscale with a model and hires txt2img end to end.

The demo models' random VAE turns any picture into texture noise, so seams are measured on the merge itself
with tiles that disagree (tests/test_tiles.py); here the refine loop is shown to produce exactly that merge.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from engine import diffusion, refine, tiles
from engine.models.demo import make_demo
from engine.models.loader import load_model
from protocol.errors import ProtocolError

from .helpers import fetch, pattern, run_job, upload_rgba

warnings.filterwarnings("ignore")

pytestmark = pytest.mark.slow   # loads a demo model into a diffusers pipeline; the engine tests start one


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return load_model(make_demo(tmp_path_factory.mktemp("refine-model"), "sd15"))


def _img2img(m, cond, rgb, seed, strength=0.3, steps=10, guidance=5.0):
    lat = diffusion.denoise(m, cond, width=rgb.shape[1], height=rgb.shape[0], steps=steps, guidance=guidance,
                            seed=seed, strength=strength, init_image=np.ascontiguousarray(rgb))
    return diffusion.decode(m, lat)


def test_one_tile_is_img2img(model):
    cond = diffusion.encode_prompt(model, "a lighthouse", "")
    img = pattern(64, 48)
    img[:8, :8, 3] = 0
    out = refine.refine(model, cond, img, steps=10, guidance=5.0, seed=11, strength=0.3, tile=64, overlap=16)
    assert out.shape == img.shape
    assert np.array_equal(out[..., :3], _img2img(model, cond, img[..., :3], 11))
    assert np.array_equal(out[..., 3], img[..., 3])     # alpha as it was


def test_tiles_are_each_img2img_merged(model):
    cond = diffusion.encode_prompt(model, "a lighthouse", "")
    img = np.asarray(Image.fromarray(pattern(60, 52)).resize((120, 104), Image.LANCZOS))
    seen = []
    out = refine.refine(model, cond, img, steps=4, guidance=1.0, seed=5, strength=0.5, tile=64, overlap=16,
                        on_step=lambda *a: seen.append(a))
    lay = refine.plan(120, 104, 64, 16)
    assert [t.box for t in lay] == [(0, 0, 64, 64), (28, 0, 64, 64), (56, 0, 64, 64),
                                    (0, 40, 64, 64), (28, 40, 64, 64), (56, 40, 64, 64)]
    padded = img                                          # 120 x 104: multiples of 8 already, no padding
    want = padded[..., :3].copy()
    merge = tiles.Merge(want)
    for t in lay:
        merge.add(t, _img2img(model, cond, padded[t.y:t.y + t.h, t.x:t.x + t.w, :3], 5 + t.index, strength=0.5,
                              steps=4, guidance=1.0))
    assert np.array_equal(out[..., :3], want)
    # progress: every step of every tile, tile 1-based of 6; the preview is the whole image (120 x 104)
    assert sorted({(s[2], s[3]) for s in seen}) == [(i, 6) for i in range(1, 7)]
    assert [s[:2] for s in seen[:3]] == [(1, 2), (2, 2), (1, 2)]
    assert all(s[4].shape == (104, 120, 3) for s in seen)
    # the preview keeps the tiles refined so far: in the last tile's preview the first tile is the refined one
    first = lay[0]
    assert not np.array_equal(seen[-1][4][:first.h, :first.w], img[:first.h, :first.w, :3])


def test_preview_of_a_big_image_is_the_whole_image_at_most_256_px():
    img = pattern(600, 300)
    lay = refine.plan(600, 300, 256, 64)
    preview = refine.Preview(img)
    assert preview.rgb.shape == (128, 256, 3)
    tile = np.zeros((32, 32, 3), np.uint8)            # a tile's latent preview is smaller than its box
    shown = preview.with_tile(lay[1], tile)
    x0, y0, x1, y1 = preview._box(lay[1])
    assert shown.shape == (128, 256, 3) and (shown[y0:y1, x0:x1] == 0).all()
    preview.paste(lay[0], np.full((256, 256, 3), 255, np.uint8))
    x0, y0, x1, y1 = preview._box(lay[0])
    assert (preview.rgb[y0:y1, x0:x1] == 255).all() and not (preview.rgb == 255).all()


def test_odd_sizes_are_padded_and_cut_back(model):
    cond = diffusion.encode_prompt(model, "", "")
    img = pattern(70, 37)
    out = refine.refine(model, cond, img, steps=4, guidance=1.0, seed=0, strength=0.5, tile=64, overlap=16)
    assert out.shape == (37, 70, 4)
    assert [t.box for t in refine.plan(70, 37, 64, 16)] == [(0, 0, 64, 40), (8, 0, 64, 40)]


# ---- through the engine -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(engine_server):
    c = engine_server.client()
    yield c
    c.close()


def test_upscale_with_one_tile_equals_img2img(client):
    img = pattern(64, 64)
    layer = upload_rgba(client, img, 3, 4)
    common = {"model": "tiny-sd15", "prompt": "a lighthouse", "steps": 10, "seed": 9, "strength": 0.3,
              "image": layer}
    _, _, up, events = run_job(client, {**common, "mode": "upscale", "scale": 1.0})
    _, _, i2i, _ = run_job(client, {**common, "mode": "img2img"})
    assert up.name == i2i.name == "job.result", (up.data, i2i.data)
    a, b = up.data["layers"][0], i2i.data["layers"][0]
    assert (a["w"], a["h"], a["x"], a["y"], a["seed"]) == (64, 64, 3, 4, 9)
    assert a["sha256"] == b["sha256"]                    # the same pixels
    progress = [e.data for e in events if e.name == "job.progress"]
    assert progress and all((p["tile"], p["tiles"]) == (1, 1) for p in progress)


def test_upscale_2x_refines_in_tiles(client):
    img = pattern(64, 64)
    layer = upload_rgba(client, img, 5, 6)
    args = {"mode": "upscale", "model": "tiny-sd15", "image": layer, "scale": 2.0, "steps": 10, "seed": 3}
    job, reply, res, events = run_job(client, args)
    assert res.name == "job.result", res.data
    out = res.data["layers"][0]
    assert (out["w"], out["h"], out["x"], out["y"]) == (128, 128, 5, 6)
    progress = [e.data for e in events if e.name == "job.progress"]
    # default tile: the model's native 64 px; overlap 16 + 64 * 0.3 → 16 (tiles.default_overlap): 3 x 3 tiles
    assert sorted({(p["tile"], p["tiles"]) for p in progress}) == [(i, 9) for i in range(1, 10)]
    assert all(p["total"] == 3 for p in progress)         # strength 0.3 (the default) of 10 steps
    prev = progress[-1]["preview"]
    assert (prev["w"], prev["h"]) == (128, 128)           # the whole image, not the tile
    lanczos = np.asarray(Image.fromarray(img).resize((128, 128), Image.LANCZOS))
    assert not np.array_equal(fetch(client, out), lanczos)
    # strength 0: the upscale alone
    _, _, plain, _ = run_job(client, {**args, "strength": 0.0})
    assert np.array_equal(fetch(client, plain.data["layers"][0]), lanczos)
    info = client.call("job.get", {"job": job})
    assert info["request"]["strength"] == 0.3


def test_hires_txt2img(client):
    args = {"model": "tiny-sd15", "prompt": "a castle", "width": 128, "height": 96, "steps": 6, "seed": 21,
            "hires": True, "hires_strength": 0.5}
    _, _, res, events = run_job(client, args)
    assert res.name == "job.result", res.data
    out = res.data["layers"][0]
    assert (out["w"], out["h"], out["seed"]) == (128, 96, 21)
    progress = [e.data for e in events if e.name == "job.progress"]
    first = [p for p in progress if "tile" not in p]      # the first pass at the native area: 72 x 56
    tiled = [p for p in progress if "tile" in p]
    assert first and first[-1]["total"] == 6 and first[-1]["node"] == "denoise0"
    assert (first[-1]["preview"]["w"], first[-1]["preview"]["h"]) == (36, 28)   # its latents (the demo VAE: 2×)
    assert tiled and {p["tiles"] for p in tiled} == {len(tiles.layout(128, 96, 64, 24))}
    assert all(p["total"] == 3 for p in tiled)
    # one step asked: the first pass takes it, the refine still gets one step per tile (hires is automatic)
    _, _, few, events = run_job(client, {**args, "steps": 1})
    assert few.name == "job.result", few.data
    assert {e.data["total"] for e in events if e.name == "job.progress" and "tile" in e.data} == {1}
    # without hires: one pass at 128 x 96
    _, _, one, events = run_job(client, {**args, "hires": False})
    assert not any("tile" in e.data for e in events if e.name == "job.progress")
    assert one.data["layers"][0]["sha256"] != out["sha256"]


@pytest.mark.parametrize("extra,field", [
    ({"mode": "upscale", "model": "tiny-sd15", "tile": 100}, "tile"),
    ({"mode": "upscale", "model": "tiny-sd15", "tile": 64, "overlap": 40}, "overlap"),
    ({"mode": "upscale", "model": "tiny-sd15", "overlap": 40}, "overlap"),         # the native 64 px tile
    ({"mode": "upscale", "tile": 64}, "tile"),                                       # no model: nothing to tile
    ({"mode": "img2img", "model": "tiny-sd15", "tile": 64}, "tile"),
    ({"mode": "upscale", "model": "tiny-sd15", "strength": 0.05, "steps": 10}, "strength"),
    ({"mode": "upscale", "model": "nope"}, "model"),
])
def test_bad_tiled_requests_are_refused(client, extra, field):
    layer = upload_rgba(client, pattern(32, 32))
    before = len(client.call("job.list", {"limit": 500})["jobs"])
    with pytest.raises(ProtocolError) as e:
        client.call("generate", {"image": layer, "scale": 2.0, **extra})
    assert e.value.code == "bad_request", e.value
    assert field in e.value.message or field in str(e.value.details), (e.value.message, e.value.details)
    assert len(client.call("job.list", {"limit": 500})["jobs"]) == before

"""Upscalers: a tiny ESRGAN built here, loaded through spandrel, tiled vs untiled, and through the engine."""

from __future__ import annotations


import numpy as np
import pytest
from safetensors.torch import save_file

from engine.models.demo import tiny_esrgan
from engine.models.upscale import load_upscaler, upscale_image, upscale_pass

from .helpers import EngineProc, fetch, run_job, upload_rgba

pytestmark = pytest.mark.slow   # every test loads the tiny ESRGAN model; one also starts an engine


@pytest.fixture(scope="module")
def esrgan_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("upscalers")
    path = d / "tiny-esrgan-x2.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_esrgan().state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def up(esrgan_file):
    return load_upscaler(esrgan_file, "tiny-esrgan-x2")


def _noise(h, w, seed=0):
    rgba = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    return rgba


def test_spandrel_loads_without_torchvision(up):
    import sys
    assert up.scale == 2 and up.descriptor.architecture.id == "ESRGAN"
    assert "torchvision" not in sys.modules or getattr(sys.modules["torchvision"], "__file__", None)


def test_upscale_64_to_128(up):
    img = _noise(64, 64)
    out = upscale_image(up, img, 128, 128)
    assert out.shape == (128, 128, 4) and out.dtype == np.uint8 and (out[..., 3] == 255).all()
    # the model ran (not a plain resize)
    from PIL import Image
    lanczos = np.asarray(Image.fromarray(img[..., :3]).resize((128, 128), Image.LANCZOS))
    assert not np.array_equal(out[..., :3], lanczos)
    # other factors: two passes then Lanczos down; alpha follows
    img[10:20, 10:20, 3] = 0
    out3 = upscale_image(up, img, 192, 160)
    assert out3.shape == (160, 192, 4) and (out3[..., 3] < 255).any()


def test_tiled_matches_untiled(up):
    img = _noise(96, 80, seed=1)[..., :3]
    whole = upscale_pass(up, img, tile=0)
    tiles = []
    tiled = upscale_pass(up, img, tile=32, pad=24, on_tile=lambda i, n: tiles.append(n))
    assert len(tiles) == 9 and tiled.shape == whole.shape == (192, 160, 3)
    diff = np.abs(whole.astype(np.int16) - tiled)
    assert diff.mean() < 0.05 and diff.max() <= 2, (diff.mean(), diff.max())


def test_large_image_in_tiles(up):
    img = _noise(768, 1024, seed=2)
    seen = []
    out = upscale_image(up, img, 2048, 1536, tile=256, pad=16, on_tile=lambda i, n: seen.append(n))
    assert out.shape == (1536, 2048, 4)
    assert len(seen) == 12                      # 3 x 4 tiles of 256 px: one tile's activations at a time


def test_generate_upscale_through_the_engine(tmp_path_factory, esrgan_file, up):
    import shutil

    d = tmp_path_factory.mktemp("up-models")
    shutil.copy(esrgan_file, d / esrgan_file.name)
    proc = EngineProc(tmp_path_factory.mktemp("up-data"), ["--models", str(d)]).start()
    try:
        c = proc.client()
        assert [m["name"] for m in c.call("models.list", {"type": "upscaler"})["models"]] == ["tiny-esrgan-x2"]
        img = _noise(64, 64, seed=3)
        layer = upload_rgba(c, img, 5, 6)
        _, _, res, _ = run_job(c, {"mode": "upscale", "image": layer, "upscaler": "tiny-esrgan-x2", "scale": 2.0})
        assert res.name == "job.result", res.data
        out = res.data["layers"][0]
        assert (out["w"], out["h"], out["x"], out["y"]) == (128, 128, 5, 6)
        assert np.array_equal(fetch(c, out), upscale_image(up, img, 128, 128))
        # progress counts the model's tiles (512 px of input each): a 600x40 image is two
        wide = upload_rgba(c, _noise(40, 600, seed=4))
        _, _, res, events = run_job(c, {"mode": "upscale", "image": wide, "upscaler": "tiny-esrgan-x2", "scale": 2.0})
        assert res.name == "job.result", res.data
        prog = [(e.data["step"], e.data["total"], e.data.get("tile"), e.data.get("tiles"))
                for e in events if e.name == "job.progress"]
        assert prog == [(1, 2, 1, 2), (2, 2, 2, 2)], prog
        from protocol.errors import ProtocolError
        with pytest.raises(ProtocolError) as e:
            c.call("generate", {"mode": "upscale", "image": layer, "upscaler": "nope"})
        assert e.value.code == "bad_request" and "unknown model" in e.value.message
        c.close()
    finally:
        proc.kill()

"""models.list reports each main model's native_size (issue 15 item 13): what a plug-in's size defaults to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models.registry import ModelEntry, native_size


def test_models_list_reports_native_size(engine_server):
    c = engine_server.client()
    models = {m["name"]: m for m in c.call("models.list", {})["models"]}
    c.close()
    for name in ("tiny-sd15", "tiny-sd2", "tiny-sdxl", "tiny-flux"):
        assert models[name]["native_size"] == 64, models[name]   # the demo models are made for 64 px
    assert models["tiny-esrgan"]["native_size"] is None   # not a main model


@pytest.mark.parametrize("base, prediction, size", [
    ("sd1", "epsilon", 512), ("sd2", "v_prediction", 768), ("sd2", None, 768), ("sd2", "epsilon", 512),
    ("sdxl", "epsilon", 1024), ("flux", "flow", 1024)])
def test_native_size_by_base_when_the_configs_do_not_say(tmp_path, base, prediction, size):
    ckpt = tmp_path / f"{base}-{prediction}.safetensors"
    header = json.dumps({"__metadata__": {}}).encode()
    ckpt.write_bytes(len(header).to_bytes(8, "little") + header)   # a checkpoint without configs
    entry = ModelEntry(name=ckpt.stem, path=ckpt, family=base, prediction=prediction, size=ckpt.stat().st_size)
    assert native_size(entry) == size


def test_native_size_from_a_real_style_diffusers_config(tmp_path: Path):
    """SD2 768-v's configs: UNet sample_size 96 with a VAE of 4 levels (8× down) → 768."""
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "unet" / "config.json").write_text(json.dumps({"sample_size": 96}))
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [128, 256, 512, 512],
                                                             "sample_size": 768}))
    assert native_size(ModelEntry(name="sd2", path=tmp_path, family="sd2", prediction="epsilon")) == 768

"""A full-size single-file SD 1.5 checkpoint, as model sites publish them, on a fresh engine with no network.

Built here from diffusers' and transformers' model classes at SD 1.5's real sizes (the configs in
engine/configs/sd1), random fp16 weights, saved in the original CompVis key layout with no tokenizer and no
metadata, exactly as those files come (~2 GB). `heavy`: left out of the default run; CI runs `pytest -m heavy`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from .helpers import fetch, run_job

pytestmark = [pytest.mark.heavy, pytest.mark.slow]

CONFIGS = Path(__file__).resolve().parents[1] / "engine" / "configs" / "sd1"


def build_sd15_checkpoint(path: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.models.demo import _clip_to_original, _unet_to_original, _vae_to_original

    def cfg(sub):
        return json.loads((CONFIGS / sub / "config.json").read_text())

    sd = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(cfg("unet"))
        sd.update(_unet_to_original({k: v.half() for k, v in unet.state_dict().items()}, unet.config))
        del unet
        vae = AutoencoderKL.from_config(cfg("vae"))
        sd.update(_vae_to_original({k: v.half() for k, v in vae.state_dict().items()}, vae.config,
                                   "first_stage_model."))
        del vae
        te = CLIPTextModel(CLIPTextConfig(**{k: v for k, v in cfg("text_encoder").items()
                                              if k not in ("architectures", "model_type")}))
        sd.update(_clip_to_original({k: v.half() for k, v in te.state_dict().items()},
                                    "cond_stage_model.transformer."))
        del te
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def build_sd_vae(path: Path, seed: int = 1) -> Path:
    """A full-size SD VAE alone, in the original layout without prefix (as VAE files come)."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from engine.models.demo import _vae_to_original

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL.from_config(json.loads((CONFIGS / "vae" / "config.json").read_text()))
    sd = _vae_to_original({k: v.half() for k, v in vae.state_dict().items()}, vae.config, "")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


@pytest.fixture(scope="module")
def full_sd15(tmp_path_factory):
    root = tmp_path_factory.mktemp("full-models")
    path = build_sd15_checkpoint(root / "sd15-full.safetensors")
    assert path.stat().st_size > 1.9e9   # really full size
    build_sd_vae(root / "other-vae.safetensors")
    return root


def test_full_size_sd15_single_file_offline(full_sd15, spawn_engine, monkeypatch, tmp_path):
    from engine.models.loader import read_safetensors_header

    keys, meta = read_safetensors_header(full_sd15 / "sd15-full.safetensors")
    assert not meta   # no embedded configs or tokenizer: only weights
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))   # no cached hub files to lean on
    monkeypatch.delenv("PAINTBRIDGE_TOKENIZERS", raising=False)
    eng = spawn_engine("--models", str(full_sd15), data_dir=tmp_path / "fresh-data")
    client = eng.client()
    try:
        base = {"model": "sd15-full", "width": 64, "height": 64, "steps": 2, "seed": 5, "guidance": 5.0}
        words = ", ".join(["a quiet harbour at dawn with fishing boats and gulls"] * 8)   # ~90 tokens
        imgs = {}
        for key, prompt in (("short", words), ("longer", words + ", a red lighthouse, purple storm clouds"),
                            ("plain", "a cat"), ("weight1", "(a:1.0) cat"), ("vae", "a cat")):
            extra = {"vae": "other-vae"} if key == "vae" else {}
            _, _, ev, _ = run_job(client, {**base, "prompt": prompt, **extra}, timeout=900)
            assert ev.name == "job.result", ev.data
            imgs[key] = fetch(client, ev.data["layers"][0])
        assert imgs["short"].shape == (64, 64, 4)
        # words past the 77th token change the image
        assert not np.array_equal(imgs["short"], imgs["longer"])
        # a weight of 1.0 is no weight at all: the same pixels
        assert np.array_equal(imgs["plain"], imgs["weight1"])
        # another registered VAE (a single file in the original layout) decodes the same latents differently
        assert not np.array_equal(imgs["plain"], imgs["vae"])
        vaes = client.call("models.list", {"type": "vae"})["models"]
        assert [m["name"] for m in vaes] == ["other-vae"] and vaes[0]["base"] == "sd1"
    finally:
        client.close()
    assert os.environ["HF_HUB_OFFLINE"] == "1"

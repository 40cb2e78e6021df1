"""The regional attention processor (engine/attention.py) with diffusers' own IP-Adapter machinery: one processor
applies both the regions and the IP-Adapter image tokens, so neither overwrites the other.

A tiny random IP-Adapter is put on the demo SD1.5 UNet by diffusers' loader (the same code path a real
ip-adapter_sd15.safetensors takes), and the pipeline is called with precomputed image embeddings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from engine import attention, diffusion
from engine.models.demo import make_demo
from engine.models.loader import load_model

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.slow   # builds a demo model and runs diffusers pipelines

W = H = 64
CLIP_DIM = 32


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = load_model(make_demo(tmp_path_factory.mktemp("ip"), "sd15", "diffusers"))
    unet = m.pipe.unet
    g = torch.Generator().manual_seed(0)
    cross = unet.config.cross_attention_dim
    ip = {}
    n = sum(1 for name in unet.attn_processors if name.endswith("attn2.processor"))
    for i, name in enumerate(k for k in unet.attn_processors if k.endswith("attn2.processor")):
        hidden = unet.get_submodule(name[:-len(".processor")]).to_k.out_features
        for kind in ("to_k_ip", "to_v_ip"):
            ip[f"{2 * i + 1}.{kind}.weight"] = torch.randn(hidden, cross, generator=g) * 0.5
    proj = {"proj.weight": torch.randn(4 * cross, CLIP_DIM, generator=g), "proj.bias": torch.zeros(4 * cross),
            "norm.weight": torch.ones(cross), "norm.bias": torch.zeros(cross)}
    unet._load_ip_adapter_weights([{"image_proj": proj, "ip_adapter": ip}])
    assert n and all(hasattr(p, "to_k_ip") for k, p in unet.attn_processors.items() if k.endswith("attn2.processor"))
    return m


def run(m, state=None, scale=1.0, seed=3):
    pipe = m.pipe
    pipe.set_ip_adapter_scale(scale)
    cond = diffusion.encode_prompt(m, "a castle on a hill", "blurry")
    embeds = torch.randn(2, 1, CLIP_DIM, generator=torch.Generator().manual_seed(11))   # [negative, image]
    kwargs = dict(cond.tensors, height=H, width=W, num_inference_steps=3, guidance_scale=5.0,
                  generator=torch.Generator("cpu").manual_seed(seed), output_type="latent",
                  ip_adapter_image_embeds=[embeds])
    with torch.inference_mode():
        if state is None:
            return pipe(**kwargs).images
        with attention.regional_attention(pipe.unet, state):
            return pipe(**kwargs).images


def grid(m):
    return H // m.pipe.vae_scale_factor, W // m.pipe.vae_scale_factor


def halves(m, prompt_left, prompt_right):
    left = np.zeros((H, W), np.float32)
    left[:, :32] = 1
    contexts = []
    for text in (prompt_left, prompt_right):
        t = diffusion.encode_prompt(m, text, "blurry").tensors
        contexts.append((t["negative_prompt_embeds"], t["prompt_embeds"]))
    cov = attention.latent_coverage([np.zeros((H, W), np.float32), left, 1 - left], grid(m), "cpu")
    return attention.RegionalState(contexts, cov)


def test_regions_keep_the_ip_adapter_tokens(model):
    own = run(model)                                    # diffusers' IPAdapterAttnProcessor2_0
    assert not torch.equal(own, run(model, scale=0.0))  # the image tokens do something
    ours = run(model, halves(model, "a castle on a hill", "a castle on a hill"))
    assert (own - ours).abs().max() < 1e-5              # same numbers: regions that repeat the base + the tokens
    kinds = {type(p).__name__ for k, p in model.pipe.unet.attn_processors.items() if k.endswith("attn2.processor")}
    assert kinds == {"IPAdapterAttnProcessor2_0"}       # the loader's processors are back after the call
    # with different region prompts, the image tokens still act (scale 0 differs from scale 1)
    state = halves(model, "zebra stripes neon green", "a castle on a hill")
    assert not torch.equal(run(model, state), run(model, halves(model, "zebra stripes neon green",
                                                                      "a castle on a hill"), scale=0.0))


def test_an_ip_adapter_mask_keeps_the_reference_to_its_area(model):
    none = run(model, scale=0.0)
    state = halves(model, "a castle on a hill", "a castle on a hill")
    right = np.zeros((H, W), np.float32)
    right[:, 32:] = 1
    state.ip_masks = [attention.latent_coverage([right], grid(model), "cpu")[0]]
    got = diffusion.decode(model, run(model, state)).astype(int)
    ref = diffusion.decode(model, none).astype(int)
    diff = np.abs(got - ref).mean(axis=2)
    inside, outside = diff[:, 32:].mean(), diff[:, :32].mean()
    print(f"masked reference: mean |Δ| inside {inside:.2f}, outside {outside:.2f}")
    assert inside > 1.2 * outside

"""Long prompts, weights, clip skip, samplers by name, VAE override and fp16 decoding on the tiny demo models,
through the same code that runs real checkpoints (in process), and the new generate args through a real engine.

The demo tokenizers are byte-level: one character is one token, so 80 characters are past the 77-token window.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from engine import diffusion
from engine.errors import BadRequest
from engine.models.demo import build_pipeline, make_demo
from engine.models.loader import load_model

from .helpers import fetch, run_job

pytestmark = pytest.mark.slow   # every test here builds or loads demo models with torch

warnings.filterwarnings("ignore")

W = H = 64
LONG = "a quiet harbour at dawn, fishing boats, gulls over the water, " * 2   # 124 tokens with the demo tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("prompting")
    cache = {}

    def get(arch):
        if arch not in cache:
            cache[arch] = load_model(make_demo(root, arch))
        return cache[arch]

    return get


def _latents(m, prompt, negative="blurry", seed=1, **kw):
    cond = diffusion.encode_prompt(m, prompt, negative, clip_skip=kw.pop("clip_skip", 1))
    kw.setdefault("steps", 2)
    return diffusion.denoise(m, cond, width=W, height=H, guidance=5.0, seed=seed, **kw)


def _standard(m, prompt, negative):
    """diffusers' own prompt encoding (77 tokens, no weights)."""
    if m.family == "sdxl":
        pe, ne, pp, npp = m.pipe.encode_prompt(prompt=prompt, device=m.device, num_images_per_prompt=1,
                                               do_classifier_free_guidance=True, negative_prompt=negative or None)
        return {"prompt_embeds": pe, "negative_prompt_embeds": ne, "pooled_prompt_embeds": pp,
                "negative_pooled_prompt_embeds": npp}
    pe, ne = m.pipe.encode_prompt(prompt, m.device, 1, True, negative_prompt=negative)
    return {"prompt_embeds": pe, "negative_prompt_embeds": ne}


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_short_plain_prompt_is_exactly_diffusers_encoding(models, arch):
    m = models(arch)
    for neg in ("blurry", ""):
        ours = diffusion.encode_prompt(m, "a red fox in snow", neg).tensors
        ref = _standard(m, "a red fox in snow", neg)
        assert ours.keys() == ref.keys()
        for k in ref:
            assert torch.equal(ours[k], ref[k]), (arch, neg, k)


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_long_prompts_are_chunked_and_the_tail_counts(models, arch):
    m = models(arch)
    cond = diffusion.encode_prompt(m, LONG, "").tensors
    assert cond["prompt_embeds"].shape[1] == 2 * 77   # two chunks; the negative padded to match
    assert cond["negative_prompt_embeds"].shape == cond["prompt_embeds"].shape
    a = _latents(m, LONG)
    b = _latents(m, LONG + "purple storm")   # differs only after token 124
    assert not torch.equal(a, b)
    assert torch.equal(a, _latents(m, LONG))
    # a long negative with a short prompt works too
    assert _latents(m, "fox", negative=LONG).shape == a.shape
    if arch == "sdxl":   # pooled embedding from the first chunk: the tail does not change it
        c2 = diffusion.encode_prompt(m, LONG + "purple storm", "").tensors
        assert torch.equal(cond["pooled_prompt_embeds"], c2["pooled_prompt_embeds"])


def test_a_chunk_ends_at_a_comma_in_its_last_20_tokens(models):
    """A1111's comma rule: a chunk that fills up breaks after its last comma if that comma is among its last 20
    tokens, and the words after it start the next chunk; with no comma there, it breaks at 75 tokens."""
    from engine.conditioning import _chunk_ids

    tok = models("sd15").pipe.tokenizer
    comma = tok(",", add_special_tokens=False).input_ids[-1]

    def body(chunk):   # a chunk's tokens: between BOS and EOS
        return chunk[1:chunk.index(tok.eos_token_id, 1)]

    ids = tok(LONG, add_special_tokens=False).input_ids   # 102 tokens, commas among them
    cut = max(i for i in range(55, 75) if ids[i] == comma) + 1   # the last comma in tokens 55..74
    chunks, _ = _chunk_ids(tok, LONG)
    assert [body(c) for c in chunks] == [ids[:cut], ids[cut:]] and cut < 75
    words = " ".join(["fox"] * 100)   # no comma at all: cut every 75
    ids = tok(words, add_special_tokens=False).input_ids
    assert [body(c) for c in _chunk_ids(tok, words)[0]] == [ids[i:i + 75] for i in range(0, len(ids), 75)]
    early = " ".join(["fox"] * 15) + ", " + " ".join(["owl"] * 30)   # one comma, more than 20 tokens back
    ids = tok(early, add_special_tokens=False).input_ids
    assert comma in ids[:55] and comma not in ids[55:75]
    assert [body(c) for c in _chunk_ids(tok, early)[0]][0] == ids[:75]


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_break_starts_a_chunk(models, arch):
    m = models(arch)
    one = diffusion.encode_prompt(m, "a fox, snow", "").tensors["prompt_embeds"]
    two = diffusion.encode_prompt(m, "a fox BREAK snow", "").tensors["prompt_embeds"]
    assert one.shape[1] == 77 and two.shape[1] == 154
    fox = diffusion.encode_prompt(m, "a fox", "").tensors["prompt_embeds"]
    snow = diffusion.encode_prompt(m, "snow", "").tensors["prompt_embeds"]
    # each chunk encoded on its own (batched with the other: equal up to float rounding)
    assert torch.allclose(two, torch.cat([fox, snow], dim=1), atol=1e-5)


@pytest.mark.parametrize("arch", ["sd15", "sd2", "sdxl"])
def test_weights(models, arch):
    m = models(arch)
    plain = _latents(m, "a red fox")
    assert torch.equal(plain, _latents(m, "a (red:1.0) fox"))   # weight 1 = no weight: same numbers
    up, down = _latents(m, "a (red:1.5) fox"), _latents(m, "a [red] fox")
    assert not torch.equal(plain, up) and not torch.equal(plain, down) and not torch.equal(up, down)
    assert torch.equal(up, _latents(m, "a (red:1.5) fox"))
    # malformed syntax never fails a job
    assert _latents(m, "a ((red fox").shape == plain.shape
    # A1111's rule: weighted hidden states, then the chunk's mean restored
    e1 = diffusion.encode_prompt(m, "a red fox", "").tensors["prompt_embeds"]
    e2 = diffusion.encode_prompt(m, "a (red:1.5) fox", "").tensors["prompt_embeds"]
    assert torch.allclose(e1.float().mean(), e2.float().mean(), rtol=1e-4, atol=1e-6)


def test_embeddings_and_weights_combine(models):
    from engine.models.patch import EmbeddingWeights, patcher_for

    m = models("sd15")
    g = torch.Generator().manual_seed(3)
    emb = EmbeddingWeights("style", "sd1", {"clip_l": torch.randn(2, 32, generator=g)})
    patcher = patcher_for(m)
    try:
        tokens = patcher.add_embedding("style", emb)
        base = diffusion.encode_prompt(m, f"a fox, {tokens}", "").tensors["prompt_embeds"]
        weighted = diffusion.encode_prompt(m, f"a fox, ({tokens}:1.4)", "").tensors["prompt_embeds"]
        without = diffusion.encode_prompt(m, "a fox, ", "").tensors["prompt_embeds"]
        assert not torch.equal(base, without) and not torch.equal(base, weighted)
        ids = m.pipe.tokenizer(f"a fox, {tokens}").input_ids
        assert max(ids) >= 514   # the embedding's own token ids, not its name spelt out
    finally:
        patcher.reset()


@pytest.mark.parametrize("arch", ["sd15", "sdxl"])
def test_clip_skip(models, arch):
    m = models(arch)
    one = diffusion.encode_prompt(m, "a red fox", "").tensors["prompt_embeds"]
    two = diffusion.encode_prompt(m, "a red fox", "", clip_skip=2).tensors["prompt_embeds"]
    assert one.shape == two.shape and not torch.equal(one, two)
    te = m.pipe.text_encoder
    ids = m.pipe.tokenizer("a red fox", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        hs = te(ids, output_hidden_states=True).hidden_states
        if arch == "sd15":   # the penultimate layer, through the final layer norm (as A1111 and diffusers do)
            want = te.text_model.final_layer_norm(hs[-2]) if hasattr(te, "text_model") else te.final_layer_norm(hs[-2])
            assert torch.equal(two, want)
        else:   # SDXL's standard layer is already the penultimate: clip_skip 2 takes the one before
            assert torch.equal(two[..., :32], hs[-3])
    with pytest.raises(BadRequest, match="clip_skip"):
        diffusion.encode_prompt(m, "a", "", clip_skip=0)


def test_sampler_labels_equal_ids_and_schedules_apply(models):
    m = models("sd15")
    assert torch.equal(_latents(m, "fox", scheduler="DPM++ 2M Karras"), _latents(m, "fox", scheduler="dpmpp_2m_karras"))
    assert torch.equal(_latents(m, "fox", scheduler="DPM++ 2M", schedule="karras"),
                       _latents(m, "fox", scheduler="dpmpp_2m_karras"))
    first = _latents(m, "fox")
    assert not torch.equal(_latents(m, "fox", scheduler="Euler", schedule="trailing"), first)
    assert not torch.equal(_latents(m, "fox", scheduler="Euler", schedule="karras", steps=3),
                           _latents(m, "fox", steps=3))
    assert torch.equal(_latents(m, "fox"), first)   # one job's schedule does not carry over to the next
    with pytest.raises(BadRequest, match="karras schedule does not apply"):
        _latents(m, "fox", scheduler="DDIM", schedule="karras")
    with pytest.raises(BadRequest, match="unknown scheduler"):
        _latents(m, "fox", scheduler="plms")


def test_fp16_vae_nan_falls_back_to_fp32():
    """A VAE that overflows in fp16 (as SDXL's original does) gives a real image, not NaN/black."""
    from engine.models.loader import LoadedModel

    pipe = build_pipeline("sd15")
    vae = pipe.vae
    with torch.no_grad():   # blow up the decoder's first activations: fine in fp32 (normalised), inf in fp16
        vae.decoder.conv_in.weight.mul_(300)
        vae.decoder.conv_in.bias.mul_(300)
    lat = torch.randn(1, 4, 32, 32, generator=torch.Generator().manual_seed(0)) * 30
    m32 = LoadedModel("x", None, "sd1", pipe, torch.device("cpu"), torch.float32, 64, "epsilon")
    ref = diffusion.decode(m32, lat)
    vae.to(torch.float16)
    with torch.inference_mode():
        raw = vae.decode(lat.half() / vae.config.scaling_factor, return_dict=False)[0]
    assert not torch.isfinite(raw).all()   # the failure is real in fp16
    m16 = LoadedModel("x", None, "sd1", pipe, torch.device("cpu"), torch.float16, 64, "epsilon")
    img = diffusion.decode(m16, lat)
    assert vae.dtype == torch.float16   # put back after the fp32 retry
    assert np.abs(img.astype(int) - ref.astype(int)).max() <= 2 and img.std() > 0


# ---- through the engine --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine_with_vae(tmp_path_factory, demo_models):
    """The demo models plus a second SD1 VAE (a diffusers folder) and an SDXL one."""
    import shutil

    from diffusers import AutoencoderKL

    from engine.models.demo import _sd_vae
    from engine.process import EngineProcess

    root = tmp_path_factory.mktemp("vae-models")
    shutil.copytree(demo_models / "tiny-sd15", root / "tiny-sd15")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        _sd_vae().save_pretrained(root / "other-vae")
        _sd_vae(scaling_factor=0.13025).save_pretrained(root / "xl-vae")
    assert AutoencoderKL.load_config(root / "other-vae")["_class_name"] == "AutoencoderKL"
    proc = EngineProcess(tmp_path_factory.mktemp("vae-engine"), ["--models", str(root)], app="pytest").start()
    yield proc
    proc.kill()


def test_engine_generate_args(engine_with_vae):
    from protocol.errors import ProtocolError

    c = engine_with_vae.client()
    try:
        base = {"model": "tiny-sd15", "prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "seed": 9}
        out = {}
        for key, extra in (("plain", {}), ("w1", {"prompt": "a (red:1.0) fox"}),
                           ("long", {"prompt": LONG}), ("longer", {"prompt": LONG + "purple storm"}),
                           ("label", {"scheduler": "DPM++ 2M Karras"}), ("id", {"scheduler": "dpmpp_2m_karras"}),
                           ("skip", {"clip_skip": 2}), ("vae", {"vae": "other-vae"})):
            _, reply, ev, _ = run_job(c, {**base, **extra})
            assert ev.name == "job.result", (key, ev.data)
            out[key] = fetch(c, ev.data["layers"][0])
        assert np.array_equal(out["plain"], out["w1"])
        assert not np.array_equal(out["long"], out["longer"])
        assert np.array_equal(out["label"], out["id"]) and not np.array_equal(out["label"], out["plain"])
        assert not np.array_equal(out["skip"], out["plain"])
        assert not np.array_equal(out["vae"], out["plain"])
        # the override lasts one job: the next plain job is bit-identical to the first
        _, _, ev, _ = run_job(c, base)
        assert np.array_equal(fetch(c, ev.data["layers"][0]), out["plain"])
        job = c.call("job.get", {"job": reply["job"]})
        assert job  # recorded
        for bad, match in (({"scheduler": "plms"}, "unknown scheduler"),
                           ({"scheduler": "DDIM", "schedule": "karras"}, "karras"),
                           ({"clip_skip": 0}, "clip_skip"), ({"vae": "nope"}, "nope"),
                           ({"vae": "xl-vae"}, "SDXL"), ({"vae": "tiny-sd15"}, "not a vae")):
            with pytest.raises(ProtocolError) as e:
                c.call("generate", {**base, **bad})
            assert e.value.code in ("bad_request", "not_found") and match.lower() in str(e.value).lower(), bad
        # what exists, for pickers
        nodes = c.call("nodes.list", {})
        assert {"id": "dpmpp_2m_karras", "label": "DPM++ 2M Karras", "schedules": ["karras"]} in nodes["samplers"]
        assert {"id": "ddim", "label": "DDIM", "schedules": ["default", "trailing"]} in nodes["samplers"]
        assert "karras" in nodes["schedules"]
        assert "DDIM" not in nodes["nodes"]["denoise"]["inputs"]["scheduler"]["choices"]
        assert "ddim" in nodes["nodes"]["denoise"]["inputs"]["scheduler"]["choices"]
        assert nodes["nodes"]["prompt"]["inputs"]["clip_skip"]["default"] == 1
        assert "vae" in nodes["nodes"]["load_model"]["inputs"]
        vaes = {m["name"]: m["base"] for m in c.call("models.list", {"type": "vae"})["models"]}
        assert vaes == {"other-vae": "sd1", "xl-vae": "sdxl"}
    finally:
        c.close()

"""Models: probe (stripped files of every type/base), the manager (CLI + ops), LoRA, embeddings, the cache."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from engine import diffusion
from engine.errors import BadRequest, ModelError
from engine.models.demo import make_demo, tiny_lora
from engine.models.probe import probe
from protocol.errors import ProtocolError

from .helpers import EngineProc, cli, cli_run, new_user, run_job

warnings.filterwarnings("ignore")
H = torch.float16


def _st(path: Path, shapes: dict, dtype=H, meta=None) -> Path:
    """A stripped .safetensors: the right tensor names and shapes, zeros for data."""
    save_file({k: torch.zeros(s, dtype=dtype) for k, s in shapes.items()}, str(path), metadata=meta)
    return path


UNET = "model.diffusion_model."
SD1 = {UNET + "input_blocks.0.0.weight": (320, 4, 3, 3),
       UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
       "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,)}
SD2 = {UNET + "input_blocks.0.0.weight": (320, 4, 3, 3),
       UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
       "cond_stage_model.model.ln_final.weight": (1024,)}
SDXL = {UNET + "input_blocks.0.0.weight": (320, 4, 3, 3),
        "conditioner.embedders.1.model.ln_final.weight": (1280,)}
FLUX = {"double_blocks.0.img_attn.norm.key_norm.scale": (128,), "img_in.weight": (3072, 64)}
KOHYA = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
PEFT = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"


def _expect(kind, base, fmt="checkpoint", variant="normal", prediction=None):
    return {"type": kind, "base": base, "variant": variant, "prediction_type": prediction, "format": fmt}


@pytest.fixture(scope="module")
def stripped(tmp_path_factory):
    d = tmp_path_factory.mktemp("stripped")
    files = {}

    def add(name, expected, shapes=None, meta=None, path=None):
        files[name] = (path or _st(d / name, shapes, meta=meta), expected)

    add("sd1.safetensors", _expect("main", "sd1", prediction="epsilon"), SD1)
    add("sd1-inpaint.safetensors", _expect("main", "sd1", variant="inpaint", prediction="epsilon"),
        {**SD1, UNET + "input_blocks.0.0.weight": (320, 9, 3, 3)})
    add("sd2.safetensors", _expect("main", "sd2"), SD2)
    add("sd2-v.safetensors", _expect("main", "sd2", prediction="v_prediction"), SD2,
        meta={"modelspec.prediction_type": "v"})
    add("sd2-depth.safetensors", _expect("main", "sd2", variant="depth"),
        {**SD2, UNET + "input_blocks.0.0.weight": (320, 5, 3, 3)})
    add("sdxl.safetensors", _expect("main", "sdxl", prediction="epsilon"), SDXL)
    add("flux.safetensors", _expect("main", "flux", prediction="flow"), FLUX)
    add("flux-fill.safetensors", _expect("main", "flux", variant="inpaint", prediction="flow"),
        {**FLUX, "img_in.weight": (3072, 384)})
    add("lora-kohya-sd1.safetensors", _expect("lora", "sd1"),
        {KOHYA + ".lora_down.weight": (4, 768), KOHYA + ".lora_up.weight": (320, 4), KOHYA + ".alpha": ()})
    add("lora-kohya-sdxl.safetensors", _expect("lora", "sdxl"),
        {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280),
         "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (1280, 4),
         "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)})
    add("lora-peft-sdxl.safetensors", _expect("lora", "sdxl"),
        {PEFT + ".lora_A.weight": (4, 2048), PEFT + ".lora_B.weight": (320, 4)})
    add("lora-peft-sd2.safetensors", _expect("lora", "sd2"),
        {PEFT + ".lora_A.weight": (4, 1024), PEFT + ".lora_B.weight": (320, 4)})
    add("lora-flux.safetensors", _expect("lora", "flux"),
        {"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": (4, 3072),
         "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": (3072, 4)})
    add("emb-sd1.safetensors", _expect("embedding", "sd1"), {"emb_params": (2, 768)})
    add("emb-sd2.safetensors", _expect("embedding", "sd2"), {"emb_params": (2, 1024)})
    add("emb-sdxl.safetensors", _expect("embedding", "sdxl"), {"clip_l": (2, 768), "clip_g": (2, 1280)})
    pt = d / "emb-sd1.pt"
    torch.save({"string_to_param": {"*": torch.zeros(3, 768)}, "string_to_token": {"*": 265}, "name": "x",
                "step": 100}, pt)
    add("emb-sd1.pt", _expect("embedding", "sd1"), path=pt)
    add("vae-sd1.safetensors", _expect("vae", "sd1"),
        {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)})
    add("sdxl_vae.safetensors", _expect("vae", "sdxl"),
        {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)})
    add("vae-flux.safetensors", _expect("vae", "flux"),
        {"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 16, 3, 3)})
    add("cn-sd1.safetensors", _expect("controlnet", "sd1"),
        {"control_model.input_hint_block.0.weight": (16, 3, 3, 3),
         "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)})
    add("cn-sdxl.safetensors", _expect("controlnet", "sdxl"),
        {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3), "add_embedding.linear_1.weight": (1280, 2816)})
    add("cn-flux.safetensors", _expect("controlnet", "flux"),
        {"controlnet_x_embedder.weight": (3072, 64), "transformer_blocks.0.attn.to_q.weight": (64, 64)})
    from engine.models.demo import tiny_esrgan
    esr = tiny_esrgan()
    add("esrgan.safetensors", _expect("upscaler", None), path=_save_sf(esr.state_dict(), d / "esrgan.safetensors"))
    pth = d / "esrgan.pth"
    torch.save({"params_ema": esr.state_dict()}, pth)   # BasicSR wrapper, as Real-ESRGAN ships them
    add("esrgan.pth", _expect("upscaler", None), path=pth)
    ckpt = d / "old-sd1.ckpt"
    torch.save({"state_dict": {k: torch.zeros(s, dtype=H) for k, s in SD1.items()}, "global_step": 1}, ckpt)
    add("old-sd1.ckpt", _expect("main", "sd1", prediction="epsilon"), path=ckpt)
    return d, files


def _save_sf(sd, path):
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return path


def test_probe_every_type_and_base(stripped):
    _, files = stripped
    for name, (path, expected) in files.items():
        assert path.stat().st_size < 8 * 1024 * 1024, name
        assert probe(path) == expected, name


@pytest.mark.slow   # builds a demo model
def test_probe_diffusers_folders(tmp_path):
    main = make_demo(tmp_path / "build", "sd15")
    assert probe(main) == _expect("main", "sd1", "diffusers", prediction="epsilon")
    vae = tmp_path / "vae-xl"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", "latent_channels": 4,
                                                 "scaling_factor": 0.13025}))
    assert probe(vae) == _expect("vae", "sdxl", "diffusers")
    cn = tmp_path / "cn"
    cn.mkdir()
    (cn / "config.json").write_text(json.dumps({"_class_name": "ControlNetModel", "cross_attention_dim": 1024}))
    assert probe(cn) == _expect("controlnet", "sd2", "diffusers")


@pytest.mark.slow   # each `paintbridge` command starts a Python that imports torch
def test_probe_cli_json_and_errors(stripped, tmp_path):
    _, files = stripped
    path, expected = files["lora-kohya-sd1.safetensors"]
    assert json.loads(cli("models", "probe", str(path), "--json")) == expected
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 50)
    unknown = _st(tmp_path / "unknown.safetensors", {"foo.bar": (3,)})
    for p in (bad, unknown, tmp_path / "missing.safetensors", tmp_path / "notes.txt"):
        res = cli_run("models", "probe", str(p), "--json")
        assert res.returncode != 0 and res.stdout == "", p
        assert res.stderr.startswith("error: ") and "Traceback" not in res.stderr, res.stderr


def test_probe_never_unpickles_code(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"x": Evil()}}, evil)
    with pytest.raises(ModelError, match="safely"):
        probe(evil)
    assert not marker.exists()


# ---- manager ---------------------------------------------------------------------------------------------------
@pytest.mark.slow   # each `paintbridge` command starts a Python that imports torch
def test_manager_cli_scan_install_list_remove(stripped, tmp_path):
    d, files = stripped
    data = tmp_path / "data"
    out = cli("models", "scan", str(d), "--data-dir", str(data), "--hash", "--quiet")
    assert f"{len(files) - 2} added" in out and "2 skipped" in out and "is taken by" in out, out
    listed = {m["name"]: m for m in json.loads(cli("models", "list", "--json", "--data-dir", str(data)))}
    # two files share the stem esrgan / emb-sd1: one keeps the name, the other is reported as skipped
    assert "esrgan" in listed and listed["lora-kohya-sd1"]["type"] == "lora"
    lora = listed["lora-kohya-sd1"]
    assert lora["base"] == "sd1" and lora["size"] > 0 and len(lora["sha256"]) == 64
    import hashlib
    assert lora["sha256"] == hashlib.sha256(files["lora-kohya-sd1.safetensors"][0].read_bytes()).hexdigest()
    assert listed["sd2-v"]["prediction_type"] == "v_prediction"
    loras = json.loads(cli("models", "list", "--json", "--type", "lora", "--base", "sdxl", "--data-dir", str(data)))
    assert sorted(m["name"] for m in loras) == ["lora-kohya-sdxl", "lora-peft-sdxl"]

    # install --copy puts it under DATA_DIR/models/TYPE/ ; remove deletes only that copy
    src = files["emb-sdxl.safetensors"][0]
    cli("models", "install", str(src), "--copy", "--name", "my-style", "--data-dir", str(data))
    copied = data / "models" / "embedding" / "my-style.safetensors"
    assert copied.exists()
    assert "my-style" in cli("models", "list", "--data-dir", str(data))
    cli("models", "remove", "my-style", "--data-dir", str(data))
    assert not copied.exists() and src.exists()
    # traversal in names is refused; nothing is written outside
    for bad in ("../evil", "a/b", ".hidden"):
        res = cli_run("models", "install", str(src), "--copy", "--name", bad, "--data-dir", str(data))
        assert res.returncode == 1 and "invalid model name" in res.stderr
    assert not (data / "models" / "evil.safetensors").exists()
    # a scanned model removed stays on disk and stays hidden on the next scan
    cli("models", "remove", "vae-sd1", "--data-dir", str(data))
    cli("models", "scan", str(d), "--data-dir", str(data), "--quiet")
    names = [m["name"] for m in json.loads(cli("models", "list", "--json", "--data-dir", str(data)))]
    assert "vae-sd1" not in names and files["vae-sd1.safetensors"][0].exists()


def test_registry_notices_changed_and_removed_files(tmp_path):
    from engine.models.registry import ModelRegistry

    d = tmp_path / "m"
    d.mkdir()
    p = _st(d / "thing.safetensors", {"emb_params": (1, 768)})
    reg = ModelRegistry([d])
    assert reg.get("thing").type == "embedding"
    _st(p, {KOHYA + ".lora_down.weight": (4, 768), KOHYA + ".lora_up.weight": (320, 4)})   # replaced in place
    import os
    os.utime(p, (p.stat().st_atime, p.stat().st_mtime + 5))
    assert reg.get("thing").type == "lora"
    assert reg.list()[0].sha256 is None            # hash reset: content changed
    p.unlink()
    with pytest.raises(BadRequest, match="missing"):
        reg.get("thing")
    assert reg.list()[0].missing
    reg.rescan()                                    # the next scan drops it
    assert reg.list() == []
    with pytest.raises(BadRequest, match="unknown model"):
        reg.get("thing")
    with pytest.raises(BadRequest, match="invalid model name"):
        reg.get("../../etc/passwd")


# ---- LoRA and embeddings on a tiny model -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from engine.models.loader import load_model

    d = tmp_path_factory.mktemp("tiny")
    path = make_demo(d / "build", "sd15").rename(d / "tiny-sd15")
    return path, load_model(path, name="tiny-sd15")


def _img(m, prompt="a red fox", seed=3):
    cond = diffusion.encode_prompt(m, prompt, "")
    lat = diffusion.denoise(m, cond, width=64, height=64, steps=2, guidance=5.0, seed=seed)
    return diffusion.decode(m, lat)


@pytest.mark.slow   # builds and loads a demo model
@pytest.mark.parametrize("layout", ["kohya", "peft"])
def test_lora_changes_output_and_comes_off_exactly(tiny, tmp_path, layout):
    from engine.models.patch import load_lora, patcher_for
    from engine.models.registry import ModelEntry

    path, m = tiny
    before = {k: v.clone() for k, v in m.pipe.unet.state_dict().items()}
    base = _img(m)
    lp = tiny_lora(m.pipe, tmp_path / f"l-{layout}.safetensors", layout)
    assert probe(lp)["type"] == "lora" and probe(lp)["base"] == "sd1"
    lw = load_lora(ModelEntry("l", lp, "sd1", "lora"))
    p = patcher_for(m)
    p.set_loras((("l", 1.0, lw),))
    with_lora = _img(m)
    assert not np.array_equal(base, with_lora)
    p.set_loras((("l", 0.5, lw),))               # another weight: weights switch, not stack
    half = _img(m)
    assert not np.array_equal(half, with_lora) and not np.array_equal(half, base)
    p.reset()
    assert np.array_equal(_img(m), base)
    after = m.pipe.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.slow   # builds and loads a demo model
def test_lora_for_another_model_size_is_refused(tiny, tmp_path):
    from engine.models.patch import load_lora, patcher_for
    from engine.models.registry import ModelEntry

    _, m = tiny
    p = _st(tmp_path / "big.safetensors", {KOHYA + ".lora_down.weight": (4, 768), KOHYA + ".lora_up.weight": (320, 4)},
            dtype=torch.float32)
    lw = load_lora(ModelEntry("big", p, "sd1", "lora"))
    base = _img(m)
    with pytest.raises(ModelError):
        patcher_for(m).set_loras((("big", 1.0, lw),))
    assert np.array_equal(_img(m), base)          # nothing left half-applied


@pytest.mark.slow   # builds and loads a demo model
def test_embedding_changes_output_and_comes_off(tiny, tmp_path):
    from engine.models.patch import load_embedding, patcher_for
    from engine.models.registry import ModelEntry

    _, m = tiny
    e = tmp_path / "style.safetensors"
    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(1)) * 3}, str(e))
    emb = load_embedding(ModelEntry("style", e, "sd1", "embedding"))
    base = _img(m, "a fox")
    tok_before = m.pipe.tokenizer
    text = patcher_for(m).add_embedding("style", emb)
    assert len(text.split()) == 2
    styled = _img(m, f"a {text} fox")
    assert not np.array_equal(base, styled)
    patcher_for(m).reset()
    assert m.pipe.tokenizer is tok_before
    assert np.array_equal(_img(m, "a fox"), base)
    # an SDXL embedding (clip_l + clip_g) does not fit an SD1 model
    x = _st(tmp_path / "xl.safetensors", {"clip_l": (1, 768), "clip_g": (1, 1280)}, dtype=torch.float32)
    with pytest.raises(BadRequest, match="wide"):
        patcher_for(m).add_embedding("xl", load_embedding(ModelEntry("xl", x, "sdxl", "embedding")))
    patcher_for(m).reset()


# ---- the cache -------------------------------------------------------------------------------------------------
@pytest.mark.slow   # builds and loads a demo model
def test_cache_keeps_within_budget_and_evicts_lru(tmp_path):
    from engine.models.cache import ModelCache
    from engine.models.registry import ModelRegistry

    d = tmp_path / "m"
    d.mkdir()
    for n in ("a", "b"):
        make_demo(d / "build", "sd15").rename(d / f"tiny-{n}")
    events = []
    reg = ModelRegistry([d])
    one = ModelCache(reg, ram_budget_mb=10_000, on_event=lambda n, data: events.append((n, data["model"])))
    a = one.get("tiny-a")
    assert one.get("tiny-a") is a and one.loads == 1 and one.hits == 1     # no reloading within the budget
    one.get("tiny-b")
    assert one.loads == 2 and set(one.loaded()) == {"tiny-a", "tiny-b"}
    size_mb = one.stats()["loaded"][0]["size_mb"]
    assert 1 < size_mb < 50
    # a budget that holds one tiny model: loading b evicts a (least recently used), a again evicts b
    small = ModelCache(reg, ram_budget_mb=int(size_mb * 1.5) + 1,
                       on_event=lambda n, data: events.append((n, data["model"])))
    small.get("tiny-a")
    small.get("tiny-b")
    assert small.loaded() == ["tiny-b"] and ("model.unloaded", "tiny-a") in events
    small.get("tiny-b")
    assert small.loads == 2
    small.get("tiny-a")
    assert small.loaded() == ["tiny-a"] and small.loads == 3 and small.evictions == 2
    assert small.unload() == ["tiny-a"] and small.loaded() == []


# ---- through the engine -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny):
    path, m = tiny
    d = tmp_path_factory.mktemp("models-engine")
    shutil.copytree(path, d / "tiny-sd15")
    tiny_lora(m.pipe, d / "fox-lora.safetensors")
    _st(d / "xl-lora.safetensors", {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight": (4, 1280),
                                    "lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight": (1280, 4)})
    save_file({"emb_params": torch.randn(2, 32, generator=torch.Generator().manual_seed(1)) * 3},
              str(d / "my-style.safetensors"))
    _st(d / "xl-style.safetensors", {"clip_l": (1, 768), "clip_g": (1, 1280)})
    proc = EngineProc(tmp_path_factory.mktemp("models-data"), ["--models", str(d)]).start()
    proc.model_name = "tiny-sd15"
    c = proc.client()
    yield proc, c, d
    c.close()
    proc.kill()


def _run(client, args):
    _, _, res, _ = run_job(client, args)
    assert res.name == "job.result", res.data
    return client.download(res.data["layers"][0]["sha256"])


@pytest.mark.slow   # builds a demo model and starts an engine
def test_engine_lists_and_filters_models(engine):
    _, c, _ = engine
    res = c.call("models.list", {})
    by = {m["name"]: m for m in res["models"]}
    assert by["tiny-sd15"]["type"] == "main" and by["tiny-sd15"]["base"] == "sd1"
    assert by["fox-lora"]["type"] == "lora" and by["my-style"]["type"] == "embedding"
    assert [m["name"] for m in c.call("models.list", {"type": "lora", "base": "sdxl"})["models"]] == ["xl-lora"]
    assert "loads" in res["cache"]


@pytest.mark.slow   # builds a demo model and starts an engine
def test_engine_lora_and_embedding_jobs_then_original_pixels(engine):
    _, c, _ = engine
    args = {"model": "tiny-sd15", "prompt": "a red fox", "width": 64, "height": 64, "steps": 2, "seed": 11}
    plain = _run(c, args)
    loads = c.call("models.list", {})["cache"]["loads"]
    with_lora = _run(c, {**args, "loras": [{"model": "fox-lora", "weight": 1.0}]})
    assert with_lora != plain
    assert _run(c, args) == plain                              # the LoRA came off the cached model
    styled = _run(c, {**args, "prompt": "a <my-style> fox"})
    assert styled != _run(c, {**args, "prompt": "a fox"})
    assert _run(c, args) == plain
    # LoRA weights and embeddings are cached too, and the main model never loaded again
    stats = c.call("models.list", {})["cache"]
    assert stats["loads"] == loads + 2 and stats["hits"] > 0


@pytest.mark.slow   # builds a demo model and starts an engine
def test_engine_refuses_addons_for_another_base_before_queueing(engine):
    _, c, _ = engine
    before = len(c.call("job.list", {"limit": 500})["jobs"])
    base = {"model": "tiny-sd15", "width": 64, "height": 64, "steps": 1}
    for args, words in [({**base, "loras": [{"model": "xl-lora", "weight": 1}]}, "is for SDXL models"),
                        ({**base, "prompt": "a <xl-style> cat"}, "is for SDXL models"),
                        ({**base, "loras": [{"model": "my-style"}]}, "not a lora model"),
                        ({**base, "loras": [{"model": "nope"}]}, "unknown model"),
                        ({"mode": "txt2img", "model": "fox-lora", "width": 64, "height": 64}, "not a main model")]:
        with pytest.raises(ProtocolError) as e:
            c.call("generate", args)
        assert e.value.code == "bad_request" and words in e.value.message, (args, e.value.message)
    graph = {"nodes": {"m": {"type": "load_model", "model": "tiny-sd15"},
                       "l": {"type": "lora", "lora": "xl-lora"},
                       "p": {"type": "prompt", "text": "x"}, "n": {"type": "noise", "width": 64, "height": 64},
                       "d": {"type": "denoise", "steps": 1}, "v": {"type": "vae_decode"}, "o": {"type": "output"}},
             "edges": [{"from": ["m", "model"], "to": ["l", "model"]}, {"from": ["l", "model"], "to": ["p", "model"]},
                       {"from": ["l", "model"], "to": ["d", "model"]}, {"from": ["p", "conditioning"], "to": ["d", "conditioning"]},
                       {"from": ["n", "noise"], "to": ["d", "noise"]}, {"from": ["m", "model"], "to": ["v", "model"]},
                       {"from": ["d", "latents"], "to": ["v", "latents"]}, {"from": ["v", "image"], "to": ["o", "image"]}]}
    with pytest.raises(ProtocolError) as e:
        c.call("graph.submit", {"graph": graph})
    assert "is for SDXL models" in e.value.message
    assert len(c.call("job.list", {"limit": 500})["jobs"]) == before
    # the same graph with the right LoRA runs
    graph["nodes"]["l"]["lora"] = "fox-lora"
    job = c.call("graph.submit", {"graph": graph})["job"]
    ev = c.next_event(300, match=lambda e: e.data.get("job") == job and e.name in ("job.result", "job.failed"))
    assert ev.name == "job.result", ev.data


@pytest.mark.slow   # builds a demo model and starts an engine
def test_engine_manager_ops_are_admin_only_and_work(engine, tmp_path):
    proc, c, d = engine
    extra = tmp_path / "extra"
    extra.mkdir()
    save_file({"emb_params": torch.zeros(1, 32)}, str(extra / "new-emb.safetensors"))
    rep = c.call("models.scan", {"dir": str(extra)})
    assert rep["added"] == ["new-emb"]
    assert c.call("models.remove", {"model": "new-emb"})["model"]["name"] == "new-emb"
    with pytest.raises(ProtocolError) as e:
        c.call("models.remove", {"model": "../x"})
    assert e.value.code == "bad_request"
    got = c.call("models.install", {"path": str(extra / "new-emb.safetensors"), "name": "again"})
    assert got["model"]["type"] == "embedding"
    bob = new_user(proc)
    for op, args in (("models.scan", {"dir": str(extra)}), ("models.install", {"path": str(extra)}),
                     ("models.remove", {"model": "again"}), ("models.unload", {})):
        with pytest.raises(ProtocolError) as e:
            bob.call(op, args)
        assert e.value.code == "forbidden"
    assert "path" not in bob.call("models.list", {})["models"][0]
    bob.close()


@pytest.mark.slow   # builds and loads a demo model
def test_sdxl_kohya_lora_te1_te2_and_embedding(tmp_path):
    """kohya SDXL names (lora_unet_ / lora_te1_ / lora_te2_) and a clip_l + clip_g embedding on the tiny SDXL."""
    from engine.models.loader import load_model
    from engine.models.patch import load_embedding, load_lora, lora_deltas, patcher_for
    from engine.models.registry import ModelEntry

    m = load_model(make_demo(tmp_path / "b", "sdxl"))
    g = torch.Generator().manual_seed(0)
    sd = {}
    for comp, pre in (("unet", "lora_unet_"), ("text_encoder", "lora_te1_"), ("text_encoder_2", "lora_te2_")):
        for n, mod in getattr(m.pipe, comp).named_modules():
            if isinstance(mod, torch.nn.Linear) and ("to_k" in n or "q_proj" in n):
                n2 = n if comp == "unet" or n.startswith("text_model.") else "text_model." + n
                k = pre + n2.replace(".", "_")
                sd[k + ".lora_down.weight"] = torch.randn(2, mod.in_features, generator=g)
                sd[k + ".lora_up.weight"] = torch.randn(mod.out_features, 2, generator=g)
    save_file(sd, str(tmp_path / "xl.safetensors"))
    assert probe(tmp_path / "xl.safetensors")["base"] == "sdxl"
    lw = load_lora(ModelEntry("xl", tmp_path / "xl.safetensors", "sdxl", "lora"))
    assert len(lora_deltas(lw, m)) == len(sd) // 2          # every layer found, both text encoders included
    base = _img(m)
    patcher_for(m).set_loras((("xl", 1.0, lw),))
    assert not np.array_equal(_img(m), base)
    patcher_for(m).reset()
    save_file({"clip_l": torch.randn(2, 32, generator=g), "clip_g": torch.randn(2, 48, generator=g)},
              str(tmp_path / "e.safetensors"))
    emb = load_embedding(ModelEntry("e", tmp_path / "e.safetensors", "sdxl", "embedding"))
    text = patcher_for(m).add_embedding("e", emb)
    assert not np.array_equal(_img(m, f"a {text} fox"), _img(m, "a fox"))
    patcher_for(m).reset()
    assert np.array_equal(_img(m), base)

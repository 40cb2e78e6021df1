"""Control layers and image references (issue 18): preprocessors, the wire's checks, graphs, and — through a real
engine with the tiny demo models — ControlNet, T2I-Adapter and IP-Adapter in every mode."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.canvas import compile_generate
from engine.graph import graph as graphs
from engine.graph.node import node_schema
from engine.nodes.image import region_image
from engine.ops.generate import GenerateArgs
from engine.preprocess import METHODS, canny, gray, preprocess
from protocol.errors import ProtocolError

from .helpers import EngineProc, fetch, pattern, run_job, upload_mask, upload_rgba

LAYER = {"sha256": "a" * 64, "w": 64, "h": 64, "format": "rgba8", "x": 0, "y": 0}


def drawing(w=96, h=80, seed=0) -> np.ndarray:
    """A known RGB image: shapes, a thick line and noise."""
    im = Image.new("RGB", (w, h), (200, 180, 160))
    d = ImageDraw.Draw(im)
    d.ellipse((10, 10, 60, 50), fill=(30, 60, 200))
    d.rectangle((40, 30, 90, 70), fill=(250, 250, 20))
    d.line((0, h - 1, w - 1, 0), fill=(0, 0, 0), width=3)
    noise = np.random.default_rng(seed).integers(-20, 20, (h, w, 3))
    return np.clip(np.asarray(im).astype(int) + noise, 0, 255).astype(np.uint8)


# ---- preprocessors (no engine) -----------------------------------------------------------------------------------
@pytest.mark.parametrize("low,high", [(100, 200), (50, 150), (20, 60)])
def test_canny_matches_opencv(low, high):
    g = cv2.cvtColor(drawing(), cv2.COLOR_RGB2GRAY)
    ours = canny(g, low, high)
    assert (ours > 0).sum() > 100
    assert np.array_equal(ours, cv2.Canny(g, low, high))


def test_canny_preprocessor_is_opencv_canny_of_the_gray_image():
    rgb = drawing(seed=3)
    g = gray(rgb)
    assert np.abs(g.astype(int) - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)).max() <= 1
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    out = preprocess("canny", rgba)
    assert out.shape == rgb.shape and np.array_equal(out[..., 0], cv2.Canny(g, 100, 200))


def test_invert_and_scribble_make_white_lines_on_black():
    # black strokes on a transparent layer (a sketch): transparent counts as white paper
    sketch = np.zeros((64, 64, 4), np.uint8)
    sketch[30:33, 8:56] = (0, 0, 0, 255)
    sketch[8:56, 40:42] = (0, 0, 0, 255)
    lines = np.zeros((64, 64), bool)
    lines[30:33, 8:56] = lines[8:56, 40:42] = True
    inv = preprocess("invert", sketch)
    assert (inv[lines] == 255).all() and (inv[~lines] == 0).all()
    scr = preprocess("scribble", sketch)[..., 0]
    assert set(np.unique(scr)) <= {0, 255}
    assert scr[lines].mean() > 200 and scr[~lines].mean() < 40      # white on the strokes, black around them
    art = preprocess("lineart", sketch)[..., 0]
    assert art[lines].mean() > 3 * max(art[~lines].mean(), 1)


def test_every_preprocessor_keeps_the_size():
    rgba = np.concatenate([drawing(), np.full((80, 96, 1), 255, np.uint8)], axis=2)
    for m in METHODS:
        out = preprocess(m, rgba)
        assert out.shape == (80, 96, 3) and out.dtype == np.uint8, m
    assert np.array_equal(preprocess("none", rgba), rgba[..., :3])


def test_region_image_cuts_the_document_rectangle():
    img = pattern(32, 16)                          # placed at document (10, 20)
    out = region_image(img, 10, 20, 0, 0, 64, 64, 64, 64)
    assert np.array_equal(out[20:36, 10:42], img) and (out[:20] == 0).all() and (out[:, :10] == 0).all()
    half = region_image(img, 10, 20, 10, 20, 32, 16, 16, 8)   # the image's own rectangle at half size
    assert half.shape == (8, 16, 4)


# ---- the wire's checks and the graph (no engine) -------------------------------------------------------------------
def _args(**kw):
    return GenerateArgs.model_validate({"model": "m", "prompt": "p", "width": 64, "height": 64, **kw})


@pytest.mark.parametrize("entry,field", [
    ({"strength": 2.5}, "control.0.strength"),
    ({"start": -0.1}, "control.0.start"),
    ({"end": 1.5}, "control.0.end"),
    ({"start": 0.8, "end": 0.2}, "control.0"),
    ({"preprocess": "depth-anything"}, "control.0.preprocess"),
    ({"image": {**LAYER, "format": "gray8"}}, "control.0"),
    ({"model": ""}, "control.0.model"),
])
def test_bad_control_names_the_field(entry, field):
    from pydantic import ValidationError

    from engine.opspec import bad_args

    with pytest.raises(ValidationError) as exc:
        _args(control=[{"model": "cn", "image": LAYER, **entry}])
    err = bad_args("generate", exc.value)
    assert err.code == "bad_request" and err.details["fields"][0]["field"] == field


def test_defaults_and_graph():
    a = _args(control=[{"model": "cn", "image": {**LAYER, "x": 5}}, {"model": "t2i", "image": LAYER,
                                                                      "preprocess": "canny"}],
              reference=[{"model": "ipa", "image": LAYER}], batch=2, seed=1)
    assert (a.control[0].strength, a.control[0].start, a.control[0].end, a.control[0].preprocess) == \
        (1.0, 0.0, 1.0, "none")
    assert (a.reference[0].strength, a.reference[0].start, a.reference[0].end) == (0.6, 0.0, 1.0)
    raw = compile_generate(a, 64, 1 << 24)
    g = graphs.validate(raw)
    nodes = raw["nodes"]
    assert nodes["cregion0"] == {"type": "region", "x": 0, "y": 0, "width": 64, "height": 64,
                                      "out_width": 64, "out_height": 64}
    assert nodes["cprep1"]["method"] == "canny" and nodes["control1"]["control"] == "t2i"
    into = {(e["to"][0], e["to"][1]): e["from"][0] for e in raw["edges"]}
    assert into[("control1", "previous")] == "control0"
    for i in (0, 1):   # every image of the batch gets both chains
        assert into[(f"denoise{i}", "control")] == "control1" and into[(f"denoise{i}", "reference")] == "reference0"
    assert g is not None


def test_upscale_takes_no_control():
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        GenerateArgs.model_validate({"mode": "upscale", "image": LAYER, "control": [{"model": "c", "image": LAYER}]})


def test_nodes_are_listed_for_workflows():
    schema = node_schema()
    assert schema["control"]["inputs"]["previous"]["type"] == "control"
    assert schema["reference"]["outputs"] == {"reference": "reference"}
    assert schema["preprocess"]["inputs"]["method"]["choices"] == list(METHODS)
    assert schema["denoise"]["inputs"]["control"]["type"] == "control"
    assert {"region", "preprocess", "control", "reference"} <= set(schema)


# ---- through a real engine (slow) -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def control_engine(tmp_path_factory):
    """An engine with the sd15 demo, its ControlNet (a folder, and one file), T2I-Adapter, IP-Adapter (+ image
    encoder), an IP-Adapter whose encoder is not installed, and the SDXL ControlNet (another base)."""
    import shutil

    from engine.models.demo import make_demo, tiny_ip_adapter

    root = tmp_path_factory.mktemp("control-models")
    build = root / "build"
    make_demo(build, "sd15").rename(root / "tiny-sd15")
    make_demo(build, "sdxl").rename(root / "tiny-sdxl")
    make_demo(build, "controlnet-sd15").rename(root / "cn")
    make_demo(build, "controlnet-sd15", "single-file").rename(root / "cn-file.safetensors")
    make_demo(build, "controlnet-sdxl").rename(root / "cn-xl")
    make_demo(build, "t2i-sd15").rename(root / "t2i")
    make_demo(build, "ipadapter-sd15").rename(root / "ipa.safetensors")
    (build / "demo-clip-vision").rename(root / "ipa-encoder")
    from safetensors.torch import save_file
    save_file(tiny_ip_adapter("sd15", image_width=48), str(root / "ipa-orphan.safetensors"))
    shutil.rmtree(build)
    proc = EngineProc(tmp_path_factory.mktemp("control-engine"), ["--models", str(root)]).start()
    client = proc.client()
    client.engine = proc
    yield client
    client.close()
    proc.kill()


BASE = {"model": "tiny-sd15", "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "seed": 5,
        "guidance": 5.0}


def _sha(client, args) -> str:
    _, _, res, _ = run_job(client, args)
    assert res.name == "job.result", res.data
    return res.data["layers"][0]["sha256"]


def _control_image(client):
    img = np.zeros((64, 64, 4), np.uint8)
    img[..., 3] = 255
    img[16:48, 16:48, :3] = 255
    return upload_rgba(client, img)


@pytest.mark.slow
def test_controlnets_strength_range_and_two_at_once(control_engine):
    c = control_engine
    layer = _control_image(c)
    plain = _sha(c, BASE)
    assert _sha(c, {**BASE, "control": [{"model": "cn", "image": layer, "strength": 0.0}]}) == plain
    assert _sha(c, {**BASE, "control": [{"model": "cn", "image": layer, "start": 0.4, "end": 0.4}]}) == plain
    one = _sha(c, {**BASE, "control": [{"model": "cn", "image": layer}]})
    other = _sha(c, {**BASE, "control": [{"model": "cn-file", "image": layer, "preprocess": "invert"}]})
    both = _sha(c, {**BASE, "control": [{"model": "cn", "image": layer},
                                        {"model": "cn-file", "image": layer, "preprocess": "invert"}]})
    assert len({plain, one, other, both}) == 4
    listed = {m["name"]: m for m in c.call("models.list", {})["models"]}
    assert listed["cn"]["type"] == "controlnet" and listed["cn"]["base"] == "sd1"
    assert listed["cn"]["loaded"] and listed["cn-file"]["loaded"]    # kept between jobs like main models
    assert listed["cn"]["preset"]["kind"] == "control" and "preset" not in listed["tiny-sd15"]


@pytest.mark.slow
def test_sdxl_controlnet(control_engine):
    c = control_engine
    layer = _control_image(c)
    args = {**BASE, "model": "tiny-sdxl"}
    plain = _sha(c, args)
    assert _sha(c, {**args, "control": [{"model": "cn-xl", "image": layer, "strength": 0.0}]}) == plain
    assert _sha(c, {**args, "control": [{"model": "cn-xl", "image": layer, "end": 0.5}]}) != plain


@pytest.mark.slow
def test_t2i_adapter_and_ip_adapter(control_engine):
    c = control_engine
    layer = _control_image(c)
    ref = upload_rgba(c, pattern())
    plain = _sha(c, BASE)
    assert _sha(c, {**BASE, "control": [{"model": "t2i", "image": layer, "strength": 0.0}]}) == plain
    t2i = _sha(c, {**BASE, "control": [{"model": "t2i", "image": layer}]})
    assert t2i != plain
    assert _sha(c, {**BASE, "reference": [{"model": "ipa", "image": ref, "strength": 0.0}]}) == plain
    ipa = _sha(c, {**BASE, "reference": [{"model": "ipa", "image": ref}]})
    ipa2 = _sha(c, {**BASE, "reference": [{"model": "ipa", "image": layer, "strength": 1.0}]})
    both = _sha(c, {**BASE, "reference": [{"model": "ipa", "image": ref}, {"model": "ipa", "image": layer,
                                                                             "strength": 1.0}]})
    assert len({plain, ipa, ipa2, both}) == 4
    mixed = _sha(c, {**BASE, "control": [{"model": "t2i", "image": layer}, {"model": "cn", "image": layer}],
                     "reference": [{"model": "ipa", "image": ref}]})
    assert mixed not in (plain, t2i, ipa)
    assert _sha(c, BASE) == plain          # the cached model is left as it was (hook and processors removed)
    listed = {m["name"]: m["type"] for m in c.call("models.list", {})["models"]}
    assert (listed["t2i"], listed["ipa"], listed["ipa-encoder"]) == ("t2i_adapter", "ip_adapter", "clip_vision")


@pytest.mark.slow
def test_every_mode_takes_controls(control_engine):
    c = control_engine
    img = pattern()
    layer = upload_rgba(c, img, x=100, y=40)
    ctl = upload_rgba(c, np.roll(img, 17, axis=1), x=90, y=30)      # in document coordinates, offset
    ref = upload_rgba(c, pattern(32, 32))
    steer = {"control": [{"model": "cn", "image": ctl, "preprocess": "canny"}],
             "reference": [{"model": "ipa", "image": ref}]}
    mask = np.zeros((64, 64), np.uint8)
    mask[10:50, 12:40] = 255
    transparent = img.copy()
    transparent[:, 48:, 3] = 0
    cases = [{"mode": "img2img", "image": layer, "strength": 0.8},
             {"mode": "inpaint", "image": layer, "mask": upload_mask(c, mask, 100, 40), "strength": 1.0},
             {"mode": "outpaint", "image": upload_rgba(c, transparent, 100, 40)}]
    for case in cases:
        args = {**BASE, **case}
        args.pop("width"), args.pop("height")
        plain = _sha(c, args)
        steered = _sha(c, {**args, **steer})
        assert steered != plain, case["mode"]


@pytest.mark.slow
def test_gallery_records_controls_and_recall_restores_them(control_engine):
    c = control_engine
    layer = _control_image(c)
    ref = upload_rgba(c, pattern())
    args = {**BASE, "control": [{"model": "cn", "image": layer, "strength": 0.7, "start": 0.0, "end": 0.5,
                                 "preprocess": "invert"}],
            "reference": [{"model": "ipa", "image": ref, "strength": 0.5}]}
    _, _, res, _ = run_job(c, args)
    out = res.data["layers"][0]
    got = c.call("images.get", {"image": out["image_id"]})
    meta = got["meta"]
    assert meta["control"] == [{"model": "cn", "model_hash": meta["control"][0]["model_hash"], "strength": 0.7,
                                "start": 0.0, "end": 0.5, "preprocess": "invert",
                                "image": {"sha256": layer["sha256"], "w": 64, "h": 64, "x": 0, "y": 0,
                                          "name": None}}]
    assert meta["reference"][0]["model"] == "ipa" and meta["reference"][0]["strength"] == 0.5
    assert meta["reference"][0]["image"]["sha256"] == ref["sha256"]
    assert got["params"]["control"][0]["image"]["sha256"] == layer["sha256"]
    # recall: the same request again, controls included
    _, _, again, _ = run_job(c, {"recall": out["image_id"]})
    assert again.data["layers"][0]["sha256"] == out["sha256"]
    _, _, without, _ = run_job(c, {"recall": out["image_id"], "control": [], "reference": []})
    assert without.data["layers"][0]["sha256"] != out["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize("extra,field,words", [
    ({"control": [{"model": "cn-xl", "image": None}]}, "control.0.model", "sdxl"),
    ({"control": [{"model": "ipa", "image": None}]}, "control.0.model", "not a controlnet"),
    ({"control": [{"model": "nope", "image": None}]}, "control.0.model", "unknown model"),
    ({"reference": [{"model": "cn", "image": None}]}, "reference.0.model", "not a ip_adapter"),
    ({"reference": [{"model": "ipa-orphan", "image": None}]}, "reference.0.model", "image encoder"),
    ({"control": [{"model": "cn", "image": None, "start": 0.6, "end": 0.3}]}, "control.0", "after"),
    ({"control": [{"model": "cn", "image": None}] * 9}, "control", "at most 8"),
    ({"control": [{"model": "cn", "image": None}] * 5, "reference": [{"model": "ipa", "image": None}] * 4},
     "control", "at most 8"),
])
def test_bad_input_is_refused_before_queueing(control_engine, extra, field, words):
    c = control_engine
    layer = _control_image(c)
    for key in ("control", "reference"):
        for item in extra.get(key, []):
            item["image"] = layer
    before = c.call("jobs.list", {})["jobs"] if _has_jobs_list(c) else None
    with pytest.raises(ProtocolError) as exc:
        c.call("generate", {**BASE, **extra})
    err = exc.value
    assert err.code == "bad_request"
    assert err.details["fields"][0]["field"] == field
    assert words.lower() in err.message.lower()
    if before is not None:
        assert c.call("jobs.list", {})["jobs"] == before


def _has_jobs_list(client) -> bool:
    try:
        client.call("jobs.list", {})
        return True
    except ProtocolError:
        return False


# ---- the shared client (protocol/): pure, and through a Session --------------------------------------------------
def test_client_form_carries_controls_and_references():
    from protocol import generate as g
    from protocol.pixels import Pixels

    px = Pixels(bytes(64 * 64 * 4), 64, 64, "rgba8", 10, 20)
    form = {"model": "tiny-sd15", "prompt": "a fox", "seed": 3,
            "control": [{"model": "cn", "image": px, "strength": "0.5", "end": 0.8, "preprocess": "canny"},
                        {"model": "t2i", "image": lambda: px}],
            "reference": [{"model": "ipa", "image": px, "strength": 0.4}]}
    args = g.generate_args("img2img", form)
    assert args["control"][0] == {"model": "cn", "image": px, "strength": 0.5, "end": 0.8, "preprocess": "canny"}
    assert args["control"][1]["model"] == "t2i" and callable(args["control"][1]["image"])
    assert args["reference"] == [{"model": "ipa", "image": px, "strength": 0.4}]
    assert "control" not in g.generate_args("upscale", {**form, "scale": 2.0})
    for bad, words in [({"start": 0.9, "end": 0.1}, "start is after end"), ({"strength": 3}, "strength"),
                       ({"preprocess": "depth"}, "preprocess"), ({"model": ""}, "choose a model"),
                       ({"image": None}, "choose a layer"), ({"start": "x"}, "not a number")]:
        with pytest.raises(g.FieldError) as exc:
            g.generate_args("txt2img", {**form, "control": [{"model": "cn", "image": px, **bad}]})
        assert exc.value.field == "control" and words in exc.value.message
    # an engine error about a control is shown beside the control list
    assert g.error_field({"fields": [{"field": "control.0.model", "problem": "x"}]}) == "control"
    assert g.error_field({"fields": [{"field": "reference.1.strength", "problem": "x"}]}) == "reference"
    # recall: the recorded entries come back, and the host puts its own layers back in where they still exist
    params = {"mode": "txt2img", "model": "tiny-sd15", "prompt": "p", "seed": 1,
              "control": [{"model": "cn", "image": {"sha256": "a" * 64, "w": 64, "h": 64, "x": 0, "y": 0},
                           "strength": 0.5, "start": 0.0, "end": 1.0, "preprocess": "none"},
                          {"model": "cn2", "image": {"sha256": "b" * 64, "w": 8, "h": 8, "x": 0, "y": 0},
                           "strength": 1.0, "start": 0.0, "end": 1.0, "preprocess": "none"}],
              "reference": []}
    from protocol import forms

    fields, _ = g.recalled_fields(forms.recalled(params))
    assert [c["model"] for c in fields["control"]] == ["cn", "cn2"] and "reference" not in fields
    layers = {"a" * 64: "layer-7"}
    kept, notes = g.recalled_steering(fields["control"], lambda image: layers.get(image.get("sha256")))
    assert [(c["model"], c["image"], c["strength"]) for c in kept] == [("cn", "layer-7", 0.5)]
    assert len(notes) == 1 and "cn2" in notes[0]


@pytest.mark.slow
def test_session_uploads_control_and_reference_images(control_engine, tmp_path):
    from protocol import generate as g
    from protocol.pixels import Pixels
    from protocol.session import Session

    from .helpers import wait_for

    c = control_engine
    # a Session signed in as the same user as the module's client
    s = Session("krita", "test", str(tmp_path / "k"), url=c.engine.url, use_keyring=False)
    s.connect(token=c.engine.token)
    wait_for(s, "state", pred=lambda d: d["state"] == "connected")
    try:
        s.refresh_models()
        wait_for(s, "models")
        assert {m["name"] for m in s.controls} == {"cn", "cn-file", "cn-xl", "t2i"}
        assert {m["name"] for m in s.references} == {"ipa", "ipa-orphan"}
        assert s.references[0]["preset"]["strength"] == 0.6
        from protocol.forms import loras_for
        assert {m["name"] for m in loras_for(s.controls, s.models, "tiny-sd15")} == {"cn", "cn-file", "t2i"}
        img = np.zeros((64, 64, 4), np.uint8)
        img[..., 3] = 255
        img[20:44, 8:56, :3] = 255
        px = Pixels(img.tobytes(), 64, 64, "rgba8", 0, 0)
        ref = Pixels(pattern().tobytes(), 64, 64, "rgba8", 0, 0)
        params = g.generate_args("txt2img", {"model": "tiny-sd15", "prompt": "p", "seed": 4, "steps": 2,
                                             "width": 64, "height": 64,
                                             "control": [{"model": "cn", "image": lambda: px, "strength": 0.8}],
                                             "reference": [{"model": "ipa", "image": ref}]})
        s.generate(params)
        wait_for(s, "result")
        newest = c.call("images.list", {"limit": 1, "app": "krita"})["images"][0]
        meta = c.call("images.get", {"image": newest["id"]})["meta"]
        assert meta["control"][0]["image"]["sha256"] == px.sha256() and meta["control"][0]["strength"] == 0.8
        assert meta["reference"][0]["image"]["sha256"] == ref.sha256()
    finally:
        s.close()


def test_presets_are_data():
    from engine.control_presets import PRESETS_FILE, preset_for

    assert preset_for("controlnet", "control_v11p_sd15_canny") == {"kind": "canny", "strength": 1.0, "start": 0.0,
                                                                   "end": 1.0, "preprocess": "canny"}
    assert preset_for("t2i_adapter", "t2i-adapter_xl_sketch")["preprocess"] == "scribble"
    assert preset_for("controlnet", "my-controlnet")["kind"] == "control"      # the catch-all
    assert preset_for("ip_adapter", "ip-adapter-plus-face_sd15")["kind"] == "face"
    assert preset_for("main", "canny-model") is None
    import json
    data = json.loads(PRESETS_FILE.read_text())
    assert all(p.get("preprocess", "none") in METHODS for p in data["control"])


def _stripped(path, shapes: dict):
    """A .safetensors with real tensor names and shapes (zeros, fp16): what the probe and checks read."""
    import torch
    from safetensors.torch import save_file

    save_file({k: torch.zeros(s, dtype=torch.float16) for k, s in shapes.items()}, str(path))
    return path


def test_probe_and_image_encoder_lookup_with_real_shapes(tmp_path):
    import torch

    from engine.errors import BadRequest
    from engine.models.control import find_image_encoder
    from engine.models.probe import probe
    from engine.models.registry import ModelRegistry

    ipa15 = {"image_proj.proj.weight": (3072, 1024), "image_proj.proj.bias": (3072,), "image_proj.norm.weight": (768,),
             "image_proj.norm.bias": (768,), "ip_adapter.1.to_k_ip.weight": (320, 768),
             "ip_adapter.1.to_v_ip.weight": (320, 768)}
    _stripped(tmp_path / "ip-adapter_sd15.safetensors", ipa15)
    _stripped(tmp_path / "ip-adapter-plus_sdxl_vit-h.safetensors",
              {"image_proj.proj_in.weight": (1280, 1280), "image_proj.latents": (1, 16, 1280),
               "ip_adapter.1.to_k_ip.weight": (640, 2048), "ip_adapter.1.to_v_ip.weight": (640, 2048)})
    torch.save({"image_proj": {k[len("image_proj."):]: torch.zeros(s, dtype=torch.float16)
                               for k, s in ipa15.items() if k.startswith("image_proj.")},
                "ip_adapter": {k[len("ip_adapter."):]: torch.zeros(s, dtype=torch.float16)
                               for k, s in ipa15.items() if k.startswith("ip_adapter.")}},
               tmp_path / "ip-adapter_sd15.bin")
    _stripped(tmp_path / "t2i-canny-sd15.safetensors",
              {"adapter.conv_in.weight": (320, 192, 3, 3), "adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)})
    _stripped(tmp_path / "t2i-canny-xl.safetensors",
              {"adapter.conv_in.weight": (320, 768, 3, 3), "adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)})
    vit_h = {"vision_model.embeddings.patch_embedding.weight": (1280, 3, 14, 14),
             "vision_model.post_layernorm.weight": (1280,), "visual_projection.weight": (1024, 1280)}
    expect = {"ip-adapter_sd15.safetensors": ("ip_adapter", "sd1"),
              "ip-adapter-plus_sdxl_vit-h.safetensors": ("ip_adapter", "sdxl"),
              "ip-adapter_sd15.bin": ("ip_adapter", "sd1"),
              "t2i-canny-sd15.safetensors": ("t2i_adapter", "sd1"), "t2i-canny-xl.safetensors": ("t2i_adapter", "sdxl")}
    for name, (kind, base) in expect.items():
        got = probe(tmp_path / name)
        assert (got["type"], got["base"]) == (kind, base), name
    reg = ModelRegistry([tmp_path], scan=True)
    with pytest.raises(BadRequest) as exc:          # no image encoder installed yet: the error says which
        find_image_encoder(reg, reg.get("ip-adapter_sd15"))
    assert "ViT-H" in exc.value.message and exc.value.details["missing"] == "clip_vision"
    enc_dir = tmp_path / "encoders"
    enc_dir.mkdir()
    _stripped(enc_dir / "clip-vit-h.safetensors", vit_h)
    assert probe(enc_dir / "clip-vit-h.safetensors")["type"] == "clip_vision"
    reg.scan(enc_dir)
    assert find_image_encoder(reg, reg.get("ip-adapter_sd15")).name == "clip-vit-h"
    # a Plus adapter takes the encoder's hidden states: ViT-H's are 1280 wide
    assert find_image_encoder(reg, reg.get("ip-adapter-plus_sdxl_vit-h")).name == "clip-vit-h"


def test_budgets_count_control_images_and_region_outputs():
    from engine.budgets import check_generate_budget, check_graph_budget
    from engine.config import Limits
    from engine.errors import BadRequest

    limits = Limits(max_pixels=64 * 64)
    big = {**LAYER, "w": 128, "h": 128}
    with pytest.raises(BadRequest):
        check_generate_budget(limits, _args(control=[{"model": "cn", "image": big}]))
    with pytest.raises(BadRequest):
        check_generate_budget(limits, _args(reference=[{"model": "ipa", "image": big}]))
    check_generate_budget(limits, _args(control=[{"model": "cn", "image": LAYER}]))
    graph = {"nodes": {"r": {"type": "region", "x": 0, "y": 0, "width": 8, "height": 8, "out_width": 4096,
                             "out_height": 4096}}, "edges": []}
    with pytest.raises(BadRequest) as exc:
        check_graph_budget(graph, limits)
    assert exc.value.details == {"node": "r", "field": "out_width"}


def test_trace_finds_a_graphs_controls():
    from engine.gallery.trace import trace_graph

    a = _args(control=[{"model": "cn", "image": {**LAYER, "x": 3}, "strength": 0.5},
                       {"model": "t2i", "image": LAYER, "end": 0.5}],
              reference=[{"model": "ipa", "image": LAYER}], seed=1)
    facts = trace_graph(compile_generate(a, 64, 1 << 24), "out0")
    assert [(c["model"], c["strength"], c["end"]) for c in facts["control"]] == [("cn", 0.5, 1.0), ("t2i", 1.0, 0.5)]
    assert facts["control"][0]["image"]["x"] == 3 and facts["control"][0]["image"]["sha256"] == LAYER["sha256"]
    assert facts["reference"] == [{"model": "ipa", "strength": 0.6, "start": 0.0, "end": 1.0,
                                   "image": {**{k: LAYER[k] for k in ("sha256", "w", "h", "x", "y")}, "name": None}}]


def test_client_knows_the_controls_limit():
    from protocol import generate as g
    from protocol.limits import Limits
    from protocol.pixels import Pixels

    assert Limits.from_wire({"max_controls": 3}).max_controls == 3 and Limits().max_controls == 8
    px = Pixels(bytes(4), 1, 1)
    form = {"model": "m", "prompt": "", "control": [{"model": "cn", "image": px}] * 2,
            "reference": [{"model": "ipa", "image": px}] * 2}
    with pytest.raises(g.FieldError) as exc:
        g.generate_args("txt2img", form, limits=Limits(max_controls=3))
    assert exc.value.field == "control" and "at most 3" in exc.value.message
    assert len(g.generate_args("txt2img", form, limits=Limits(max_controls=4))["reference"]) == 2


# ---- with regions (issue 19): one attention processor for region prompts and IP-Adapter image tokens -------------
def _halves(c, left_prompt, right_prompt, **right):
    left = np.zeros((64, 64), np.uint8)
    left[:, :32] = 255
    return [{"prompt": left_prompt, "mask": upload_mask(c, left)},
            {"prompt": right_prompt, "mask": upload_mask(c, 255 - left), **right}]


def _pixels(c, args) -> np.ndarray:
    _, _, res, _ = run_job(c, args)
    assert res.name == "job.result", res.data
    return fetch(c, res.data["layers"][0])[..., :3].astype(int)


@pytest.mark.slow
def test_regions_a_reference_and_a_control_in_one_job(control_engine):
    c = control_engine
    steer = {"control": [{"model": "cn", "image": _control_image(c)}],
             "reference": [{"model": "ipa", "image": upload_rgba(c, pattern()), "strength": 1.0}]}
    plain = _pixels(c, {**BASE, **steer})
    # regions that repeat the base prompt keep the reference's image tokens and the control: the same pixels
    same = _pixels(c, {**BASE, **steer, "regions": _halves(c, BASE["prompt"], BASE["prompt"])})
    assert np.abs(plain - same).max() <= 1
    mixed = _pixels(c, {**BASE, **steer, "regions": _halves(c, "a red sports car", "a bowl of fruit")})
    assert np.abs(plain - mixed).mean() > 1.0
    without_ref = _pixels(c, {**BASE, "control": steer["control"],
                              "regions": _halves(c, "a red sports car", "a bowl of fruit")})
    assert np.abs(mixed - without_ref).mean() > 1.0   # the reference still acts with regions


@pytest.mark.slow
def test_a_regions_reference_acts_in_its_region(control_engine):
    c = control_engine
    ref = {"model": "ipa", "image": upload_rgba(c, pattern()), "strength": 1.0}
    plain = _pixels(c, {**BASE, "regions": _halves(c, BASE["prompt"], BASE["prompt"])})
    got = _pixels(c, {**BASE, "regions": _halves(c, BASE["prompt"], BASE["prompt"], reference=[ref])})
    diff = np.abs(got - plain).mean(axis=2)
    inside, outside = diff[:, 32:].mean(), diff[:, :32].mean()
    print(f"region reference: mean |Δ| inside {inside:.2f}, outside {outside:.2f}")
    assert inside > 1.2 * outside
    with pytest.raises(ProtocolError) as e:
        c.call("generate", {**BASE, "regions": _halves(c, "a", "b", reference=[dict(ref, model="ipa-orphan")])})
    assert e.value.code == "bad_request" and e.value.details["fields"][0]["field"] == "regions.1.reference.0.model"
    with pytest.raises(ProtocolError) as e:
        c.call("generate", {**BASE, "regions": _halves(c, "a", "b", control=[{"model": "cn",
                                                                              "image": _control_image(c)}])})
    assert e.value.message.startswith("region 1: control per region is not supported")

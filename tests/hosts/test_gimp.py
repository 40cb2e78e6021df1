"""The GIMP 3 plug-in inside real GIMP 3.0 (gimp-console, batch mode; and gimp-3.0 with its GUI under Xvfb) from
the trixie host chroot.

Build the chroot once with `sudo tests/hosts/chroot/setup_chroot.sh`. Without it these tests skip, unless
PAINTBRIDGE_REQUIRE_HOSTS is set (CI on a prepared machine), in which case they fail.

The plug-in is installed the way users get it: `paintbridge plugin build gimp` (engine.plugin_build), unzipped
into the chroot's GIMP profile. Scripts run through GIMP's python-fu-eval batch interpreter, call the plug-in's
PDB procedures NONINTERACTIVE and report back as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE / "gimp"))
sys.path.insert(0, str(ROOT / "plugins" / "gimp" / "paintbridge"))

from gimp_host import GimpHost  # noqa: E402

import pb_support as sup  # noqa: E402

HOST = GimpHost()
REQUIRED = bool(os.environ.get("PAINTBRIDGE_REQUIRE_HOSTS"))
_WHY = HOST.unavailable_reason()

# Evaluated at collection, before any fixture (so no engine is started just to be skipped).
needs_gimp = pytest.mark.skipif(bool(_WHY) and not REQUIRED, reason=f"GIMP 3 host unavailable: {_WHY}")


@pytest.fixture(scope="module")
def gimp():
    if _WHY:
        pytest.fail(f"PAINTBRIDGE_REQUIRE_HOSTS is set but the GIMP 3 host is unavailable: {_WHY}")
    return HOST


@pytest.fixture(scope="module")
def gimp_plugin(gimp, tmp_path_factory) -> Path:
    """The plug-in as shipped (zip from engine.plugin_build), unpacked; returns its `paintbridge` folder."""
    from engine.plugin_build import build

    tmp = tmp_path_factory.mktemp("gimp-plugin")
    zpath = build("gimp", tmp / "paintbridge-gimp.zip")
    with zipfile.ZipFile(zpath) as zf:
        for info in zf.infolist():
            zf.extract(info, tmp / "unzipped")
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(tmp / "unzipped" / info.filename, mode)
    folder = tmp / "unzipped" / "paintbridge"
    assert os.access(folder / "paintbridge.py", os.X_OK), "the zip must keep paintbridge.py executable"
    return folder


PRELUDE = r'''
import json, os, sys, traceback
import gi
gi.require_version("Gimp", "3.0"); gi.require_version("Gegl", "0.4")
from gi.repository import Gimp, Gegl, GLib, GObject
RGBA = "R'G'B'A u8"
OUT = {}

def pattern(w, h, seed):
    # asymmetric in x, y and every channel, alpha included: any flip, swap or offset shows
    return bytes(((x * 7 + y * 31 + c * 67 + seed) * (c + 1) + (x * y if c == 3 else 0)) % 256 if c < 3
                 else 255 - ((x * 3 + y * 11 + seed) % 97)
                 for y in range(h) for x in range(w) for c in range(4))

def opaque(data):
    b = bytearray(data); b[3::4] = b"\xff" * (len(b) // 4); return bytes(b)

def put(layer, data):
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, layer.get_width(), layer.get_height()), RGBA, data)
    buf.flush()
    layer.update(0, 0, layer.get_width(), layer.get_height())

def get(drawable, x=0, y=0, w=None, h=None):
    w = drawable.get_width() if w is None else w
    h = drawable.get_height() if h is None else h
    return bytes(drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, RGBA, Gegl.AbyssPolicy.NONE))

def visible(image):
    vis = Gimp.Layer.new_from_visible(image, image, "check")
    try:
        return get(vis)
    finally:
        vis.delete()

def run(name, image, drawables, **props):
    proc = Gimp.get_pdb().lookup_procedure(name)
    assert proc is not None, f"procedure {name} is not registered"
    cfg = proc.create_config()
    cfg.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
    cfg.set_property("image", image)
    cfg.set_core_object_array("drawables", drawables)
    for k, v in props.items():
        cfg.set_property(k.replace("_", "-"), v)
    res = proc.run(cfg)
    status = res.index(0)
    out = {"status": status.value_nick}
    if status == Gimp.PDBStatusType.SUCCESS:
        out["result"] = json.loads(res.index(1))
    else:
        err = Gimp.get_pdb().get_last_error()
        out["error"] = err
    return out

def finish():
    with open(os.environ["PAINTBRIDGE_RESULT"], "w") as f:
        json.dump(OUT, f)

try:
'''

EPILOGUE = r'''
except Exception:
    OUT["exception"] = traceback.format_exc()
finally:
    for im in Gimp.get_images():
        im.delete()
    finish()
'''


def gimp_script(body: str) -> str:
    return PRELUDE + "\n".join("    " + line for line in body.strip("\n").splitlines()) + EPILOGUE


def run_script(gimp, body: str, plugin: Path | None = None, env: dict | None = None, timeout: float = 300):
    res = gimp.run_batch(gimp_script(body), plugins=[plugin] if plugin else [], env=env, timeout=timeout)
    res.check()
    out = res.result
    assert isinstance(out, dict), f"the GIMP script wrote no result\n{res.output[-4000:]}"
    assert "exception" not in out, out["exception"] + "\n--- GIMP output ---\n" + res.output[-4000:]
    return out


# ---- inside GIMP, no engine -------------------------------------------------------------------------------------

@pytest.mark.host
@needs_gimp
def test_gimp_buffer_roundtrip_and_selection(gimp):
    """GEGL buffers take and give the wire's rgba8 bit for bit; the selection reads as a gray8 mask."""
    out = run_script(gimp, r'''
W, H = 13, 7
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(img, "p", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(layer, None, 0)
data = pattern(W, H, 5)
put(layer, data)
OUT["same"] = get(layer) == data
OUT["sub_same"] = get(layer, 3, 2, 4, 3) == b"".join(data[((2 + r) * W + 3) * 4:((2 + r) * W + 7) * 4] for r in range(3))
img.select_rectangle(Gimp.ChannelOps.REPLACE, 2, 1, 5, 3)
OUT["bounds"] = list(Gimp.Selection.bounds(img))
m = bytes(img.get_selection().get_buffer().get(Gegl.Rectangle.new(0, 0, W, H), 1.0, "Y u8", Gegl.AbyssPolicy.NONE))
OUT["mask_rows"] = [list(m[r * W:(r + 1) * W]) for r in range(H)]
''')
    assert out["same"] and out["sub_same"]
    assert out["bounds"] == [True, True, 2, 1, 7, 4]   # (ok, non_empty, x1, y1, x2, y2)
    rows = out["mask_rows"]
    for y in range(7):
        for x in range(13):
            assert rows[y][x] == (255 if 2 <= x < 7 and 1 <= y < 4 else 0), (x, y)


@pytest.mark.host
@needs_gimp
def test_plugin_registers_procedures(gimp, gimp_plugin):
    out = run_script(gimp, r'''
pdb = Gimp.get_pdb()
for name in ("paintbridge-generate", "paintbridge-refine", "paintbridge-inpaint", "paintbridge-outpaint",
             "paintbridge-upscale", "paintbridge-sign-in", "paintbridge-settings", "paintbridge-gallery",
             "paintbridge-workflow"):
    proc = pdb.lookup_procedure(name)
    OUT[name] = None if proc is None else {"menu": proc.get_menu_paths(),
                                           "args": [a.name for a in proc.get_arguments()]}
''', plugin=gimp_plugin)
    for name, info in out.items():
        assert info is not None, f"{name} not registered"
        assert info["menu"] == ["<Image>/Filters/Paintbridge"]
    assert {"prompt", "strength", "server-url", "token"} <= set(out["paintbridge-inpaint"]["args"])
    assert {"image-id", "server-url", "token"} <= set(out["paintbridge-gallery"]["args"])
    assert {"workflow", "values", "server-url", "token"} <= set(out["paintbridge-workflow"]["args"])


@pytest.mark.host
@needs_gimp
def test_plugin_reports_unreachable_engine(gimp, gimp_plugin):
    """A clear error status, no layer added, and GIMP keeps running."""
    out = run_script(gimp, r'''
img = Gimp.Image.new(16, 16, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(img, "base", 16, 16, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(layer, None, 0)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 4, 4, 8, 8)
OUT["run"] = run("paintbridge-inpaint", img, [layer], server_url="ws://127.0.0.1:9/v1/ws", token="x")
OUT["layers"] = [l.get_name() for l in img.get_layers()]
''', plugin=gimp_plugin)
    assert out["run"]["status"] == "execution-error", out
    assert "127.0.0.1:9" in (out["run"]["error"] or "")
    assert out["layers"] == ["base"]


# ---- with a real engine ------------------------------------------------------------------------------------------

def _engine_env(engine_server) -> dict:
    return {"PB_URL": engine_server.url, "PB_TOKEN": engine_server.token, "PB_MODEL": engine_server.model_name,
            "PAINTBRIDGE_TIMEOUT": "240"}


@pytest.mark.host
@needs_gimp
def test_plugin_inpaint_selection(gimp, gimp_plugin, engine_server):
    """Inpaint a selection: a new layer exactly at the selection, nothing outside it changes."""
    out = run_script(gimp, r'''
W, H = 64, 48
SX, SY, SW, SH = 21, 13, 18, 14
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, opaque(pattern(W, H, 3)))
before_base = get(base)
before_vis = visible(img)
img.select_rectangle(Gimp.ChannelOps.REPLACE, SX, SY, SW, SH)
OUT["run"] = run("paintbridge-inpaint", img, [base], prompt="a red square", steps=2, strength=1.0,
                 model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
OUT["layers"] = []
for l in img.get_layers():
    ok, x, y = l.get_offsets()
    OUT["layers"].append({"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(),
                          "id": l.get_id(), "mask": l.get_mask() is not None})
OUT["base_unchanged"] = get(base) == before_base
after = visible(img)
diff_out, diff_in = 0, 0
for y in range(H):
    for x in range(W):
        i = (y * W + x) * 4
        changed = after[i:i + 4] != before_vis[i:i + 4]
        if SX <= x < SX + SW and SY <= y < SY + SH:
            diff_in += changed
        else:
            diff_out += changed
OUT["changed_outside"] = diff_out
OUT["changed_inside"] = diff_in
OUT["undo_enabled"] = img.undo_is_enabled()
''', plugin=gimp_plugin, env=_engine_env(engine_server))
    run = out["run"]
    assert run["status"] == "success", run
    layers = out["layers"]
    assert len(layers) == 2 and layers[1]["name"] == "base", layers
    new = layers[0]
    assert (new["x"], new["y"], new["w"], new["h"]) == (21, 13, 18, 14), new
    assert new["mask"], "the inpaint layer carries the selection as its layer mask"
    assert run["result"]["layers"][0]["id"] == new["id"]
    assert out["base_unchanged"]
    assert out["changed_outside"] == 0
    assert out["changed_inside"] > 0, "the demo model paints noise: something inside must differ"


@pytest.mark.host
@needs_gimp
def test_plugin_pixel_exact_roundtrip(gimp, gimp_plugin, engine_server):
    """GIMP -> wire -> engine -> wire -> GIMP is bit-exact: Refine at strength 0 returns the input unchanged
    (the engine passes it through), so an asymmetric pattern with partial alpha, read from a selection at an
    offset, must come back identical and at the same place (no flips, channel swaps or offsets)."""
    out = run_script(gimp, r'''
W, H = 40, 24
SX, SY, SW, SH = 5, 3, 23, 11
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, pattern(W, H, 11))        # partial alpha: the composite over nothing keeps it (straight alpha)
expected = get(base, SX, SY, SW, SH)
img.select_rectangle(Gimp.ChannelOps.REPLACE, SX, SY, SW, SH)
OUT["run"] = run("paintbridge-refine", img, [base], strength=0.0, steps=1, model=os.environ["PB_MODEL"],
                 server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
top = img.get_layers()[0]
ok, x, y = top.get_offsets()
OUT["placed"] = [x, y, top.get_width(), top.get_height()]
got = get(top)
OUT["exact"] = got == expected
OUT["first_diff"] = next((i for i in range(min(len(got), len(expected))) if got[i] != expected[i]), None)
''', plugin=gimp_plugin, env=_engine_env(engine_server))
    assert out["run"]["status"] == "success", out["run"]
    assert out["placed"] == [5, 3, 23, 11]
    assert out["exact"], f"first differing byte: {out['first_diff']}"


@pytest.mark.host
@needs_gimp
def test_plugin_generate_outpaint_upscale_settings(gimp, gimp_plugin, engine_server):
    """The other procedures, end to end: layers land where they belong, in the right sizes."""
    out = run_script(gimp, r"""
W, H = 48, 32
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, opaque(pattern(W, H, 1)))
conn = dict(model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"], steps=1)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 8, 4, 20, 16)     # 20 is not a multiple of 8: clipped back
OUT["generate"] = run("paintbridge-generate", img, [base], prompt="x", seed=3, lora="tiny-lora-sd15", lora_weight=1.0,
                      **conn)
OUT["bad_lora"] = run("paintbridge-generate", img, [base], prompt="x", lora="no-such-lora", **conn)
Gimp.Selection.none(img)
OUT["outpaint"] = run("paintbridge-outpaint", img, [base], extend_right=16, extend_bottom=8, **conn)
OUT["size_after_outpaint"] = [img.get_width(), img.get_height()]
OUT["upscale"] = run("paintbridge-upscale", img, [base], scale=2, server_url=os.environ["PB_URL"],
                     token=os.environ["PB_TOKEN"])
up = Gimp.Image.get_by_id(OUT["upscale"]["result"]["image"]) if OUT["upscale"]["status"] == "success" else None
OUT["upscaled_size"] = [up.get_width(), up.get_height()] if up else None
OUT["esrgan"] = run("paintbridge-upscale", img, [base], scale=2, upscaler="tiny-esrgan",
                    server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
up2 = Gimp.Image.get_by_id(OUT["esrgan"]["result"]["image"]) if OUT["esrgan"]["status"] == "success" else None
OUT["esrgan_size"] = [up2.get_width(), up2.get_height()] if up2 else None
n_images = len(Gimp.get_images())
OUT["bad_upscaler"] = run("paintbridge-upscale", img, [base], scale=2, upscaler="no-such-upscaler",
                          server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
OUT["images_after_bad"] = len(Gimp.get_images()) - n_images
OUT["settings"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="")
""", plugin=gimp_plugin, env=_engine_env(engine_server))
    for key in ("generate", "outpaint", "upscale", "esrgan", "settings"):
        assert out[key]["status"] == "success", (key, out[key])
    (gen,) = out["generate"]["result"]["layers"]
    assert (gen["x"], gen["y"], gen["w"], gen["h"]) == (8, 4, 20, 16)
    assert out["size_after_outpaint"] == [64, 40]
    for layer in out["outpaint"]["result"]["layers"]:
        assert layer["x"] >= 0 and layer["y"] >= 0 and layer["x"] + layer["w"] <= 64 and layer["y"] + layer["h"] <= 40
    assert out["upscaled_size"] == [128, 80] and out["esrgan_size"] == [128, 80]
    assert out["bad_lora"]["status"] == "calling-error" and "tiny-lora-sd15" in out["bad_lora"]["error"]
    with engine_server.client() as c:   # the generate above asked for the LoRA
        asked = [j["request"].get("loras") for j in c.call("job.list", {"limit": 50})["jobs"]
                 if j["request"].get("prompt") == "x" and j.get("kind") == "txt2img"]
    assert [{"model": "tiny-lora-sd15", "weight": 1.0}] in asked
    # an upscaler the engine lacks: a calling error naming the ones it has, and no new image
    assert out["bad_upscaler"]["status"] == "calling-error", out["bad_upscaler"]
    assert "tiny-esrgan" in out["bad_upscaler"]["error"] and out["images_after_bad"] == 0
    assert out["settings"]["result"]["url"]


# ---- plain unit tests of the GIMP-independent helpers --------------------------------------------------------------

def test_support_context_region_is_clipped():
    img = sup.Rect(0, 0, 100, 80)
    # the engine's context: a quarter of the selection, at least 16 px
    assert sup.context_region(sup.Rect(10, 10, 20, 20), img) == sup.Rect(0, 0, 46, 46)
    assert sup.context_region(sup.Rect(40, 30, 20, 20), img) == sup.Rect(24, 14, 52, 52)
    assert sup.context_region(sup.Rect(300, 300, 5, 5), img).empty


def test_support_generate_params():
    p = sup.generate_params("txt2img", "m", prompt="p", width=21, height=8, seed=-1, steps=0)
    assert p == {"mode": "txt2img", "model": "m", "prompt": "p", "negative_prompt": "", "batch": 1,
                 "width": 24, "height": 8}
    p = sup.generate_params("upscale", "", extra={"scale": 2}, seed=7, strength=0.0)
    assert "model" not in p and "width" not in p and p["seed"] == 7 and p["strength"] == 0.0 and p["scale"] == 2


def test_support_settings_roundtrip(tmp_path, monkeypatch):
    monkeypatch.delenv("PAINTBRIDGE_URL", raising=False)
    assert sup.load_settings(str(tmp_path)) == {}
    sup.save_settings(str(tmp_path), {"url": "ws://h:1/v1/ws"})
    s = sup.load_settings(str(tmp_path))
    assert sup.resolve_url("", s, "ws://default") == "ws://h:1/v1/ws"
    assert sup.resolve_url(" ws://arg ", s, "ws://default") == "ws://arg"
    assert sup.pick_model("", {}, [{"name": "a"}, {"name": "b", "default": True}]) == "b"
    assert sup.pick_model("", {}, ["x"]) == "x"


# ---- gallery and workflows: plain modules against a real engine (no GIMP) ------------------------------------------

import uuid  # noqa: E402

import pb_gallery  # noqa: E402
import pb_workflow as pbw  # noqa: E402
from protocol import forms  # noqa: E402
from protocol.pixels import Pixels  # noqa: E402

from ..helpers import GRAPH, PARAMS, RESIZE, app_client, open_session, run, wait_for  # noqa: E402

GENERATE_ARGS = ["prompt", "negative-prompt", "model", "lora", "lora-weight", "steps", "guidance", "seed", "batch",
                 "server-url", "token"]
REFINE_ARGS = ["prompt", "negative-prompt", "model", "lora", "lora-weight", "steps", "guidance", "seed", "strength",
               "server-url", "token"]
SHRINK_PARAMS = [{"name": "source", "type": "image", "node": "i", "field": "layer"}]
# an image and a mask parameter: the image pasted onto itself through the mask (the mask must be its size)
MASKED = {"nodes": {"i": {"type": "image_input"}, "m": {"type": "mask_input"},
                    "p": {"type": "paste", "feather": 0.0}, "o": {"type": "output", "name": "masked"}},
          "edges": [{"from": ["i", "image"], "to": ["p", "base"]}, {"from": ["i", "image"], "to": ["p", "image"]},
                    {"from": ["m", "mask"], "to": ["p", "mask"]}, {"from": ["p", "image"], "to": ["o", "image"]}]}
MASKED_PARAMS = [{"name": "source", "type": "image", "node": "i", "field": "layer"},
                 {"name": "area", "type": "mask", "node": "m", "field": "layer"}]


@pytest.fixture(scope="module")
def gimp_session(engine_server, tmp_path_factory):
    s = open_session(engine_server, tmp_path_factory.mktemp("gimp-session"), "gimp")
    yield s
    s.close()


def test_gallery_browser_pages_search_star_and_recall(gimp_session, engine_server, tmp_path):
    s = gimp_session
    word = f"gimpgal{uuid.uuid4().hex[:8]}"
    s.generate({"model": engine_server.model_name, "prompt": f"{word} lighthouse", "width": 64, "height": 64,
                "steps": 1, "seed": 77, "guidance": 4.0, "batch": 3})
    job = wait_for(s, "job")["job"]
    wait_for(s, "result", pred=lambda d: d["job"] == job)

    b = pb_gallery.GalleryBrowser(s, page_size=2, thumb_size=32)
    b.reload(query=f"nomatch{word}")
    b.reload(query=word)                      # a new search before the first page came: that page is stale
    assert b.accept(wait_for(s, "images")) is None
    first = b.accept(wait_for(s, "images"))
    assert len(first) == 2 and b.total == 3 and b.has_more and not b.loading
    assert all(isinstance(it["thumbnail"], Pixels) and max(it["thumbnail"].w, it["thumbnail"].h) == 32
               for it in first)
    assert b.load_more() and not b.load_more()          # one page on its way at a time
    more = b.accept(wait_for(s, "images"))
    assert len(more) == 1 and not b.has_more and b.status() == "3 of 3 images"
    assert sorted(it["seed"] for it in b.items) == [77, 78, 79] and len({it["id"] for it in b.items}) == 3
    cap = pb_gallery.caption(b.items[0])
    assert cap.startswith(word) and "64×64" in cap and "gimp" in cap and "★" not in cap

    target = b.items[-1]["id"]
    s.call("images.star", {"image": target, "starred": True}, tag=("star", target))
    assert wait_for(s, "reply")["result"] == {"starred": True}
    b.set_starred(target, True)
    assert "★" in pb_gallery.caption(b.find(target))
    b.reload(starred_only=True)
    assert [it["id"] for it in b.accept(wait_for(s, "images"))] == [target] and b.filters() == {
        "q": word, "starred": True}

    # Use settings: recalled values become the next defaults of Generate/Refine/Inpaint, once each
    s.recall(target)
    rec = wait_for(s, "recalled")
    cfg = str(tmp_path)
    args, notes = pb_gallery.store_recall(cfg, target, rec["values"])
    assert notes == [] and args["seed"] == rec["values"]["seed"] and args["prompt"] == f"{word} lighthouse"
    gen = pb_gallery.pending_recall(cfg, "paintbridge-generate", GENERATE_ARGS)
    assert gen == {"prompt": f"{word} lighthouse", "negative-prompt": "", "model": engine_server.model_name,
                   "steps": 1, "guidance": 4.0, "seed": rec["values"]["seed"], "batch": 1, "lora": "",
                   "lora-weight": 0.8}
    ref = pb_gallery.pending_recall(cfg, "paintbridge-refine", REFINE_ARGS)
    assert "strength" in ref and "batch" not in ref
    pb_gallery.recall_used(cfg, "paintbridge-generate")
    assert pb_gallery.pending_recall(cfg, "paintbridge-generate", GENERATE_ARGS) == {}
    assert pb_gallery.pending_recall(cfg, "paintbridge-refine", REFINE_ARGS) == ref
    assert pb_gallery.pending_recall(cfg, "paintbridge-outpaint", REFINE_ARGS) == {}
    # a workflow image: Run workflow opens with that workflow and its (non-layer) values, once
    pb_gallery.store_workflow_recall(cfg, target, "GimpFox", {"steps": 3, "source": {"sha256": "ab"}})
    assert pb_gallery.pending_workflow_recall(cfg) == ("GimpFox", {"steps": 3})
    pb_gallery.workflow_recall_used(cfg)
    assert pb_gallery.pending_workflow_recall(cfg) is None and pb_gallery.pending_recall(
        cfg, "paintbridge-refine", REFINE_ARGS) == ref
    # the engine's random seeds go up to 2**32: GIMP's 32-bit seed field cannot hold them all
    args, notes = pb_gallery.recall_args({"seed": 2 ** 32 - 5, "steps": 3})
    assert args == {"steps": 3, "lora": "", "lora-weight": 0.8} and "seed" in notes[0]
    args, _ = pb_gallery.recall_args({"loras": [{"model": "tiny-lora-sd15", "weight": 1.25}]})
    assert (args["lora"], args["lora-weight"]) == ("tiny-lora-sd15", 1.25)


def test_workflow_widget_specs_and_checked_values(gimp_session, engine_server):
    s = gimp_session
    c = app_client(engine_server, "test")
    try:
        c.call("workflows.save", {"name": "GimpFox", "graph": GRAPH, "params": PARAMS})
        c.call("workflows.save", {"name": "GimpShrink", "graph": RESIZE, "params": SHRINK_PARAMS})
        c.call("workflows.save", {"name": "GimpMasked", "graph": MASKED, "params": MASKED_PARAMS})
    finally:
        c.close()
    s.refresh_workflows()
    wfs = wait_for(s, "workflows")["workflows"]
    with pytest.raises(LookupError, match="GimpShrink"):
        pbw.find_workflow(wfs, "NoSuchFlow")

    form, specs = pbw.form_specs(pbw.find_workflow(wfs, "GimpFox"), {"steps": 4, "scheduler": "ddim", "cfg": "x"})
    by = {sp["name"]: sp for sp in specs}
    assert by["prompt"]["widget"] == forms.TEXTAREA and by["prompt"]["value"] == "a red fox"
    assert {k: by["steps"][k] for k in ("min", "max", "step", "digits", "value")} == \
        {"min": 1, "max": 8, "step": 1, "digits": 0, "value": 4}         # the last run's value
    assert by["seed"]["min"] == 0 and by["seed"]["max"] == pbw.INT_BOUNDS[1]    # unbounded: finite for Gtk
    assert by["cfg"]["widget"] == forms.FLOAT and by["cfg"]["step"] == 0.5 and by["cfg"]["digits"] == 1
    assert by["cfg"]["value"] == 7.0                                     # "x" is not a float: the default stays
    assert by["scheduler"]["widget"] == forms.CHOICE and by["scheduler"]["items"][by["scheduler"]["active"]] == "ddim"

    form, specs = pbw.form_specs(pbw.find_workflow(wfs, "GimpMasked"))
    assert [(sp["widget"], sp["source"], sp["required"]) for sp in specs] == \
        [(forms.LAYER, "active", True), (forms.SELECTION, "selection", True)]
    layer = Pixels(bytes([10, 20, 30, 255]) * 12, 4, 3, "rgba8", 5, 6)
    mask = Pixels(bytes([255, 0, 0, 255]) * 3, 4, 3, "gray8", 5, 6)
    asked = []

    def read(src):
        asked.append(src)
        return {"active": layer, "selection": mask}[src]
    values, errors = pbw.prepare(form, {"source": "active", "area": "selection"}, read)
    assert errors == {} and values == {"source": layer, "area": mask} and asked == ["active", "selection"]
    values, errors = pbw.prepare(form, {"source": "selection", "bogus": 1}, lambda src: None)
    assert set(errors) == {"source", "area", "bogus"} and '"active"' in errors["source"]
    assert errors["area"] == 'Area is required: give "selection"'
    msg = pbw.describe_errors(form, errors)
    assert msg.index("Source") < msg.index("bogus")
    assert pbw.prepare(form, {"source": "active", "area": "selection"}, lambda src: None)[1]["area"].endswith(
        "select an area first")
    assert pbw.parse_values("") == {} and pbw.parse_values(' {"a": 1} ') == {"a": 1}
    for bad in ("[1]", "{nope"):
        with pytest.raises(ValueError, match="JSON"):
            pbw.parse_values(bad)

    # checked values are what workflows.run takes: the shrink runs, at the layer's place
    form = forms.fields(pbw.find_workflow(wfs, "GimpShrink"))
    src = Pixels(bytes([200, 30, 90, 255]) * (40 * 20), 40, 20, "rgba8", 6, 4)
    values, errors = pbw.prepare(form, {"source": "active"}, lambda s_: src)
    assert errors == {}
    s.run_workflow("GimpShrink", values)
    job = wait_for(s, "job")["job"]
    out = wait_for(s, "result", pred=lambda d: d["job"] == job)["layers"][0].pixels
    assert (out.x, out.y, out.w, out.h) == (6, 4, 32, 16) and out.data == bytes([200, 30, 90, 255]) * (32 * 16)


# ---- gallery and workflows inside GIMP (non-interactive procedures) ----------------------------------------------

def _newest_job(client):
    jobs = client.call("job.list", {"limit": 1})["jobs"]
    return jobs[0]["job"] if jobs else None


@pytest.mark.host
@needs_gimp
def test_plugin_open_from_gallery(gimp, gimp_plugin, engine_server):
    """Gallery images (made by another app) become layers with their exact pixels at their own x, y; an empty id
    takes the newest; an unknown id fails cleanly."""
    c = app_client(engine_server, "krita")
    try:
        c.call("workflows.save", {"name": "GimpGallerySrc", "graph": RESIZE, "params": SHRINK_PARAMS})
        made = {}
        for key, (x, y, seed) in {"older": (7, 5, 1), "newest": (3, 9, 2)}.items():
            data = bytes(((i * 37 + seed * 101) % 256) if i % 4 != 3 else 255 - (i // 4) % 50
                         for i in range(40 * 20 * 4))
            sha = c.upload(data)
            layer = {"sha256": sha, "w": 40, "h": 20, "format": "rgba8", "x": x, "y": y}
            _, layers = run(c, "workflows.run", {"name": "GimpGallerySrc", "values": {"source": layer}})
            made[key] = {"id": layers[0]["image_id"], "x": x, "y": y, "hex": c.download(layers[0]["sha256"]).hex()}
    finally:
        c.close()
    env = dict(_engine_env(engine_server), PB_OLDER=made["older"]["id"])
    out = run_script(gimp, r'''
img = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
conn = dict(server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
def top():
    l = img.get_layers()[0]
    ok, x, y = l.get_offsets()
    return {"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(), "hex": get(l).hex()}
OUT["older"] = run("paintbridge-gallery", img, [base], image_id=os.environ["PB_OLDER"], **conn)
OUT["older_layer"] = top()
OUT["newest"] = run("paintbridge-gallery", img, [base], image_id="", **conn)
OUT["newest_layer"] = top()
OUT["missing"] = run("paintbridge-gallery", img, [base], image_id="0123456789abcdef", **conn)
OUT["layers"] = len(img.get_layers())
OUT["undo"] = img.undo_is_enabled()
''', plugin=gimp_plugin, env=env)
    for key in ("older", "newest"):
        assert out[key]["status"] == "success", out[key]
        got, want = out[f"{key}_layer"], made[key]
        assert out[key]["result"]["image_id"] == want["id"]
        assert (got["x"], got["y"], got["w"], got["h"]) == (want["x"], want["y"], 32, 16), got
        assert got["hex"] == want["hex"], f"{key}: pixels differ"
        assert out[key]["result"]["layers"][0]["name"] == got["name"]
    assert out["missing"]["status"] == "execution-error" and "0123456789abcdef" in out["missing"]["error"]
    assert out["layers"] == 3


@pytest.mark.host
@needs_gimp
def test_plugin_run_workflow(gimp, gimp_plugin, engine_server):
    """A saved workflow with an image parameter from the active layer (and one with a mask from the selection)
    runs from GIMP; its result lands as a layer where the engine put it. Bad values fail with a message naming
    the parameter, and queue nothing."""
    c = app_client(engine_server, "test")
    c.call("workflows.save", {"name": "GimpShrink", "graph": RESIZE, "params": SHRINK_PARAMS})
    c.call("workflows.save", {"name": "GimpMasked", "graph": MASKED, "params": MASKED_PARAMS})
    before = _newest_job(c)
    out = run_script(gimp, r'''
img = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
src = Gimp.Layer.new(img, "src", 40, 20, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(src, None, 0)
src.set_offsets(6, 4)
put(src, bytes([200, 30, 90, 255]) * (40 * 20))
conn = dict(server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
def wf(name, values, drawables=None):
    return run("paintbridge-workflow", img, [src] if drawables is None else drawables, workflow=name,
               values=values, **conn)
# the failures first: none may queue a job
img.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 8, 5, 3)
OUT["bad_source"] = wf("GimpShrink", '{"source": "selection"}')
OUT["unknown"] = wf("GimpShrink", '{"source": "active", "bogus": 3}')
OUT["no_such"] = wf("NoSuchFlow", '{}')
OUT["not_json"] = wf("GimpShrink", 'source=active')
Gimp.Selection.none(img)
OUT["no_selection"] = wf("GimpMasked", '{"source": "active", "area": "selection"}')
OUT["missing"] = wf("GimpShrink", '{}')
OUT["layers_after_failures"] = [l.get_name() for l in img.get_layers()]
OUT["ok"] = wf("GimpShrink", '{"source": "active"}')
l = img.get_layers()[0]
ok, x, y = l.get_offsets()
OUT["placed"] = [l.get_name(), x, y, l.get_width(), l.get_height()]
OUT["uniform"] = get(l) == bytes([200, 30, 90, 255]) * (32 * 16)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 8, 5, 3)
OUT["masked"] = wf("GimpMasked", '{"source": "active", "area": "selection"}')
''', plugin=gimp_plugin, env=_engine_env(engine_server))
    try:
        bad = {k: out[k] for k in ("bad_source", "unknown", "no_such", "not_json", "no_selection", "missing")}
        for key, res in bad.items():
            assert res["status"] == "execution-error", (key, res)
        assert '"active"' in bad["bad_source"]["error"] and "Source" in bad["bad_source"]["error"]
        assert "bogus" in bad["unknown"]["error"]
        assert "NoSuchFlow" in bad["no_such"]["error"] and "GimpShrink" in bad["no_such"]["error"]
        assert "JSON" in bad["not_json"]["error"]
        assert "select an area" in bad["no_selection"]["error"]
        assert "Source is required" in bad["missing"]["error"]
        assert out["layers_after_failures"] == ["src", "base"]

        assert out["ok"]["status"] == "success", out["ok"]
        name, x, y, w, h = out["placed"]
        assert (x, y, w, h) == (6, 4, 32, 16) and name.startswith("Paintbridge GimpShrink")
        assert out["uniform"]
        assert out["ok"]["result"]["workflow"] == "GimpShrink"
        jobs = c.call("job.list", {"limit": 3})["jobs"]
        mine = [j["job"] for j in jobs]
        # exactly two jobs were queued by the script (the good shrink and the masked run), none by the failures
        assert out["ok"]["result"]["job"] in mine and out["masked"]["result"]["job"] == mine[0]
        assert mine[2] == before if before else len(mine) == 2

        assert out["masked"]["status"] == "success", out["masked"]
        sent = c.call("job.get", {"job": out["masked"]["result"]["job"]})["request"]["values"]
        assert (sent["area"]["w"], sent["area"]["h"], sent["area"]["x"], sent["area"]["y"]) == (40, 20, 6, 4)
        m = c.download(sent["area"]["sha256"])
        assert [(i % 40 + 6, i // 40 + 4) for i, v in enumerate(m) if v] == \
            [(x, y) for y in range(8, 11) for x in range(10, 15)]    # the selection, over the layer's area
    finally:
        c.close()


# ---- the interactive dialogs' Gtk code, under Xvfb (no GIMP process: GIMP's batch mode has no display) -------------

DIALOG_SMOKE = r'''
import json, os, sys, tempfile
sys.argv = ["paintbridge"]
sys.path.insert(0, "/root/.config/GIMP/3.0/plug-ins/paintbridge")
import paintbridge as pb
import gi
gi.require_version("Gtk", "3.0"); gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, Gtk
from protocol.pixels import Pixels
from protocol.session import Update
assert Gtk.init_check()[0], "no display"
OUT = {}
tmp = tempfile.mkdtemp()
pb.config_dir = lambda: tmp

# -- Run workflow: widgets per field, values read back and checked, errors under their fields --
FOX = {"name": "Fox", "description": "txt2img", "params": [
    {"name": "prompt", "type": "str", "label": "Prompt", "default": "a red fox", "multiline": True},
    {"name": "steps", "type": "int", "min": 1, "max": 8, "step": 1, "default": 2},
    {"name": "cfg", "type": "float", "min": 0, "max": 20, "step": 0.5, "default": 7.0, "label": "Guidance"},
    {"name": "scheduler", "type": "str", "default": "euler", "choices": ["euler", "ddim"]},
    {"name": "tiled", "type": "bool", "default": False},
    {"name": "title", "type": "str", "default": "x"},
    {"name": "count", "type": "int", "default": None}]}
MASKED = {"name": "Masked", "params": [{"name": "source", "type": "image"}, {"name": "area", "type": "mask"}]}
layer = Pixels(bytes(4 * 6), 3, 2, "rgba8", 1, 1)
sources = {"active": layer, "selection": None}
dlg = pb.WorkflowDialog(Gtk, [MASKED, FOX], "Fox", {"steps": 5, "scheduler": "ddim"}, sources.get)
dlg.dialog.show_all()
OUT["widgets"] = [type(dlg.grid.get_child_at(1, 2 * i)).__name__ for i in range(len(dlg.rows))]
OUT["initial"] = {spec["name"]: getter() for spec, getter, _ in dlg.rows}
OUT["first_check"] = dlg.check()
OUT["errors_shown"] = {spec["name"]: label.get_text() for spec, _, label in dlg.rows if label.get_visible()}
rows = {spec["name"]: (spec, getter) for spec, getter, _ in dlg.rows}
spin = [c for c in dlg.grid.get_children() if isinstance(c, Gtk.SpinButton)]
for w in spin:
    if w.get_text() == "":
        w.set_text("3")          # the required count
OUT["second_check"] = dlg.check()
OUT["errors_after"] = {spec["name"]: label.get_text() for spec, _, label in dlg.rows if label.get_visible()}
dlg.combo.set_active(1)          # Masked (by name, after Fox): the form is rebuilt
OUT["masked_widgets"] = [spec["widget"] for spec, _, _ in dlg.rows]
OUT["masked_check"] = dlg.check()
OUT["masked_errors"] = {spec["name"]: label.get_text() for spec, _, label in dlg.rows if label.get_visible()}
dlg.dialog.destroy()

# -- Gallery: pages into the icon view (thumbnails as pixbufs), star, use settings, load more --
class FakeSession:
    def __init__(self): self.calls = []
    def list_images(self, **kw): self.calls.append(("list", kw))
    def recall(self, image, tag=None): self.calls.append(("recall", image))
    def call(self, op, args=None, tag=None): self.calls.append((op, args))
    def open_image(self, image, tag=None): self.calls.append(("open", image))
    def poll(self): return []
class FakeRunner:
    session = FakeSession()
gal = pb.GalleryDialog(FakeRunner(), None, Gtk, GdkPixbuf)
gal.browser.reload()
gal.dialog.show_all()
thumb = Pixels(bytes((i * 7) % 256 for i in range(12 * 8 * 4)), 12, 8, "rgba8")
def summary(i, starred=False):
    return {"id": f"{i:016x}", "prompt": f"image {i}", "seed": i, "w": 64, "h": 64, "app": "krita",
            "starred": starred, "thumbnail": thumb}
gal._dispatch(Update("images", {"images": [summary(1), summary(2)], "total": 3, "next_cursor": "c1",
                                "tag": ("gallery", 1)}))
gal._dispatch(Update("images", {"images": [summary(9)], "total": 1, "next_cursor": None, "tag": ("gallery", 0)}))
OUT["rows"] = [(r[1], r[2]) for r in gal.store]
pix = gal.store[0][0]
OUT["pixbuf"] = [pix.get_width(), pix.get_height(), pix.get_has_alpha(), bytes(pix.get_pixels()[:8]) == thumb.data[:8]]
OUT["more_sensitive"] = gal.more.get_sensitive()
gal.view.select_path(Gtk.TreePath.new_from_indices([1]))
gal._on_response(gal.dialog, gal.STAR)
gal._dispatch(Update("reply", {"op": "images.star", "result": {"starred": True}, "tag": ("star", f"{2:016x}")}))
OUT["starred_caption"] = gal.store[1][1]
OUT["star_label"] = gal.star_button.get_label()
gal._on_response(gal.dialog, gal.RECALL)
gal._dispatch(Update("recalled", {"image": f"{2:016x}", "values": {"prompt": "image 2", "seed": 2, "steps": 3},
                                  "tag": ("recall", f"{2:016x}")}))
OUT["status"] = gal.status.get_text()
OUT["settings"] = json.load(open(os.path.join(tmp, "settings.json")))
gal._dispatch(Update("recalled", {"image": f"{1:016x}", "values": {}, "workflow": ("Fox", {"steps": 4, "src": {"sha256": "x"}}),
                                  "tag": ("recall", f"{1:016x}")}))
OUT["wf_status"] = gal.status.get_text()
OUT["wf_recall"] = pb.pb_gallery.pending_workflow_recall(tmp)
gal.more.clicked()
OUT["calls"] = FakeRunner.session.calls
gal.dialog.destroy()

# -- the progress dialog of a running job: bar, live preview, Cancel --
run = pb.Runner.__new__(pb.Runner)        # without GIMP's progress calls (no GIMP process here)
run.interactive, run.dialog, run.cancel_requested = True, None, False
run._open_cancel_dialog("Paintbridge: working")
run._dialog_progress(0.5, "step 2 of 4")
run._dialog_preview(Pixels(bytes((i * 3) % 256 for i in range(32 * 24 * 4)), 32, 24, "rgba8"))
shown = run._preview.get_pixbuf()
OUT["progress"] = [run._bar.get_fraction(), run._label.get_text(), shown.get_width(), shown.get_height()]
run._on_cancel()
OUT["cancel"] = [run.cancel_requested, run._label.get_text()]
run.dialog.destroy()
print("SMOKE " + json.dumps(OUT, default=str))
'''


@pytest.mark.host
@needs_gimp
def test_interactive_dialogs_build_and_read_back(gimp, gimp_plugin):
    """The Gtk side of both dialogs in the chroot's Gtk 3 under Xvfb: form widgets per field, values and
    per-field errors read back, gallery rows with thumbnails, star and "Use settings"."""
    import shutil
    import socket
    import subprocess
    import time as _time

    if not shutil.which("Xvfb"):
        pytest.skip("Xvfb is not installed")
    for n in range(180, 230):
        if not os.path.exists(f"/tmp/.X11-unix/X{n}") and not os.path.exists(f"/tmp/.X{n}-lock"):
            display = n
            break
    xvfb = subprocess.Popen(["Xvfb", f":{display}", "-listen", "tcp", "-ac", "-screen", "0", "1024x768x24"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = _time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", 6000 + display), 1).close()
                break
            except OSError:
                assert _time.monotonic() < deadline, "Xvfb did not start"
                _time.sleep(0.2)
        gimp.install_plugin(gimp_plugin)
        res = gimp.run_in_root(["python3", "-c", DIALOG_SMOKE], env={"DISPLAY": f"127.0.0.1:{display}"},
                               timeout=120)
    finally:
        xvfb.terminate()
        xvfb.wait(10)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("SMOKE ")), None)
    assert line, res.output[-4000:]
    out = json.loads(line[6:])
    assert out["widgets"] == ["ScrolledWindow", "SpinButton", "SpinButton", "ComboBoxText", "CheckButton", "Entry",
                              "SpinButton"], out["widgets"]
    assert out["initial"] == {"prompt": "a red fox", "steps": 5, "cfg": 7.0, "scheduler": "ddim", "tiled": False,
                              "title": "x", "count": None}
    assert out["first_check"] is None and list(out["errors_shown"]) == ["count"]
    assert "required" in out["errors_shown"]["count"]
    name, values, raw = out["second_check"]
    assert name == "Fox" and values["count"] == 3 and values["steps"] == 5 and out["errors_after"] == {}
    assert out["masked_widgets"] == ["layer", "selection"] and out["masked_check"] is None
    assert list(out["masked_errors"]) == ["area"] and "select an area" in out["masked_errors"]["area"]
    assert [r[1] for r in out["rows"]] == [f"{1:016x}", f"{2:016x}"]      # the stale page was dropped
    assert out["pixbuf"] == [12, 8, True, True] and out["more_sensitive"]
    assert "★" in out["starred_caption"] and out["star_label"] == "Un_star"
    assert out["progress"] == [0.5, "step 2 of 4", 192, 144]
    assert out["cancel"] == [True, "Canceling…"]
    assert "Generate, Refine and Inpaint" in out["status"]
    assert out["settings"]["recall"] == {"image": f"{2:016x}",
                                         "args": {"prompt": "image 2", "seed": 2, "steps": 3, "lora": "",
                                                  "lora-weight": 0.8},
                                         "pending": list(pb_gallery.RECALL_PROCS)}
    assert "Fox" in out["wf_status"] and out["wf_recall"] == ["Fox", {"steps": 4}]
    kinds = [c[0] for c in out["calls"]]
    assert kinds == ["list", "images.star", "recall", "list"] and out["calls"][-1][1]["cursor"] == "c1"


# ---- GIMP with its GUI (gimp-3.0 under Xvfb) ------------------------------------------------------------------------

@pytest.mark.host
@needs_gimp
def test_plugin_in_gimp_gui(gimp, gimp_plugin, engine_server):
    """The same procedures in GIMP with its windows: the image has a display, the procedure runs from GIMP's own
    main loop (as after a menu click, progress in that window's status bar), and its layer lands pixel-exact."""
    why = gimp.unavailable_reason(gui=True)
    if why:
        (pytest.fail if REQUIRED else pytest.skip)(why)
    res = gimp.run_batch(gimp_script(r'''
W, H = 40, 24
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, pattern(W, H, 5))
display = Gimp.Display.new(img)
try:
    OUT["display"] = display.is_valid()
    expected = get(base, 4, 2, 20, 12)
    img.select_rectangle(Gimp.ChannelOps.REPLACE, 4, 2, 20, 12)
    OUT["run"] = run("paintbridge-refine", img, [base], strength=0.0, steps=1, model=os.environ["PB_MODEL"],
                     server_url=os.environ["PB_URL"], token=os.environ["PB_TOKEN"])
    top = img.get_layers()[0]
    ok, x, y = top.get_offsets()
    OUT["placed"] = [x, y, top.get_width(), top.get_height()]
    OUT["exact"] = get(top) == expected
    OUT["display_after"] = display.is_valid()
finally:
    display.delete()
'''), plugins=[gimp_plugin], env=_engine_env(engine_server), gui=True, timeout=300)
    res.check()
    out = res.result
    assert isinstance(out, dict), f"the GIMP script wrote no result\n{res.output[-4000:]}"
    assert "exception" not in out, out["exception"] + "\n--- GIMP output ---\n" + res.output[-4000:]
    assert out["display"] and out["display_after"]
    assert out["run"]["status"] == "success", out["run"]
    assert out["placed"] == [4, 2, 20, 12] and out["exact"]

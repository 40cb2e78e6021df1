"""The GIMP 3 plug-in inside real GIMP 3.0 (gimp-console, batch mode) from the Debian 13 chroot.

Build the chroot once with `sudo tests/hosts/gimp/setup_chroot.sh`. Without it these tests skip, unless
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
             "paintbridge-upscale", "paintbridge-sign-in", "paintbridge-settings"):
    proc = pdb.lookup_procedure(name)
    OUT[name] = None if proc is None else {"menu": proc.get_menu_paths(),
                                           "args": [a.name for a in proc.get_arguments()]}
''', plugin=gimp_plugin)
    for name, info in out.items():
        assert info is not None, f"{name} not registered"
        assert info["menu"] == ["<Image>/Filters/Paintbridge"]
    assert {"prompt", "strength", "server-url", "token"} <= set(out["paintbridge-inpaint"]["args"])


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
OUT["generate"] = run("paintbridge-generate", img, [base], prompt="x", seed=3, **conn)
Gimp.Selection.none(img)
OUT["outpaint"] = run("paintbridge-outpaint", img, [base], extend_right=16, extend_bottom=8, **conn)
OUT["size_after_outpaint"] = [img.get_width(), img.get_height()]
OUT["upscale"] = run("paintbridge-upscale", img, [base], scale=2, server_url=os.environ["PB_URL"],
                     token=os.environ["PB_TOKEN"])
up = Gimp.Image.get_by_id(OUT["upscale"]["result"]["image"]) if OUT["upscale"]["status"] == "success" else None
OUT["upscaled_size"] = [up.get_width(), up.get_height()] if up else None
OUT["settings"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="")
""", plugin=gimp_plugin, env=_engine_env(engine_server))
    for key in ("generate", "outpaint", "upscale", "settings"):
        assert out[key]["status"] == "success", (key, out[key])
    (gen,) = out["generate"]["result"]["layers"]
    assert (gen["x"], gen["y"], gen["w"], gen["h"]) == (8, 4, 20, 16)
    assert out["size_after_outpaint"] == [64, 40]
    for layer in out["outpaint"]["result"]["layers"]:
        assert layer["x"] >= 0 and layer["y"] >= 0 and layer["x"] + layer["w"] <= 64 and layer["y"] + layer["h"] <= 40
    assert out["upscaled_size"] == [128, 80]
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

"""Helpers every GIMP host script starts with (tests/hosts/test_gimp.py puts this first and the script's
body inside a try: whose finally writes OUT to $PAINTBRIDGE_RESULT)."""
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

def run(name, image, drawables, run_mode=Gimp.RunMode.NONINTERACTIVE, **props):
    proc = Gimp.get_pdb().lookup_procedure(name)
    assert proc is not None, f"procedure {name} is not registered"
    cfg = proc.create_config()
    cfg.set_property("run-mode", run_mode)
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


# Runs inside Krita (see krita_host.py, documents=[a 128x128 PNG]): the plug-in on a document Krita opened itself,
# as a user's File > Open does. Refine at strength 0 from the layer comes back pixel for pixel; an inpaint lands at
# the selection.
import os
import sys

from krita import Krita

from paintbridge import host

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402
from pattern import pattern_bgra as pattern  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the test driver)


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what)


try:
    R["krita_version"] = app.version()
    doc = app.activeDocument()
    assert doc is not None and doc.width() == 128 and doc.height() == 128, "the start-up document is not open"
    node = doc.activeNode()
    R["active_layer"] = node.type() if node else None
    assert node is not None, "no active layer in the document Krita opened"
    W = H = 128
    base = pattern(W, H)
    node.setPixelData(base, 0, 0, W, H)
    doc.refreshProjection()
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")

    f = ctl.form
    f.model, f.mode, f.source, f.strength, f.steps, f.seed = P["model"], "img2img", "layer", 0.0, 2, 1
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: len(ctl.results) > n0, 120, "round-trip result")
    assert ctl.apply(len(ctl.results) - 1)
    group = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge"][0]
    R["roundtrip_exact"] = bytes(group.childNodes()[-1].pixelData(0, 0, W, H)) == base

    SX, SY, SW, SH = 40, 32, 48, 40
    host.select_rect(doc, SX, SY, SW, SH)
    f.mode, f.source, f.strength, f.steps, f.seed, f.prompt = "inpaint", "composite", 1.0, 2, 7, "a cat"
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: len(ctl.results) > n0, 180, "inpaint result")
    assert ctl.apply(len(ctl.results) - 1)
    b = group.childNodes()[-1].bounds()
    R["inpaint_bounds"] = [b.x(), b.y(), b.width(), b.height()]
    R["ok"] = True
except Exception:
    import traceback

    R["error"] = traceback.format_exc()
kutil.write(R)

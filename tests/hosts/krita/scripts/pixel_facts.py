# Runs inside Krita (see krita_host.py): confirms the host pixel facts the plug-in relies on. No engine needed.
import json
import os
import sys
import time

from krita import Krita, Selection
from PyQt5.QtWidgets import QDockWidget

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402

R = {"ok": False}
app = Krita.instance()
try:
    R["krita_version"] = app.version()
    R["window_up_s"] = round(time.time() - float(os.environ.get("PAINTBRIDGE_TEST_T0", time.time())), 2)
    W, H = 64, 48
    doc = app.createDocument(W, H, "facts", "RGBA", "U8", "", 300.0)
    node = kutil.show(doc)
    px = bytes((10, 20, 200, 255))            # B, G, R, A if Krita is BGRA
    node.setPixelData(px * (W * H), 0, 0, W, H)
    doc.refreshProjection()
    R["roundtrip"] = bytes(node.pixelData(0, 0, 1, 1)) == px
    c = doc.projection(0, 0, W, H).pixelColor(3, 3)  # QImage: unambiguous RGB
    R["is_bgra"] = (c.red(), c.green(), c.blue()) == (200, 20, 10)
    R["outside_read"] = list(bytes(node.pixelData(W + 5, 0, 1, 1)))   # the device is unbounded: not clipped

    sel = Selection()
    sel.select(8, 6, 20, 10, 255)
    doc.setSelection(sel)
    s = doc.selection()
    R["selection_bounds"] = [s.x(), s.y(), s.width(), s.height()]
    m = bytes(s.pixelData(0, 0, W, H))
    R["selection_mask_len_ok"] = len(m) == W * H
    R["selection_values"] = sorted(set(m))
    R["selection_inside"] = m[6 * W + 8] if m else None
    R["selection_outside"] = m[0] if m else None

    group = doc.createGroupLayer("Paintbridge")
    doc.rootNode().addChildNode(group, None)
    layer = doc.createNode("offset", "paintlayer")
    group.addChildNode(layer, None)
    layer.setPixelData(bytes((0, 255, 0, 255)) * (5 * 4), 30, 20, 5, 4)
    doc.refreshProjection()
    b = layer.bounds()
    R["layer_bounds"] = [b.x(), b.y(), b.width(), b.height()]
    R["layer_parent"] = layer.parentNode().name()
    R["composite_at_offset"] = list(bytes(doc.pixelData(30, 20, 1, 1)))
    moved = doc.createNode("moved", "paintlayer")
    group.addChildNode(moved, None)
    moved.setPixelData(bytes((255, 0, 0, 255)) * 4, 0, 0, 2, 2)
    moved.move(50, 40)
    doc.waitForDone()
    doc.refreshProjection()
    b = moved.bounds()
    R["moved_bounds"] = [b.x(), b.y(), b.width(), b.height()]
    R["moved_position"] = [moved.position().x(), moved.position().y()]

    docks = app.activeWindow().qwindow().findChildren(QDockWidget)   # Window.dockers() is 5.2+
    R["dockers"] = sorted(d.objectName() for d in docks)
    pb = [d for d in docks if d.windowTitle() == "Paintbridge"]
    R["paintbridge_docker"] = bool(pb)
    if pb:
        pb[0].show()
        R["paintbridge_docker_visible"] = pb[0].isVisible()
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
with open(os.environ["PAINTBRIDGE_TEST_RESULT"], "w") as fh:
    json.dump(R, fh)

# Runs inside Krita (see krita_host.py): `controller` is the plug-in's Controller. Drives the docker's widgets
# through Outpaint (with the live preview) and Upscale with an upscaler model.
import os
import sys
import time

from krita import Krita
from PyQt5.QtCore import QEventLoop
from PyQt5.QtWidgets import QApplication

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the extension)
messages = []
ctl.message.connect(messages.append)


def mark(stage):
    R["stage"] = stage   # where a hang happened, if one does
    kutil.write(R)


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, messages)


try:
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")
    dk = kutil.docker(app)
    dk.show()
    # pickers: main models in Model, upscaler models (after "plain resize") in Upscaler
    R["model_items"] = [dk.model.itemData(i) for i in range(dk.model.count())]
    R["upscaler_items"] = [dk.upscaler.itemData(i) for i in range(dk.upscaler.count())]

    # 1. Outpaint: the layer's left half is painted, the right half transparent (the area to fill)
    W, H = 64, 48
    doc = app.createDocument(W, H, f"pb-outpaint-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(doc)
    layer = doc.activeNode()
    px = bytearray(W * H * 4)
    for y in range(H):
        for x in range(W // 2):
            i = (y * W + x) * 4
            px[i:i + 4] = bytes(((x * 7) % 256, (y * 5) % 256, 128, 255))   # BGRA, opaque
    layer.setPixelData(bytes(px), 0, 0, W, H)
    doc.refreshProjection()
    dk.tabs.setCurrentIndex(0)
    dk.model.setCurrentIndex(dk.model.findData(P["model"]))
    dk.mode.setCurrentIndex(dk.mode.findData("outpaint"))
    dk.source.setCurrentIndex(dk.source.findData("layer"))
    R["upscaler_enabled_in_outpaint"] = dk.upscaler.isEnabled()
    dk.prompt.setPlainText("a meadow")
    dk.steps.setValue(4)
    dk.seed.setValue(11)
    previews = []
    ctl.progress.connect(lambda job, step, total, preview: previews.append(
        (step, total, None if preview is None else (preview.w, preview.h))))
    dk.preview.clear()
    n0 = len(ctl.results)
    mark('dk.generate_btn.click()|pump(lambda: len(ctl')
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 180, "outpaint result")
    R["previews"] = list(previews)   # the outpaint job's only
    R["preview_shown"] = dk.preview.pixmap() is not None and not dk.preview.pixmap().isNull()
    R["bar"] = [dk.bar.value(), dk.bar.maximum()]
    res = ctl.results[-1].layer.pixels
    R["outpaint_result"] = [res.x, res.y, res.w, res.h]
    dk.results.setCurrentRow(len(ctl.results) - 1)
    mark('dk.apply_btn.click()|doc.refreshProjectio')
    dk.apply_btn.click()
    doc.refreshProjection()
    comp = bytes(doc.pixelData(0, 0, W, H))
    kept = changed_left = 0
    filled = 0
    for y in range(H):
        for x in range(W):
            i = (y * W + x) * 4
            if x < W // 2 - 8:   # well inside the painted half (the blend runs inwards from the mask edge)
                kept += comp[i:i + 4] == px[i:i + 4]
                changed_left += comp[i:i + 4] != px[i:i + 4]
            elif x >= W // 2:
                filled += comp[i + 3] == 255
    R["outpaint_kept"], R["outpaint_changed_left"] = kept, changed_left
    R["outpaint_filled"], R["outpaint_right_pixels"] = filled, (W - W // 2) * H

    # 1b. Outpaint that first grows the canvas: 8 px on the left, 16 on the right, 8 at the bottom
    W2, H2 = 32, 24
    doc2 = app.createDocument(W2, H2, f"pb-extend-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(doc2)
    px2 = bytes(((x * 9) % 256, (y * 11) % 256, 200, 255)[c] for y in range(H2) for x in range(W2) for c in range(4))
    doc2.activeNode().setPixelData(px2, 0, 0, W2, H2)
    doc2.refreshProjection()
    dk.mode.setCurrentIndex(dk.mode.findData("outpaint"))
    dk.source.setCurrentIndex(dk.source.findData("layer"))
    R["extend_enabled"] = all(s.isEnabled() for s in dk.extend)
    for spin, v in zip(dk.extend, (8, 0, 16, 8)):
        spin.setValue(v)
    n0 = len(ctl.results)
    mark("extend")
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 120, "extended outpaint result")
    R["extended_size"] = [doc2.width(), doc2.height()]
    R["extend_reset"] = [s.value() for s in dk.extend]
    dk.results.setCurrentRow(len(ctl.results) - 1)
    dk.apply_btn.click()
    doc2.refreshProjection()
    comp2 = bytes(doc2.pixelData(0, 0, doc2.width(), doc2.height()))
    W3 = doc2.width()
    old_kept = sum(comp2[((y + 0) * W3 + x + 8) * 4:((y + 0) * W3 + x + 8) * 4 + 4] == px2[(y * W2 + x) * 4:(y * W2 + x) * 4 + 4]
                   for y in range(H2 - 4) for x in range(4, W2 - 4))   # inside the old area, off its blended edge
    R["extend_old_kept"] = [old_kept, (H2 - 4) * (W2 - 8)]
    new_cells = [(x, y) for y in range(doc2.height()) for x in range(W3) if x < 8 or x >= 8 + W2 or y >= H2]
    R["extend_new_opaque"] = [sum(comp2[(y * W3 + x) * 4 + 3] == 255 for x, y in new_cells), len(new_cells)]

    # 2. Upscale with the upscaler model, ×2: a new document twice the size
    app.activeWindow().addView(doc)   # back to the first document
    dk.mode.setCurrentIndex(dk.mode.findData("upscale"))
    R["upscaler_enabled_in_upscale"] = dk.upscaler.isEnabled() and dk.scale.isEnabled()
    R["model_enabled_in_upscale"] = dk.model.isEnabled()
    dk.source.setCurrentIndex(dk.source.findData("composite"))
    dk.upscaler.setCurrentIndex(dk.upscaler.findData(P["upscaler"]))
    dk.scale.setValue(2.0)
    n0, docs0 = len(ctl.results), len(app.documents())
    mark('dk.generate_btn.click()|pump(lambda: len(ctl')
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 180, "upscale result")
    res = ctl.results[-1].layer.pixels
    R["upscale_result"] = [res.w, res.h]
    dk.results.setCurrentRow(len(ctl.results) - 1)
    mark('dk.apply_btn.click()|new =')
    dk.apply_btn.click()
    new = [d for d in app.documents() if d.width() == 2 * W][-1:]
    R["upscale_new_docs"] = len(app.documents()) - docs0
    R["upscale_doc"] = [new[0].width(), new[0].height()] if new else None
    R["form_upscaler"] = ctl.form.upscaler

    # 2b. Upscale ×2 refined with the model: in tiles, the job line counts them; a new document again
    app.activeWindow().addView(doc)
    dk.upscaler.setCurrentIndex(0)    # plain resize, then the refine
    R["refine_row_shown"] = dk.refine.isEnabled() and dk.refine_row.isVisibleTo(dk)
    dk.refine.setChecked(True)
    R["model_enabled_with_refine"] = dk.model.isEnabled() and dk.prompt.isEnabled() and dk.steps.isEnabled()
    dk.model.setCurrentIndex(dk.model.findData(P["model"]))
    dk.refine_strength.setValue(0.5)
    dk.steps.setValue(2)
    dk.seed.setValue(5)
    dk.prompt.setPlainText("fine detail")
    job_lines = []
    shown = dk.job_line.setText
    dk.job_line.setText = lambda text: (job_lines.append(text), shown(text))
    n0, docs0 = len(ctl.results), len(app.documents())
    mark("refine upscale")
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 240, "refined upscale result")
    dk.job_line.setText = shown
    R["refine_job"] = ctl.session.jobs.latest().job
    R["refine_tile_lines"] = sorted({t for t in job_lines if t.startswith("tile ")})
    res = ctl.results[-1].layer.pixels
    R["refine_result"] = [res.w, res.h]
    dk.results.setCurrentRow(len(ctl.results) - 1)
    dk.apply_btn.click()
    R["refine_new_docs"] = len(app.documents()) - docs0
    dk.refine.setChecked(False)
    R["model_enabled_without_refine"] = dk.model.isEnabled()
    # Generate above the model's native size asks for hires (native_size from the engine's models.list)
    from paintbridge._vendor.protocol import generate as pg
    R["hires_args"] = pg.generate_args("txt2img", dict(ctl.form.values(), width=256, height=192),
                                       models=ctl.session.models).get("hires")

    # 3. a bug behind a button must not take Krita down (PyQt aborts on an exception leaving a slot)
    dk.mode.setCurrentIndex(dk.mode.findData("txt2img"))
    n0 = len(ctl.results)
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 180, "a result to discard")
    ctl.discard = lambda index: 1 / 0
    dk.results.setCurrentRow(len(ctl.results) - 1)
    dk.discard_btn.click()
    QApplication.processEvents(QEventLoop.AllEvents, 50)
    R["after_bug_message"] = dk.message.text()
    R["messages"] = messages[-10:]
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
    R["messages"] = messages[-10:]
kutil.write(R)

# Runs inside Krita (see krita_host.py): `controller` is the plug-in's Controller. Drives the docker's widgets:
# generate -> Gallery (thumbnail, search, star, Use settings, Add to document, paging) -> Workflows (form built
# from the schema, a field error that sends nothing, a run whose result is applied).
import os
import sys
import time

from krita import Krita
from PyQt5.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QLabel, QLineEdit, QPlainTextEdit, QSpinBox

from paintbridge import host

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the extension)
from pattern import pattern_bgra as pattern  # noqa: E402


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, messages)


settle = kutil.settle


def describe(w):
    d = {"widget": type(w).__name__, "tooltip": w.toolTip()}
    if isinstance(w, (QSpinBox, QDoubleSpinBox)):
        d.update(value=w.value(), min=w.minimum(), max=w.maximum(), step=w.singleStep())
    elif isinstance(w, QComboBox):
        d.update(items=[w.itemData(i) for i in range(w.count())], value=w.currentData())
    elif isinstance(w, QPlainTextEdit):
        d["value"] = w.toPlainText()
    elif isinstance(w, QLineEdit):
        d["value"] = w.text()
    elif isinstance(w, QCheckBox):
        d["value"] = w.isChecked()
    elif isinstance(w, QLabel):
        d["value"] = w.text()
    return d


def form_of(dk):
    out = {}
    layout = dk.wf_form.layout()
    for name, (f, w, _err) in dk.wf_fields.items():
        d = describe(w)
        d["kind"] = f.widget
        d["label_tooltip"] = layout.labelForField(w.parentWidget()).toolTip()
        out[name] = d
    return out


def gallery_loaded():
    return not ctl.gallery.loading


def paintbridge_group(doc):
    g = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge" and n.type() == "grouplayer"]
    return g[0] if g else None


messages = []
ctl.message.connect(messages.append)
try:
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")
    dk = kutil.docker(app)
    assert hasattr(dk, "gallery_list"), f"the docker is a {type(dk).__name__}"
    dk.show()

    W = H = 128
    doc = app.createDocument(W, H, f"pb-gallery-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(doc)
    base = pattern(W, H)
    background = doc.activeNode()
    background.setPixelData(base, 0, 0, W, H)
    doc.refreshProjection()

    # 1. generate from the docker's own widgets: txt2img into a 64x64 selection at 16,24
    dk.tabs.setCurrentIndex(0)
    dk.model.setCurrentIndex(dk.model.findData("tiny-sdxl"))     # an SDXL model: the SD1 LoRA does not fit
    R["lora_items_sdxl"] = [dk.lora.itemData(i) for i in range(dk.lora.count())]
    dk.model.setCurrentIndex(dk.model.findData(P["model"]))
    dk.mode.setCurrentIndex(dk.mode.findData("txt2img"))
    dk.prompt.setPlainText("a gallery fox")
    dk.negative.setPlainText("blurry")
    dk.steps.setValue(1)
    dk.seed.setValue(4321)
    dk.guidance.setValue(6.5)
    dk.batch.setValue(1)
    R["lora_items"] = [dk.lora.itemData(i) for i in range(dk.lora.count())]
    dk.lora.setCurrentIndex(dk.lora.findData(P["lora"]))
    dk.lora_weight.setValue(0.7)
    host.select_rect(doc, 16, 24, 64, 64)
    n0 = len(ctl.results)
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 180, "generated result")
    made = ctl.results[-1].layer.pixels
    R["made"] = [made.x, made.y, made.w, made.h]
    made_data = made.data
    dk.results.setCurrentRow(len(ctl.results) - 1)
    dk.discard_btn.click()

    # 2. the gallery: this document only -> the image, with a thumbnail icon
    dk.tabs.setCurrentIndex(3)
    key = host.document_key(doc)
    dk.gallery_this_doc.setChecked(True)        # toggling refreshes
    pump(lambda: gallery_loaded() and ctl.gallery.filters().get("document") == key, 60, "gallery page")
    R["gallery_count"] = dk.gallery_list.count()
    R["gallery_total"] = ctl.gallery.total
    item = dk.gallery_list.item(0)
    image_id = item.data(0x0100)   # Qt.UserRole
    R["gallery_item_text"] = item.text()
    R["gallery_item_tooltip"] = item.toolTip()
    R["gallery_has_icon"] = not item.icon().isNull()
    sizes = item.icon().availableSizes()
    R["thumb_size"] = [sizes[0].width(), sizes[0].height()] if sizes else None
    R["gallery_count_label"] = dk.gallery_count.text()
    R["gallery_more_enabled"] = dk.gallery_more.isEnabled()

    # search words and the starred filter
    dk.gallery_q.setText("zebra")
    dk.gallery_refresh.click()
    pump(lambda: gallery_loaded() and ctl.gallery.filters().get("q") == "zebra", 60, "search page")
    R["search_miss"] = dk.gallery_list.count()
    dk.gallery_q.setText("GALLERY fox")
    dk.gallery_refresh.click()
    pump(lambda: gallery_loaded() and ctl.gallery.filters().get("q") == "GALLERY fox", 60, "search page")
    R["search_hit"] = dk.gallery_list.count()
    dk.gallery_starred.setChecked(True)
    pump(lambda: gallery_loaded() and ctl.gallery.filters().get("starred"), 60, "starred page")
    R["starred_before"] = dk.gallery_list.count()
    dk.gallery_starred.setChecked(False)
    pump(lambda: gallery_loaded() and not ctl.gallery.filters().get("starred") and dk.gallery_list.count() == 1,
         60, "unfiltered page")
    dk.gallery_list.setCurrentRow(0)
    R["star_label_before"] = dk.star_btn.text()
    dk.star_btn.click()
    pump(lambda: ctl.gallery_image(image_id)["starred"], 60, "star reply")
    R["star_label_after"] = dk.star_btn.text()
    R["starred_item_text"] = dk.gallery_list.item(0).text()
    dk.gallery_starred.setChecked(True)
    pump(lambda: gallery_loaded() and ctl.gallery.filters().get("starred"), 60, "starred page")
    R["starred_after"] = dk.gallery_list.count()

    # 3. Use settings: the Generate widgets show the image's settings again
    dk.tabs.setCurrentIndex(0)
    dk.prompt.setPlainText("something else")
    dk.negative.setPlainText("")
    dk.seed.setValue(7)
    dk.steps.setValue(9)
    dk.mode.setCurrentIndex(dk.mode.findData("img2img"))
    dk.lora.setCurrentIndex(0)
    dk.lora_weight.setValue(1.5)
    dk.tabs.setCurrentIndex(3)
    dk.gallery_list.setCurrentRow(0)
    dk.use_btn.click()
    pump(lambda: dk.prompt.toPlainText() == "a gallery fox", 60, "recalled settings")
    R["recalled"] = {"prompt": dk.prompt.toPlainText(), "negative": dk.negative.toPlainText(),
                     "seed": int(dk.seed.value()), "steps": dk.steps.value(), "mode": dk.mode.currentData(),
                     "model": dk.model.currentData(), "guidance": dk.guidance.value(), "tab": dk.tabs.currentIndex(),
                     "lora": [dk.lora.currentData(), dk.lora_weight.value()]}

    # 4. Add to document: a layer in the Paintbridge group, where the image was made, with its pixels
    dk.tabs.setCurrentIndex(3)
    dk.gallery_list.setCurrentRow(0)
    group = paintbridge_group(doc)
    before = len(group.childNodes()) if group else 0
    dk.add_btn.click()
    pump(lambda: paintbridge_group(doc) is not None and len(paintbridge_group(doc).childNodes()) > before, 60,
         "added layer")
    added = paintbridge_group(doc).childNodes()[-1]
    b = added.bounds()
    R["added_bounds"] = [b.x(), b.y(), b.width(), b.height()]
    R["added_name"] = added.name()
    R["added_exact"] = bytes(added.pixelData(made.x, made.y, made.w, made.h)) == made_data
    R["results_after_add"] = len(ctl.results)

    # 5. workflows saved by the test: the form is built from the schema
    dk.tabs.setCurrentIndex(2)
    pump(lambda: dk.wf_combo.findData(P["shift"]) >= 0 and dk.wf_combo.findData(P["fox"]) >= 0, 60,
         "workflows")
    dk.wf_combo.setCurrentIndex(dk.wf_combo.findData(P["fox"]))
    R["fox_form"] = form_of(dk)
    fox_widget = dk.wf_form
    dk.wf_combo.setCurrentIndex(dk.wf_combo.findData(P["shift"]))
    R["shift_form"] = form_of(dk)
    try:   # the previous form is gone at once, not drawn under the new one
        R["old_form_hidden"] = fox_widget.isHidden() and fox_widget.parent() is None
    except RuntimeError:   # already deleted
        R["old_form_hidden"] = True
    R["shift_description"] = dk.wf_desc.text()
    fields = dk.wf_fields

    # a mistake (a mask parameter without a selection) is shown next to its field and nothing is sent
    try:
        doc.setSelection(None)
    except TypeError:
        pass
    if host.selection_bounds(doc) is not None:
        app.action("deselect").trigger()
        doc.waitForDone()
    assert host.selection_bounds(doc) is None, "could not clear the selection"
    doc.setActiveNode(background)
    fields["x"][1].setValue(50)
    fields["feather"][1].setValue(1.5)
    fields["name"][1].setText("shifted by krita")
    n0, jobs0 = len(ctl.results), dict(ctl.active_jobs)
    dk.wf_run.click()
    err = fields["mask"][2]
    R["bad_error_shown"] = not err.isHidden()
    R["bad_error_text"] = err.text()
    R["bad_other_errors"] = [n for n, (_, _, e) in fields.items() if n != "mask" and not e.isHidden()]
    R["bad_message"] = dk.wf_message.text()
    settle(2.0)
    R["bad_sent_nothing"] = len(ctl.results) == n0 and ctl.active_jobs == jobs0 and not dk.wf_cancel.isEnabled()

    # the same form with a selection: runs, the result is listed, Apply places it
    SX, SY, SW, SH = 8, 16, 40, 24
    host.select_rect(doc, SX, SY, SW, SH)
    doc.setActiveNode(background)
    doc.waitForDone()
    expected = bytes(background.pixelData(SX, SY, SW, SH))
    dk.wf_run.click()
    R["good_error_cleared"] = err.isHidden() and dk.wf_message.text() == ""
    pump(lambda: len(ctl.results) > n0, 120, "workflow result")
    res = ctl.results[-1]
    px = res.layer.pixels
    R["wf_result"] = [px.x, px.y, px.w, px.h]
    R["wf_result_name"] = res.layer.name
    R["wf_result_listed"] = dk.results.item(dk.results.count() - 1).text()
    dk.results.setCurrentRow(len(ctl.results) - 1)
    dk.apply_btn.click()
    layer = paintbridge_group(doc).childNodes()[-1]
    b = layer.bounds()
    R["wf_layer_bounds"] = [b.x(), b.y(), b.width(), b.height()]
    R["wf_layer_exact"] = bytes(layer.pixelData(px.x, px.y, px.w, px.h)) == expected
    R["results_after_apply"] = len(ctl.results)

    # 6. paging: one image a page over everything of this user (the generated one and the workflow's)
    dk.tabs.setCurrentIndex(3)
    ctl.gallery.page_size = 1
    dk.gallery_this_doc.setChecked(False)
    dk.gallery_starred.setChecked(False)
    dk.gallery_q.clear()
    dk.gallery_refresh.click()
    pump(lambda: gallery_loaded() and not ctl.gallery.filters() and dk.gallery_list.count() >= 1, 60, "page 1")
    R["page1"] = [dk.gallery_list.count(), ctl.gallery.total, dk.gallery_more.isEnabled()]
    first = dk.gallery_list.item(0).data(0x0100)
    dk.gallery_more.click()
    pump(lambda: gallery_loaded() and dk.gallery_list.count() >= 2, 60, "page 2")
    R["page2"] = [dk.gallery_list.count(), ctl.gallery.total, dk.gallery_more.isEnabled()]
    R["pages_distinct"] = first != dk.gallery_list.item(1).data(0x0100)
    R["page2_debug"] = [ctl.gallery.next_cursor, ctl.gallery.loading, [im["id"] for im in ctl.gallery.items],
                        messages[-5:]]
    R["messages"] = messages[-10:]
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
    R["messages"] = messages[-10:]
kutil.write(R)

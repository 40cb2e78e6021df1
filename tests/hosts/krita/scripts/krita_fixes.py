# Runs inside Krita (see krita_host.py): `controller` is the plug-in's Controller. Issue 15's Krita items, driven
# through the docker's widgets: Replace can be undone (K1), Sign in while the engine is down keeps the stored
# token (K2), the docker fits a 1080p screen (K3), the main thread's stall while a 4K layer is sent (K4), Apply
# after the result's document closed (K5), and the small ones (K6).
import os
import sys
import time

from krita import Krita, Selection
from PyQt5.QtCore import QPoint
from PyQt5.QtWidgets import QGroupBox, QLabel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402
from pattern import pattern_bgra as pattern  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the extension)
messages = []
ctl.message.connect(messages.append)


def mark(stage):
    R["stage"] = stage
    kutil.write(R)


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, messages)


def new_doc(name, w, h):
    doc = app.createDocument(w, h, f"{name}-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(doc)
    doc.activeNode().setPixelData(pattern(w, h), 0, 0, w, h)
    doc.refreshProjection()
    return doc


def select(doc, x, y, w, h):
    sel = Selection()
    sel.select(x, y, w, h, 255)
    doc.setSelection(sel)


def generate(mode="txt2img", seed=3, **form):
    dk.tabs.setCurrentIndex(0)
    dk.mode.setCurrentIndex(dk.mode.findData(mode))
    dk.model.setCurrentIndex(dk.model.findData(P["model"]))
    dk.steps.setValue(1)
    dk.seed.setValue(seed)
    for name, value in form.items():
        w = getattr(dk, name)
        w.setCurrentIndex(w.findData(value)) if hasattr(w, "findData") else w.setValue(value)
    n0 = len(ctl.results)
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 180, f"{mode} result")
    dk.results.setCurrentRow(len(ctl.results) - 1)
    return ctl.results[-1]


def undo(doc):
    app.action("edit_undo").trigger()
    doc.waitForDone()
    kutil.settle(0.2)
    doc.refreshProjection()


def count_nodes(node):
    return sum(1 + count_nodes(c) for c in node.childNodes())


def y_in(widget, root):
    return widget.mapTo(root, QPoint(0, 0)).y()


try:
    dk = kutil.docker(app)
    dk.show()
    mark("connect")
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")
    kutil.settle(0.3)

    # K6: with an empty result list, Apply / Replace / Discard do nothing, so they are disabled
    R["buttons_with_no_results"] = [b.isEnabled() for b in (dk.apply_btn, dk.replace_btn, dk.discard_btn)]

    # K3: the docker on a 1080p screen (about 950 px under Krita's menus and toolbars)
    content = dk.widget().widget() if hasattr(dk.widget(), "widget") else dk.widget()
    R["content_height"] = content.sizeHint().height()
    R["generate_to_progress"] = abs(y_in(dk.bar, content) - y_in(dk.generate_btn, content))
    R["generate_to_results"] = abs(y_in(dk.results, content) - y_in(dk.generate_btn, content))
    R["dock_height"] = dk.height()
    R["on_screen"] = {name: not getattr(dk, name).visibleRegion().isEmpty()
                      for name in ("generate_btn", "bar", "results", "apply_btn")}
    engine_box = [b for b in content.findChildren(QGroupBox) if b.title() in ("Engine", "Account")]
    R["account_height_signed_in"] = max([b.sizeHint().height() for b in engine_box if b.isVisible()] or [0])

    # K1 and K6: the first Apply is one undo step; Replace is undoable
    mark("first apply")
    W = H = 64
    doc = new_doc("pb-undo", W, H)
    base = pattern(W, H)
    select(doc, 0, 0, 32, 32)
    # K6: every text the job line shows between Generate and the result. Recorded as it is set (a 1-step job on a
    # fast machine passes "queued" between two timer samples), then passed on to the real label.
    job_lines = []
    shown = dk.job_line.setText
    dk.job_line.setText = lambda text: (job_lines.append(text), shown(text))
    generate()
    del dk.job_line.setText
    R["job_lines"] = [t for i, t in enumerate(job_lines) if t and (i == 0 or t != job_lines[i - 1])]
    nodes0 = [n.name() for n in doc.rootNode().childNodes()]
    del messages[:]
    dk.apply_btn.click()
    R["open_apply_messages"] = [m for m in messages if m]
    R["first_apply_added"] = len(doc.rootNode().childNodes()) > len(nodes0)
    undo(doc)
    R["first_apply_one_undo"] = [n.name() for n in doc.rootNode().childNodes()] == nodes0

    mark("replace")
    background = doc.rootNode().childNodes()[0]
    doc.setActiveNode(background)
    res = generate(seed=5)
    px = res.layer.pixels
    dk.replace_btn.click()
    doc.refreshProjection()
    R["replace_wrote"] = bytes(doc.pixelData(px.x, px.y, px.w, px.h)) == px.data
    R["replace_layer_kept"] = bytes(background.pixelData(0, 0, W, H)) == base
    above = doc.rootNode().childNodes()
    R["replace_placed_above"] = (len(above) > 1 and above[0].uniqueId() == background.uniqueId()
                                 and bytes(above[1].pixelData(px.x, px.y, px.w, px.h)) == px.data)
    undos = None
    for i in range(1, 4):
        undo(doc)
        if bytes(doc.pixelData(0, 0, W, H)) == base:
            undos = i
            break
    R["replace_undos_to_restore"] = undos
    R["replace_messages"] = messages[-2:]

    # K6: an inpaint layer covers only the selection: an L-shaped selection leaves the corner of its bounding box
    # transparent in the result layer (it would hide later edits of the layer below)
    mark("inpaint corner")
    sel = Selection()
    sel.select(8, 8, 24, 24, 255)
    hole = Selection()
    hole.select(8, 8, 8, 8, 255)
    sel.subtract(hole)
    doc.setSelection(sel)
    doc.setActiveNode(doc.rootNode().childNodes()[0])
    generate("inpaint", seed=9, strength=1.0)
    dk.apply_btn.click()
    group = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge"][0]
    inpainted = group.childNodes()[-1]
    R["inpaint_hole_alpha"] = bytes(inpainted.pixelData(10, 10, 1, 1))[3]
    R["inpaint_inside_alpha"] = bytes(inpainted.pixelData(20, 20, 1, 1))[3]

    # K6: an Upscale result's Apply button says where it goes
    mark("upscale label")
    select(doc, 0, 0, W, H)
    generate("upscale", scale=2.0)
    R["upscale_apply_label"] = dk.apply_btn.text()
    dk.discard_btn.click()

    # K5: Apply after the result's document was closed
    mark("closed document")
    other = new_doc("pb-closed", 48, 40)
    select(other, 0, 0, 48, 40)
    generate(seed=8)
    other.setModified(False)
    other.close()
    kutil.settle(0.5)
    app.activeWindow().showView(app.activeWindow().views()[0]) if app.activeWindow().views() else None
    kutil.settle(0.3)
    active = app.activeDocument()
    R["closed_active_doc"] = active.name() if active is not None else None
    n_before = len(ctl.results)
    layers_before = count_nodes(doc.rootNode())
    del messages[:]
    dk.apply_btn.click()
    kutil.settle(0.3)
    R["closed_messages"] = list(messages)
    R["closed_placed_in_open_doc"] = count_nodes(doc.rootNode()) > layers_before
    R["closed_result_left"] = len(ctl.results) - n_before

    # K6: Sign out clears the pasted token and says what it did; it ends the sign-in on the engine (auth.logout),
    # so it signs out a sign-in of its own, not the test session's shared token
    mark("sign out")
    ctl.connect_server(P["url"], P["signout_token"])
    pump(lambda: ctl.state == "connected" and ctl.session.client.token == P["signout_token"], 60, "second sign-in")
    dk.token.setText("pasted-token")
    del messages[:]
    dk.sign_out_btn.click()
    pump(lambda: ctl.state == "signed_out", 30, "signed out")
    kutil.settle(0.3)
    R["token_field_after_sign_out"] = dk.token.text()
    R["sign_out_shown"] = [dk.state.text()] + list(messages)

    # K2: Sign in while the engine is down keeps the stored token; it connects when the engine is back
    mark("engine down")
    relay = kutil.Relay(P["url"])
    ctl.session.tokens.set(relay.url, P["token"])
    dk.url.setText(relay.url)
    ctl.connect_server(relay.url)     # the stored token, as at start-up
    pump(lambda: ctl.state == "disconnected", 30, "engine down")
    kutil.settle(1.5)
    R["down_status"] = dk.state.text()
    R["down_message"] = dk.message.text()
    dk.username.setText("nobody")
    dk.password.setText("some-password")
    dk.sign_in_btn.click()
    kutil.settle(2.0)
    R["password_kept_while_down"] = dk.password.text() == "some-password"
    R["token_kept_while_down"] = ctl.session.tokens.get(relay.url) == P["token"]
    relay.start()
    pump(lambda: ctl.state in ("connected", "signed_out", "expired"), 90, "engine back")
    R["state_after_engine_back"] = ctl.state
    dk.url.setText(P["url"])
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected", 60, "connected again")

    # K4: the main thread's longest stall while a 4K layer is read and sent
    mark("4k")
    big = app.createDocument(3840, 2160, f"pb-4k-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(big)
    big.activeNode().setPixelData(bytes(range(256)) * (3840 * 2160 * 4 // 256), 0, 0, 3840, 2160)
    big.refreshProjection()
    big.setSelection(Selection())   # none: the whole document
    kutil.settle(0.5)
    dk.mode.setCurrentIndex(dk.mode.findData("upscale"))
    dk.scale.setValue(1.0)
    jobs0 = len(ctl.session.jobs.rows)
    ticker = kutil.Ticker()
    ticker.start()
    t0 = time.perf_counter()
    dk.generate_btn.click()
    R["k4_click_ms"] = round((time.perf_counter() - t0) * 1000, 1)   # Generate itself, on the main thread
    ticker.start()   # from here: what the conversion and upload on other threads cost the main thread
    row = lambda: list(ctl.session.jobs.rows.values())[jobs0] if len(ctl.session.jobs.rows) > jobs0 else None  # noqa
    pump(lambda: row() is not None and row().job is not None, 120, "4K layer sent")
    R["k4_send_s"] = round(time.perf_counter() - t0, 2)
    R["k4_max_stall_ms"] = ticker.stop()
    ctl.session.cancel(row().request)
    pump(lambda: not row().active, 120, "4K job ended")
    big.setModified(False)
    big.close()

    # issue 17: prompt and workflow text are shown as plain text, never rich text
    labels = [w for w in content.findChildren(QLabel)]
    R["rich_labels"] = [w.objectName() or w.text()[:30] for w in labels if w.textFormat() != 0]  # 0: PlainText
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
    R["messages"] = messages[-10:]
kutil.write(R)

# Runs inside Krita (see krita_host.py, documents=[a 128x128 PNG]: a document Krita opened, so Krita 5.2.9 gives it
# an active layer). Issues 18 and 19 from the docker's Control tab: a sketch layer as a control (its model's preset
# filled in), the background as a reference, two layers with prompts as regions; Generate; an engine error and a
# form error shown beside their lists; the control layer hidden -> not sent; an inpaint that sends only the region
# it touches; the .kra saved and reopened with its pairing; Use settings restoring the controls/regions whose
# layers are still there. The pytest side checks what the engine received through the gallery metadata.
import os
import sys
import time

from krita import Krita

from paintbridge import host
from paintbridge._vendor.protocol.client import Client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402
from pattern import pattern_bgra  # noqa: E402

P = kutil.params()
R = {"ok": False, "at": "start"}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the test driver)
messages = []
W = H = 128


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, messages)


def solid_layer(doc, name, rect, bgra=(255, 255, 255, 255)):
    """A paint layer on top of the stack, opaque over rect (document coordinates), transparent elsewhere."""
    x, y, w, h = rect
    node = doc.createNode(name, "paintlayer")
    doc.rootNode().addChildNode(node, None)
    node.setPixelData(bytes(bgra) * (w * h), x, y, w, h)
    doc.waitForDone()
    return node


def trace(where):
    active = app.activeDocument().activeNode() if app.activeDocument() is not None else None
    R.setdefault("active_trace", []).append([where, active.name() if active is not None else None])


def generate_and_wait(what):
    n0 = len(ctl.results)
    rid = ctl.generate()
    assert rid, f"{what}: refused: {messages[-1:]}"
    pump(lambda: len(ctl.results) > n0 or ctl.session.jobs.rows[rid].state in ("failed", "canceled"), 240, what)
    assert len(ctl.results) > n0, f"{what}: {ctl.session.jobs.rows[rid].describe()} {messages[-2:]}"
    return ctl.results[-1].job


def items(lst):
    return [lst.item(i).text() for i in range(lst.count())]


ctl.message.connect(messages.append)
try:
    doc = app.activeDocument()
    assert doc is not None and doc.width() == W, "the start-up document is not open"
    background = doc.activeNode()
    background.setPixelData(pattern_bgra(W, H), 0, 0, W, H)
    sketch = solid_layer(doc, "sketch", (40, 40, 30, 30))                      # the control: a white square
    sky = solid_layer(doc, "sky", (0, 0, W, 48), (200, 120, 40, 255))          # regions: bottom of the stack first
    sea = solid_layer(doc, "sea", (0, 80, W, 48), (120, 60, 0, 255))
    doc.refreshProjection()
    # Krita makes each added layer the active one (through an event): once those have come, the Background is made
    # active again. It goes through the docker's buttons (the active layer), the other layers are named to the
    # controller methods those buttons call.
    kutil.settle(0.5)
    doc.setActiveNode(background)
    kutil.pump(ctl, lambda: doc.activeNode().uniqueId() == background.uniqueId(), 20, "the Background active again")
    R["active_layer"] = doc.activeNode().name()

    trace("layers made")
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models and ctl.session.controls and ctl.session.references,
         60, "sign-in, models, controls and references")
    trace("connected")
    dk = kutil.docker(app)
    dk.show()
    dk.tabs.setCurrentWidget(dk.control_page)
    R["tab_label"] = dk.tabs.tabText(dk.tabs.currentIndex())
    R["steer_models"] = [dk.steer_model.itemData(i) for i in range(dk.steer_model.count())]

    # 1. the sketch as a control: picking the model fills in its preset (a "scribble" ControlNet's)
    R["at"] = "control"
    dk.steer_model.setCurrentIndex(dk.steer_model.findData(P["control"]))
    R["preset"] = [dk.steer_preprocess.currentData(), dk.steer_strength.value(), dk.steer_start.value(),
                   dk.steer_end.value(), dk.steer_preprocess.isEnabled()]
    assert ctl.add_steering(P["control"], {"preprocess": dk.steer_preprocess.currentData(),
                                           "strength": dk.steer_strength.value(), "start": dk.steer_start.value(),
                                           "end": dk.steer_end.value()}, node=sketch)
    # 2. the active layer (the Background's pattern) as a reference, with the button (an IP-Adapter: no
    #    preprocessor)
    dk.steer_model.setCurrentIndex(dk.steer_model.findData(P["reference"]))
    R["reference_preset"] = [dk.steer_strength.value(), dk.steer_preprocess.isEnabled()]
    dk.steer_strength.setValue(0.5)
    trace("before the reference")
    assert doc.activeNode().uniqueId() == background.uniqueId(), "the Background is not the active layer"
    dk.steer_add.click()
    # 3. two regions, each a layer with a prompt
    R["at"] = "regions"
    for node, prompt, negative in ((sky, "a stormy sky", ""), (sea, "a calm sea", "boats")):
        assert ctl.set_region(prompt, negative, node=node)
    R["steer_items"] = items(dk.steer_list)
    R["region_items"] = items(dk.region_list)
    store = host.read_store(doc)
    R["stored"] = {k: [e.get("model") or e.get("prompt") for e in store.get(k, [])]
                   for k in ("controls", "references", "regions")}

    # 4. Generate (txt2img into a 64x64 selection: the regions' masks cover its top and bottom quarter)
    R["at"] = "generate"
    f = ctl.form
    f.model, f.mode, f.prompt, f.negative, f.steps, f.seed, f.batch = P["model"], "txt2img", "oil painting", "", 2, 11, 1
    f.lora = ""
    host.select_rect(doc, 32, 32, 64, 64)
    trace("selected")
    R["job"] = generate_and_wait("generate with control, reference and regions")
    trace("generated")

    # 5. errors beside their lists: the engine refusing a control (a model it does not have), and a region
    #    without a prompt when the Generate prompt is empty (checked before sending)
    R["at"] = "errors"
    store = ctl.steering.load(doc)
    store["controls"].append({"layer": host.node_id(sketch), "model": "no-such-controlnet", "strength": 1.0})
    ctl.steering.save(doc, store)
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: dk.steer_message.text() != "", 60, "the engine's error beside the controls")
    R["engine_error"] = [dk.steer_message.text(), dk.tabs.currentWidget() is dk.control_page]
    ctl.remove_steering("controls", len(store["controls"]) - 1)
    R["steer_items_after_remove"] = items(dk.steer_list)
    trace("before the form error")
    assert ctl.set_region("", "murky", node=background)   # a region with only a negative prompt…
    f.prompt = ""                                          # …and no Generate prompt: refused before sending
    dk.tabs.setCurrentIndex(0)
    R["form_error_sent"] = ctl.generate()
    R["form_error"] = [dk.region_message.text(), dk.tabs.currentWidget() is dk.control_page]
    f.prompt = "oil painting"
    bottom = [e for e in ctl.steering.entries(doc) if e.kind == "regions" and e.name == background.name()]
    assert ctl.remove_steering("regions", bottom[0].index)
    R["region_items_after_remove"] = items(dk.region_list)

    # 6. the control layer hidden: not sent (and said so in the list)
    R["at"] = "hidden"
    sketch.setVisible(False)
    doc.waitForDone()
    ctl.steer_check()
    R["hidden_item"] = items(dk.steer_list)[0]
    R["hidden_job"] = generate_and_wait("generate with the control layer hidden")
    sketch.setVisible(True)
    doc.waitForDone()

    # 7. inpaint at the bottom right: only the region that touches the area generated (the sea) is sent
    R["at"] = "inpaint"
    f.mode, f.strength = "inpaint", 1.0
    host.select_rect(doc, 96, 100, 24, 20)
    R["inpaint_job"] = generate_and_wait("inpaint")
    f.mode = "txt2img"
    # Live mode's request over the same selection (what it would send; not sent here): the sea region only
    ctl.live.doc, ctl.live.prompt = doc, "oil painting"
    live_params, _, _ = ctl.live._read()
    R["live_regions"] = [[r["prompt"], r["mask"]().w, r["mask"]().h] for r in live_params.get("regions", [])]
    ctl.live.doc = None

    # 8. saved as .kra and opened again: the pairing came back with the document
    R["at"] = "save"
    path = os.path.join(os.environ["HOME"], f"steer-{time.time_ns()}.kra")
    assert doc.saveAs(path), "could not save the .kra"
    doc.waitForDone()
    before = [(e.kind, e.name, e.settings.get("model") or e.settings.get("prompt")) for e in ctl.steering.entries(doc)]
    doc.close()
    kutil.settle(0.5)
    doc = app.openDocument(path)
    assert doc is not None, "could not reopen the .kra"
    app.activeWindow().addView(doc)
    kutil.settle(1.0)
    ctl.steer_check()
    R["reopened"] = [(e.kind, e.name, e.settings.get("model") or e.settings.get("prompt"))
                     for e in ctl.steering.entries(doc)]
    R["reopened_same"] = R["reopened"] == before
    R["reopened_items"] = items(dk.steer_list) + items(dk.region_list)

    # 9. Use settings of the first image on the reopened document, after its lists were emptied and the sea
    #    layer deleted: the control, the reference and the sky region come back on their layers, the sea region
    #    is dropped with a note
    R["at"] = "recall"
    for kind in ("controls", "references", "regions"):
        while ctl.steering.load(doc)[kind]:
            ctl.remove_steering(kind, 0)
    R["emptied"] = items(dk.steer_list) + items(dk.region_list)
    [n for n in doc.topLevelNodes() if n.name() == "sea"][0].remove()
    doc.waitForDone()
    c = Client(P["url"], P["token"], app="krita-test", app_version="0")
    c.connect()
    image = c.call("job.get", {"job": R["job"]})["layers"][0]["image_id"]
    c.close()
    ctl.use_settings(image)
    pump(lambda: any("recalled" in m for m in messages), 60, "Use settings")
    R["recall_message"] = [m for m in messages if "recalled" in m][-1]
    R["recalled"] = [(e.kind, e.name, e.settings.get("model") or e.settings.get("prompt"),
                      e.settings.get("strength"), e.settings.get("preprocess"), e.settings.get("negative_prompt"))
                     for e in ctl.steering.entries(doc)]
    R["recalled_items"] = items(dk.steer_list) + items(dk.region_list)
    R["messages"] = messages[-10:]
    R["ok"] = True
except Exception:
    import traceback

    R["error"] = traceback.format_exc()
    R["messages"] = messages[-10:]
kutil.write(R)

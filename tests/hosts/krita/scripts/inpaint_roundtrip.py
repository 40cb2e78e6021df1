# Runs inside Krita (see krita_host.py): `controller` is the plug-in's Controller.
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
ctl = controller  # noqa: F821  (given by the extension)


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what)


try:
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")
    R["models"] = [m["name"] for m in ctl.models]
    W = H = 128
    doc = app.createDocument(W, H, "pb-test", "RGBA", "U8", "", 300.0)
    kutil.show(doc)
    base = pattern(W, H)
    doc.activeNode().setPixelData(base, 0, 0, W, H)
    doc.refreshProjection()
    assert bytes(doc.pixelData(0, 0, 1, 1)) == bytes((0, 0, 255, 255)), "pattern not set"

    # 1. Krita -> engine -> Krita round trip: Refine at strength 0 returns the pixels as sent
    f = ctl.form
    f.model, f.mode, f.source, f.strength, f.steps, f.seed = P["model"], "img2img", "layer", 0.0, 2, 1
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: len(ctl.results) > n0, 120, "round-trip result")
    res_job = ctl.results[-1].job
    assert ctl.apply(len(ctl.results) - 1)
    group = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge"][0]
    rt = group.childNodes()[-1]
    got = bytes(rt.pixelData(0, 0, W, H))
    R["roundtrip_exact"] = got == base
    R["roundtrip_job"] = res_job
    assert got == base, "round trip changed pixels"
    assert got[:4] == bytes((0, 0, 255, 255)) and got[(H - 1) * W * 4:(H - 1) * W * 4 + 4] != got[:4]
    rt.remove()
    doc.refreshProjection()

    # 2. inpaint a selection and apply the result
    SX, SY, SW, SH = 40, 32, 48, 40
    host.select_rect(doc, SX, SY, SW, SH)
    f.mode, f.source, f.strength, f.steps, f.seed, f.prompt = "inpaint", "composite", 1.0, 2, 7, "a cat"
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: len(ctl.results) > n0, 180, "inpaint result")
    res = ctl.results[-1]
    R["inpaint_layer"] = [res.layer.pixels.x, res.layer.pixels.y, res.layer.pixels.w, res.layer.pixels.h]
    assert ctl.apply(len(ctl.results) - 1)
    group = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge"]
    assert len(group) == 1 and group[0].type() == "grouplayer"
    layer = group[0].childNodes()[-1]
    b = layer.bounds()
    R["layer_bounds"] = [b.x(), b.y(), b.width(), b.height()]
    R["layer_name"] = layer.name()
    assert R["layer_bounds"] == [SX, SY, SW, SH], R["layer_bounds"]
    doc.refreshProjection()
    comp = bytes(doc.pixelData(0, 0, W, H))
    outside_changed = inside_changed = 0
    for y in range(H):
        for x in range(W):
            i = (y * W + x) * 4
            inside = SX <= x < SX + SW and SY <= y < SY + SH
            if comp[i:i + 4] != base[i:i + 4]:
                if inside:
                    inside_changed += 1
                else:
                    outside_changed += 1
    R["outside_changed"], R["inside_changed"] = outside_changed, inside_changed
    assert outside_changed == 0 and inside_changed > 0

    # 3. an expired token: the panel says so and keeps the person's prompt and settings
    f.prompt = "keep this prompt"
    messages = []
    ctl.state_changed.connect(lambda state, msg: messages.append((state, msg)))   # what the docker shows
    ctl.connect_server(P["url"], P["expired_token"])
    pump(lambda: ctl.state == "expired", 60, "expired state")
    R["expired_message"] = [m for st, m in messages if st == "expired"][-1]
    assert "expired" in R["expired_message"] and "Sign in again" in R["expired_message"]
    R["expired_prompt_kept"] = ctl.form.prompt == "keep this prompt"
    assert R["expired_prompt_kept"]

    # 4. sign in with username and password (remember me): token stored privately, jobs work again
    ctl.sign_in(P["url"], P["username"], P["password"], True)
    pump(lambda: ctl.state == "connected", 60, "password sign-in")
    store = ctl.session.tokens
    pump(lambda: store.get(P["url"]) is not None, 10, "token stored")
    R["token_backend"] = store.backend
    if store.backend.startswith("file"):
        R["token_file_mode"] = oct(os.stat(store.path).st_mode & 0o777)
    f.mode, f.seed, f.steps = "txt2img", 3, 1
    host.select_rect(doc, 0, 0, 64, 64)
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: len(ctl.results) > n0, 120, "generate after signing in again")
    R["after_signin_result"] = [ctl.results[-1].layer.pixels.w, ctl.results[-1].layer.pixels.h]

    # 5. Replace puts the result over the active layer; Discard drops a result without touching the document
    background = [n for n in doc.rootNode().childNodes() if n.type() == "paintlayer"][0]
    doc.setActiveNode(background)
    px = ctl.results[-1].layer.pixels
    assert ctl.apply(len(ctl.results) - 1, replace=True)
    # a new layer directly above the one that was active (one undo step), pixel for pixel, where the engine put it
    over = doc.rootNode().childNodes()[1]
    R["replace_exact"] = (doc.rootNode().childNodes()[0].uniqueId() == background.uniqueId()
                          and bytes(over.pixelData(px.x, px.y, px.w, px.h)) == px.data)
    assert R["replace_exact"]
    layers_before = len(doc.rootNode().childNodes()) + len(group[0].childNodes())
    f.seed = 4
    n0 = len(ctl.results)
    assert ctl.generate()
    pump(lambda: len(ctl.results) > n0, 120, "result to discard")
    ctl.discard(len(ctl.results) - 1)
    R["discarded"] = len(ctl.results) == n0
    layers_after = len(doc.rootNode().childNodes()) + len(group[0].childNodes())
    assert R["discarded"] and layers_after == layers_before
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
kutil.write(R)

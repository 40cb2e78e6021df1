"""Against a real engine: what people hit in the real Blender (issue 15, Blender items 4-8) and Outpaint.

PARAMS: url, token, model. The pytest side checks the engine's own record of each job (job.get) against RESULT.
"""

import re
import threading

import bpy
from _util import addon, draw_panels, pattern, pump, vendored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett, panels = A.controller, A.host, A.settings, A.panels
Pixels = vendored(ADDON_MODULE, "protocol.pixels").Pixels
PANELS = ["PAINTBRIDGE_PT_panel", "PAINTBRIDGE_PT_gallery", "PAINTBRIDGE_PT_workflows"]
R = RESULT
url, token, model = PARAMS["url"], PARAMS["token"], PARAMS["model"]

# where the work happens: pixel conversions must run off the main thread (item 7)
THREADS = {"to_wire": set(), "to_blender": set()}
_to_wire, _prepare = host.Snapshot.pixels, host.prepare_result


def to_wire(self):
    THREADS["to_wire"].add(threading.current_thread().name)
    return _to_wire(self)


def prepare(*args):
    THREADS["to_blender"].add(threading.current_thread().name)
    return _prepare(*args)


host.Snapshot.pixels, host.prepare_result = to_wire, prepare


def read(img):
    """The script's own reads of an image (on the main thread, not the add-on's: not recorded)."""
    return _to_wire(host.Snapshot(img))


# an Image Editor to show results and previews in (the factory layout has none)
area = bpy.context.window_manager.windows[0].screen.areas[0]
area.type = "IMAGE_EDITOR"

# ---- 8. auto-connect with the stored token: no Connect pressed, the timer connects ---------------------------
sett.prefs().server = url
s = ctl.get_session()
s.tokens.set(url, token)
ctl._timer()   # what bpy.app.timers runs (timers do not fire under -b)
pump(ctl, lambda: ctl.STATE["state"] == "connected", 30, "auto-connected")
pump(ctl, lambda: bool(ctl.STATE["models"]), 30, "models")
R["auto_connected"] = ctl.STATE["state"]
scene = bpy.context.scene
st = scene.paintbridge
st.model = model
SEEN = {"status": [], "shown": set()}


def watch():
    job = ctl.latest_job()
    if job is not None and job.active:
        SEEN["status"].append(job.describe())
    SEEN["shown"].update(host.shown_images())


def generate(image="", what="result"):
    n0 = len(ctl.STATE["results"])
    assert "FINISHED" in bpy.ops.paintbridge.generate(image=image)
    pump(ctl, lambda: watch() or len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, what)
    assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
    return bpy.data.images[ctl.STATE["results"][-1]]


# ---- 4. seed: the form starts at "random"; each Generate sends a new seed, shown; Reuse remakes the image ------
R["seed_default"] = st.seed
st.mode, st.prompt, st.steps, st.width, st.height = "GENERATE", "a seed test", 3, 64, 48
a = generate(what="first generate")
R["status_before_first_step"] = SEEN["status"][:3]
R["preview_shown"] = host.PREVIEW_NAME in SEEN["shown"]
R["shown_after"] = host.shown_images()
R["preview_dropped"] = bpy.data.images.get(host.PREVIEW_NAME) is None
first = {"seed": ctl.STATE["last_seed"], "job": ctl.latest_job().job, "name": a.name}
st.steps = 1
b = generate(what="second generate")
second = {"seed": ctl.STATE["last_seed"], "job": ctl.latest_job().job}
assert "FINISHED" in bpy.ops.paintbridge.reuse_seed()
reused = st.seed
c = generate(what="generate with the reused seed")
R["seed"] = {"first": first, "second": second, "field_after_reuse": reused,
             "third": {"seed": ctl.STATE["last_seed"], "job": ctl.latest_job().job},
             "third_same_pixels": read(c).data == read(b).data}
st.seed = -1

# ---- 5. refine an image whose sides are not multiples of 8; the size is left to the engine --------------------
odd = bpy.data.images.new("odd", 100, 75, alpha=True)
host.write_pixels(odd, Pixels(pattern(100, 75), 100, 75))
st.mode, st.strength, st.steps = "REFINE", 0.5, 2
refined = generate("odd", "refine 100x75")
R["refine_odd"] = {"size": list(refined.size), "job": ctl.latest_job().job}
# a result's name does not pile up modes ("Paintbridge generate" refined is "Paintbridge refine")
again = generate(first["name"], "refine of a result")
R["names"] = [first["name"], again.name]

# ---- Outpaint (issue 14): margins added around the image, and transparent pixels filled -----------------------
W, H = 32, 24
src_bytes = bytes(v if i % 4 != 3 else 255 for i, v in enumerate(pattern(W, H)))
osrc = bpy.data.images.new("op-src", W, H, alpha=True)
host.write_pixels(osrc, Pixels(src_bytes, W, H))
st.mode, st.steps = "OUTPAINT", 2
st.extend_right, st.extend_bottom = 16, 8
grown = generate("op-src", "outpaint with margins")
gpx = read(grown)
kept = all(gpx.data[(y * gpx.w) * 4:(y * gpx.w + W) * 4] == src_bytes[y * W * 4:(y + 1) * W * 4] for y in range(H))
filled = all(gpx.data[i] == 255 for i in range(3, len(gpx.data), 4))
R["outpaint_margins"] = {"size": [gpx.w, gpx.h], "kept": kept, "filled": filled,
                         "margins_reset": [st.extend_left, st.extend_top, st.extend_right, st.extend_bottom]}
hole = bytearray(src_bytes)
for y in range(H):
    for x in range(W // 2, W):
        hole[(y * W + x) * 4 + 3] = 0
himg = bpy.data.images.new("op-hole", W, H, alpha=True)
host.write_pixels(himg, Pixels(bytes(hole), W, H))
hres = read(generate("op-hole", "outpaint a transparent half"))
R["outpaint_hole"] = {
    "size": [hres.w, hres.h],
    "kept": all(hres.data[(y * W + x) * 4:(y * W + x) * 4 + 4] == src_bytes[(y * W + x) * 4:(y * W + x) * 4 + 4]
                for y in range(H) for x in range(W // 2)),
    "filled": all(hres.data[(y * W + x) * 4 + 3] == 255 for y in range(H) for x in range(W // 2, W))}

# ---- 5/8. errors: shown in full at the sidebar's width, and cleared by the next request that goes out ---------
st.mode = "REFINE"
try:
    bpy.ops.paintbridge.generate(image="no-such-image")
except RuntimeError:
    pass
err = ctl.STATE["last_error"]
ctl.STATE["last_error"] = err + " " + "; and a second sentence that makes this message far longer than a sidebar"
labels = draw_panels(panels, bpy.context, PANELS)
long_error = ctl.STATE["last_error"]
R["error_drawn"] = {"error": long_error, "in_full": long_error in " ".join(labels),
                    "widest": max(len(t) for t in labels if t), "first": err}
R["modes_drawn"] = []
for mode in sett.MODES:   # every mode's form draws (against the stand-in layout)
    st.mode = mode
    draw_panels(panels, bpy.context, PANELS)
    R["modes_drawn"].append(mode)
st.mode = "GENERATE"
generate(what="a generate after an error")
R["error_cleared"] = ctl.STATE["last_error"]

# ---- 8. gallery dates are formatted ------------------------------------------------------------------------
g = bpy.context.window_manager.paintbridge_gallery
assert "FINISHED" in bpy.ops.paintbridge.gallery_refresh()
pump(ctl, lambda: not ctl.gallery().loading and len(g.items) > 0, 60, "gallery page")
R["created"] = g.items[0].created
R["created_ok"] = bool(re.fullmatch(r"\d{1,2}:\d{2}|\d{1,2} \w{3} \d{2}:\d{2}", g.items[0].created))

# ---- 8. a token field: signed out, a pasted token connects (and is stored) ----------------------------------
R["connect_has_token"] = "token" in bpy.ops.paintbridge.connect.get_rna_type().properties
# Sign out ends the sign-in on the engine (auth.logout): sign out a sign-in of its own, not the shared token
assert "FINISHED" in bpy.ops.paintbridge.connect(token=PARAMS["signout_token"])
pump(ctl, lambda: ctl.STATE["state"] == "connected" and s.client.token == PARAMS["signout_token"], 30,
     "second sign-in")
assert "FINISHED" in bpy.ops.paintbridge.sign_out()
pump(ctl, lambda: ctl.STATE["state"] == "signed_out", 30, "signed out")
R["token_after_sign_out"] = s.tokens.get(url)
R["sign_out_message"] = ctl.STATE["message"]
assert "FINISHED" in bpy.ops.paintbridge.connect(token=token)
pump(ctl, lambda: ctl.STATE["state"] == "connected", 30, "connected with a pasted token")
R["token_stored"] = bool(s.tokens.get(url))
R["threads"] = {k: sorted(v) for k, v in THREADS.items()}
R["last_error"] = ctl.STATE["last_error"]
s.close()

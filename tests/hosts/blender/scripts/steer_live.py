"""Issues 18 (d5, d7), 19 (d5, d6) and 21 (d3) in Blender: controls, references and regions from the sub-panels
(an image datablock and the depth pass of a scene with a cube as controls, a region mask with a prompt), Generate,
Use settings restoring them; then live mode on an image being painted: two paint changes -> two results, Apply
(new image, and into the painted image in one undo step), Stop.

PARAMS: url, token, model, control, reference (a demo ControlNet and IP-Adapter installed on the engine).
The pytest side checks what the engine recorded (images.get) and that nothing is left queued or running.
"""

import time

import bpy
from _util import addon, draw_panels, pattern, pump, vendored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett, ui = A.controller, A.host, A.settings, A.panels
Pixels = vendored(ADDON_MODULE, "protocol.pixels").Pixels

R = RESULT
P = PARAMS
W = H = 64
sett.prefs().server = P["url"]
s = ctl.get_session()
scene = bpy.context.scene
form = scene.paintbridge
catalog = bpy.context.window_manager.paintbridge_catalog


def new_image(name, rgba):
    img = bpy.data.images.new(name, W, H, alpha=True)
    host.write_pixels(img, Pixels(rgba, W, H))
    return img


bpy.ops.paintbridge.connect(token=P["token"])
pump(ctl, lambda: ctl.STATE["state"] == "connected", 30, "connected")
pump(ctl, lambda: bool(ctl.STATE["models"]), 30, "models")
form.model = P["model"]
pump(ctl, lambda: P["control"] in [c.name for c in catalog.controls], 30, "the ControlNet in the picker")
pump(ctl, lambda: P["reference"] in [c.name for c in catalog.references], 30, "the IP-Adapter in the picker")
R["controls_offered"] = [c.name for c in catalog.controls]
R["references_offered"] = [c.name for c in catalog.references]

# ---- controls: an image datablock and the scene's depth (factory start-up: a cube in front of the camera) -------
assert bpy.data.objects.get("Cube") is not None and scene.camera is not None
sketch = new_image("sketch", pattern(W, H))
assert "FINISHED" in bpy.ops.paintbridge.steer_add(kind="CONTROL", source="IMAGE", image="sketch")
it = form.steer[-1]
R["preset_applied"] = {"model": it.model, "strength": round(it.strength, 3), "start": it.start, "end": it.end}
it.strength, it.end = 0.8, 0.75
assert "FINISHED" in bpy.ops.paintbridge.steer_add(kind="CONTROL", source="DEPTH")
form.steer[-1].strength = 0.6
# a reference (the same image), and one more, switched off: not sent
assert "FINISHED" in bpy.ops.paintbridge.steer_add(kind="REFERENCE", source="IMAGE", image="sketch")
assert "FINISHED" in bpy.ops.paintbridge.steer_add(kind="REFERENCE", source="IMAGE", image="sketch")
form.steer[-1].enabled = False

# ---- regions: the left half with its own prompt, and one whose mask image is deleted before Use settings --------
left = bytearray(W * H * 4)
for y in range(H):
    for x in range(W):
        v = 255 if x < W // 2 else 0
        left[(y * W + x) * 4:(y * W + x) * 4 + 4] = bytes((v, v, v, 255))   # opaque black/white, as painted
new_image("left-mask", bytes(left))
assert "FINISHED" in bpy.ops.paintbridge.region_add(image="left-mask", prompt="a red dragon")
form.regions[-1].negative_prompt = "blue"
top = bytearray(W * H * 4)
for i in range(W * (H // 4)):
    top[4 * i:4 * i + 4] = b"\xff\xff\xff\xff"
new_image("top-mask", bytes(top))
assert "FINISHED" in bpy.ops.paintbridge.region_add(image="top-mask", prompt="a stormy sky")

R["drawn"] = draw_panels(ui, bpy.context, ["PAINTBRIDGE_PT_steer", "PAINTBRIDGE_PT_regions", "PAINTBRIDGE_PT_live"])

form.mode, form.prompt, form.steps, form.seed, form.width, form.height = "GENERATE", "a castle", 2, 7, W, H

# bad input is refused before anything is sent (or rendered), naming what to fix


def refused():
    try:
        return list(bpy.ops.paintbridge.generate())
    except RuntimeError as exc:   # under -b the operator's error report is raised
        return ["CANCELLED", str(exc)]


jobs_before = len(s.jobs.rows)
form.steer[0].model = ""
bad = {"no_model": [refused()[0], ctl.STATE["last_error"]]}
form.steer[0].model = P["control"]
form.steer[0].strength, form.steer[0].end = 0.8, 0.75   # (the preset came back with the model)
form.regions[0].image = "no-such-mask"
bad["no_mask"] = [refused()[0], ctl.STATE["last_error"]]
form.regions[0].image = "left-mask"
bad["jobs_added"] = len(s.jobs.rows) - jobs_before   # refused on the main thread: not even a local row
new_image("empty-mask", bytes(W * H * 4))
form.regions[1].image = "empty-mask"
assert "FINISHED" in bpy.ops.paintbridge.generate()   # the mask is read on the worker: refused from there
pump(ctl, lambda: ctl.STATE["last_error"], 30, "the empty mask refused")
bad["empty_mask"] = ctl.STATE["last_error"]
form.regions[1].image = "top-mask"
bpy.data.images.remove(bpy.data.images["empty-mask"])
R["bad"] = bad
threads = []
real_fit = host.fit


def fit_logged(*a):
    import threading
    threads.append(threading.current_thread().name)
    return real_fit(*a)


host.fit = fit_logged
n0 = len(ctl.STATE["results"])
t = time.perf_counter()
assert "FINISHED" in bpy.ops.paintbridge.generate()
R["generate_call_s"] = round(time.perf_counter() - t, 3)   # the depth render happens here (main thread)
pump(ctl, lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, "generate result")
host.fit = real_fit
assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
R["fit_threads"] = sorted(set(threads))
R["job"] = s.jobs.latest().job
R["sent"] = dict(scene.get(ctl.SENT_KEY) or {})
# what the add-on should have sent, computed here the same way
R["sketch_sha"] = host.fit(host.Snapshot(sketch).pixels(), W, H).sha256()
R["left_sha"] = host.region_mask(host.Snapshot(bpy.data.images["left-mask"]).pixels(), W, H, "left").sha256()
depth = host.render_passes(scene, W, H, ["DEPTH"]).depth()
R["depth_sha"] = depth.sha256()
g = depth.data[0::4]
R["depth_centre"], R["depth_corner"] = g[(H // 2) * W + W // 2], g[0]
# normals in camera space: every surface the camera sees faces it (blue > 127), the cube shows three faces;
# Freestyle lines: white outlines on black
passes = host.render_passes(scene, W, H, ["NORMAL", "LINES"])
normal, lines = passes.normal(), passes.lines()
surface = [tuple(normal.data[i:i + 3]) for i in range(0, len(normal.data), 4) if normal.data[i:i + 3] != b"\0\0\0"]
R["normal"] = {"surface_px": len(surface), "facing": all(b > 127 for _, _, b in surface),
               "faces": len({c for c in surface if surface.count(c) > 20}), "corner": list(normal.data[:3])}
lv = lines.data[0::4]
R["lines"] = {"white": sum(1 for v in lv if v > 127), "black": sum(1 for v in lv if v == 0), "corner": lv[0]}
R["settings_kept"] = [scene.render.engine, scene.render.resolution_x, scene.view_layers[0].use_pass_z,
                      scene.render.use_freestyle]

# ---- Use settings: the form emptied, then refilled from the gallery image ----------------------------------------
image_id = s.client.call("job.get", {"job": R["job"]})["layers"][0]["image_id"]
R["image_id"] = image_id
form.steer.clear()
form.regions.clear()
bpy.data.images.remove(bpy.data.images["top-mask"])
ctl.GALLERY_STATE["message"] = ""
ctl.recall(image_id, scene.name)
pump(ctl, lambda: ctl.GALLERY_STATE["message"].startswith("Settings filled in"), 60, "recall")
R["recall_message"] = ctl.GALLERY_STATE["message"]
R["recalled_steer"] = [[x.kind, x.source, x.image, x.model, round(x.strength, 3), round(x.start, 3),
                        round(x.end, 3), x.preprocess] for x in form.steer]
R["recalled_regions"] = [[x.image, x.prompt, x.negative_prompt] for x in form.regions]

# ---- live mode on an image being painted ---------------------------------------------------------------------
form.steer.clear()
form.regions.clear()
canvas = new_image("canvas", pattern(W, H))
form.live_prompt, form.live_strength = "a live fox", 0.5
assert "FINISHED" in bpy.ops.paintbridge.live_start(image="canvas")
live = ctl.LIVE
pump(ctl, lambda: live.shown_job or live.live.paused, 180, "the first live result")
assert not live.live.paused, live.live.paused
R["live_results"] = [live.shown_job]


def paint(i):
    """A stroke's effect: pixels change, then the image is tagged for an update as Blender does when a paint stroke
    ends; the depsgraph update reaches the add-on's handler."""
    buf = bytearray(host.Snapshot(canvas).pixels().data)
    for y in range(10 + 16 * i, 20 + 16 * i):
        for x in range(8, 56):
            buf[(y * W + x) * 4:(y * W + x) * 4 + 4] = bytes((255, 200, 0, 255))
    host.write_pixels(canvas, Pixels(bytes(buf), W, H))
    canvas.update_tag()
    bpy.context.view_layer.update()


for i in range(2):
    seen, sent = live.changes_seen, live.live.sent
    paint(i)
    R.setdefault("changes_noticed", []).append(live.changes_seen - seen)
    pump(ctl, lambda: live.live.sent > sent or live.live.paused, 30, f"change {i + 1} sent")
    pump(ctl, lambda: (not live.live.busy and live.shown_job not in R["live_results"]) or live.live.paused, 180,
         f"result of change {i + 1}")
    assert not live.live.paused, live.live.paused
    R["live_results"].append(live.shown_job)
R["live_sent"] = live.live.sent
R["live_image"] = list(bpy.data.images[ctl.Live.IMAGE].size)
R["live_drawn"] = draw_panels(ui, bpy.context, ["PAINTBRIDGE_PT_live"])
result_px = live.live.result[0].pixels

# Apply as a new image, then into the painted image: one undo step brings the painted pixels back
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.live_apply(into=False)
pump(ctl, lambda: len(ctl.STATE["results"]) > n0, 30, "apply as new image")
R["applied_new"] = ctl.STATE["results"][-1]
R["applied_new_same"] = host.Snapshot(bpy.data.images[R["applied_new"]]).pixels().data == result_px.data
before = host.Snapshot(canvas).pixels().data
bpy.ops.ed.undo_push(message="before apply")
assert "FINISHED" in bpy.ops.paintbridge.live_apply(into=True)
pump(ctl, lambda: len(ctl.STATE["results"]) > n0 + 1, 30, "apply into the painted image")
canvas = bpy.data.images["canvas"]
R["applied_into_same"] = host.Snapshot(canvas).pixels().data == result_px.data
bpy.ops.ed.undo()
canvas = bpy.data.images["canvas"]
R["undo_restores"] = host.Snapshot(canvas).pixels().data == before

# Stop: nothing of live mode stays queued or running (a change after Stop sends nothing)
sent = live.live.sent
assert "FINISHED" in bpy.ops.paintbridge.live_stop()
canvas.update_tag()
bpy.context.view_layer.update()
end = time.monotonic() + 2
while time.monotonic() < end:
    ctl.drain()
    time.sleep(0.05)
R["sent_after_stop"] = live.live.sent - sent
R["state_after_stop"] = live.live.state
R["kept_job"] = live.live.result_job
R["last_error"] = ctl.STATE["last_error"]

"""Against a real engine: the Gallery and Workflows sub-panels' operators, driven like a person would.

PARAMS: url, token, model, nonce (a word unique to this run), fox / shrink / paste (names of workflows the
test saved beforehand with a plain protocol Client: test_workflows' GRAPH+PARAMS, RESIZE with an image and a
width choice, and a paste of two layers through a mask).
"""

import json
import os
import time

import bpy
from _util import addon, draw_panels, FakeLayout, pump, vendored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
import importlib  # noqa: E402
ui = A.panels
PANELS = ["PAINTBRIDGE_PT_panel", "PAINTBRIDGE_PT_gallery", "PAINTBRIDGE_PT_workflows"]
forms = vendored(ADDON_MODULE, "protocol.forms")
Pixels = vendored(ADDON_MODULE, "protocol.pixels").Pixels

R = RESULT
url, token, model, nonce = PARAMS["url"], PARAMS["token"], PARAMS["model"], PARAMS["nonce"]
sett.prefs().server = url
s = ctl.get_session()
s.tokens.set(url, token)
bpy.ops.paintbridge.connect()
pump(ctl, lambda: ctl.STATE["state"] == "connected", 60, "connected")
pump(ctl, lambda: bool(ctl.STATE["models"]), 60, "models")
scene = bpy.context.scene
settings = scene.paintbridge
settings.model = model
g = bpy.context.window_manager.paintbridge_gallery
form = scene.paintbridge_workflow


def op(name, **kw):
    """Call an operator; an ERROR report (which bpy.ops raises as RuntimeError) comes back as its text."""
    try:
        return getattr(bpy.ops.paintbridge, name)(**kw), None
    except RuntimeError as exc:
        return {"CANCELLED"}, str(exc)


def wait_result(n0, what):
    pump(ctl, lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, what)
    assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
    return bpy.data.images[ctl.STATE["results"][-1]]


def wait_page():
    pump(ctl, lambda: not ctl.gallery().loading or ctl.STATE["last_error"], 60, "gallery page")
    assert not ctl.STATE["last_error"], ctl.STATE["last_error"]


def solid(name, w, h, rgba):
    img = bpy.data.images.new(name, w, h, alpha=True)
    host.write_pixels(img, Pixels(bytes(rgba) * (w * h), w, h))
    return img


# ---- 1. an image made from Blender ------------------------------------------------------------------------
prompt = f"a gallery teapot {nonce}"
settings.mode, settings.prompt, settings.negative_prompt = "GENERATE", prompt, "blurry"
settings.steps, settings.seed, settings.guidance, settings.width, settings.height = 2, 4321, 6.5, 64, 48
catalog = bpy.context.window_manager.paintbridge_catalog
settings.model = "tiny-sdxl"          # the LoRA picker lists only LoRAs for the model's base
R["loras_sdxl"] = [i.name for i in catalog.loras]
settings.model = model
settings.width, settings.height = 64, 48   # after the model: picking one resets the size to its native size
R["loras"] = [i.name for i in catalog.loras]
settings.lora, settings.lora_weight = R["loras"][0], 0.65
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.generate()
made = wait_result(n0, "generate result")
made_px = host.image_to_pixels(made).data

# ---- 2. gallery: refresh with a search, the image is listed with its thumbnail ---------------------------------
g.search = nonce          # the update callback refreshes already; the operator asks again (newest page wins)
assert "FINISHED" in bpy.ops.paintbridge.gallery_refresh()
wait_page()
assert len(g.items) == 1 and ctl.gallery().total == 1, [(i.prompt, i.app) for i in g.items]
it = g.items[0]
image_id = it.image_id
R["listed"] = {"prompt": it.prompt, "seed": it.seed, "app": it.app, "mode": it.mode, "model": it.model,
               "starred": it.starred, "size": [it.width, it.height]}
pv = ctl.thumbnail(image_id)
R["thumbnail"] = {"image_size": list(pv.image_size) if pv else None,
                  "file": os.path.exists(os.path.join(ctl.thumb_dir(), image_id + ".png")) if ctl.thumb_dir() else False}

# ---- 3. Use settings refills the scene's form ----------------------------------------------------------------
settings.mode, settings.prompt, settings.negative_prompt = "REFINE", "something else", ""
settings.steps, settings.seed, settings.guidance, settings.width, settings.height = 9, 1, 1.0, 128, 128
settings.model, settings.lora, settings.lora_weight = "", "", 1.5
g.index = 0
assert "FINISHED" in bpy.ops.paintbridge.gallery_recall()
pump(ctl, lambda: settings.prompt == prompt or ctl.STATE["last_error"], 60, "recalled settings")
R["recalled"] = {"mode": settings.mode, "prompt": settings.prompt, "negative_prompt": settings.negative_prompt,
                 "model": settings.model, "steps": settings.steps, "seed": settings.seed,
                 "guidance": round(settings.guidance, 4), "width": settings.width, "height": settings.height,
                 "lora": [settings.lora, round(settings.lora_weight, 4)], "message": ctl.GALLERY_STATE["message"]}

# ---- 4. Open as image: a new packed datablock with the very pixels ---------------------------------------------
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.gallery_open()
opened = wait_result(n0, "opened image")
R["opened"] = {"name": opened.name, "size": list(opened.size), "packed": opened.packed_file is not None,
               "same_pixels": host.image_to_pixels(opened).data == made_px,
               "image_id": opened.get(host.IMAGE_ID), "distinct": opened.name != made.name}

# ---- 5. Star, then the starred filter ---------------------------------------------------------------------
assert "FINISHED" in bpy.ops.paintbridge.gallery_star()
pump(ctl, lambda: g.items[0].starred or ctl.STATE["last_error"], 60, "starred reply")
g.starred_only = True
wait_page()
R["starred_filter"] = [i.image_id for i in g.items]
assert all(i.starred for i in g.items)
g.starred_only = False
wait_page()
labels = draw_panels(ui, bpy.context, PANELS)
row_labels = FakeLayout()
ui.PAINTBRIDGE_UL_images.draw_item(None, bpy.context, row_labels, g, g.items[0], 0, g, "index", 0)
R["gallery_drawn"] = {"prompt_shown": prompt in " ".join(labels),   # wrapped to the sidebar width
                      "row": row_labels.log}

# ---- 6. workflows: the list, a generated form, a bad value, a run ------------------------------------------
pump(ctl, lambda: ctl.find_workflow(PARAMS["fox"]) is not None, 60, "workflows listed")
assert "FINISHED" in bpy.ops.paintbridge.workflow_select(workflow=PARAMS["fox"])
rows = {r.name: r for r in form.fields}


def row_info(r):
    d = {"widget": r.widget, "label": r.label, "required": r.required}
    if r.has_min:
        d["min"] = r.min_value
    if r.has_max:
        d["max"] = r.max_value
    if r.widget == forms.INT:
        d["value"] = r.int_value
    elif r.widget == forms.FLOAT:
        d["value"] = round(r.float_value, 4)
    elif r.widget in (forms.TEXT, forms.TEXTAREA):
        d["value"] = r.str_value
    elif r.widget == forms.CHOICE:
        d["choices"] = json.loads(r.choices_json)
        d["value"] = r.choice
    return d


R["fox_form"] = {"workflow": form.workflow, "order": [r.name for r in form.fields],
                 "rows": {n: row_info(r) for n, r in rows.items()}}

engine_jobs = lambda: len(s.client.call("job.list", {"limit": 500})["jobs"])  # noqa: E731
jobs0, local0 = engine_jobs(), len(s.jobs.rows)
rows["steps"].int_value = 9                       # max is 8
rows["cfg"].float_value = 25.0                    # max is 20
res, err = op("workflow_run")
ctl.drain()
time.sleep(0.5)
ctl.drain()
labels = draw_panels(ui, bpy.context, PANELS)
R["bad_drawn"] = [t for t in labels if "at most" in t]
R["bad"] = {"result": sorted(res), "report": err, "steps_error": rows["steps"].error, "cfg_error": rows["cfg"].error,
            "prompt_error": rows["prompt"].error, "form_error": form.error,
            "local_jobs_added": len(s.jobs.rows) - local0, "engine_jobs_added": engine_jobs() - jobs0}

fox_prompt = f"a gallery fox {nonce}"
rows["steps"].int_value, rows["cfg"].float_value = 2, 4.5
rows["prompt"].str_value, rows["seed"].int_value = fox_prompt, 5
rows["scheduler"].choice = str(forms.fields(ctl.find_workflow(PARAMS["fox"]))[3].choices.index("ddim"))
n0 = len(ctl.STATE["results"])
res, err = op("workflow_run")
assert "FINISHED" in res, err
fox = wait_result(n0, "fox workflow result")
fox_job = next(j for j in s.jobs.rows.values() if (j.tag or {}).get("workflow") == PARAMS["fox"]).job
R["fox_run"] = {"name": fox.name, "size": list(fox.size), "errors_cleared": not any(r.error for r in form.fields),
                "values": s.client.call("job.get", {"job": fox_job})["request"]["values"]}

# ---- 7. an image parameter from a Blender image; missing image = an error and nothing sent -------------------
assert "FINISHED" in bpy.ops.paintbridge.workflow_select(workflow=PARAMS["shrink"])
rows = {r.name: r for r in form.fields}
R["shrink_form"] = {n: row_info(r) for n, r in rows.items()}
scene.paintbridge_image = ""                      # no Image Editor under -b: no active image either
jobs0, local0 = engine_jobs(), len(s.jobs.rows)
res, err = op("workflow_run")
R["shrink_missing"] = {"result": sorted(res), "error": rows["image"].error,
                       "local_jobs_added": len(s.jobs.rows) - local0, "engine_jobs_added": engine_jobs() - jobs0}
R["shrink_drawn"] = [t for t in draw_panels(ui, bpy.context, PANELS) if "choose a layer" in t or "active image" in t]
src = solid("shrink-src", 64, 32, (200, 30, 60, 255))
rows["image"].image = src
rows["width"].choice = str([16, 32].index(16))    # identifiers are indexes into the choices
n0 = len(ctl.STATE["results"])
res, err = op("workflow_run")
assert "FINISHED" in res, err
small = wait_result(n0, "shrink workflow result")
px = host.image_to_pixels(small)
R["shrink_run"] = {"name": small.name, "size": [px.w, px.h], "uniform": px.data == bytes((200, 30, 60, 255)) * (px.w * px.h)}

# ---- 8. two layers (one the active image) and a mask image: exact paste -----------------------------------
assert "FINISHED" in bpy.ops.paintbridge.workflow_select(workflow=PARAMS["paste"])
rows = {r.name: r for r in form.fields}
R["paste_form"] = {n: row_info(r) for n, r in rows.items()}
W, H = 32, 24
base = solid("paste-base", W, H, (10, 20, 30, 255))
patch = solid("paste-patch", W, H, (250, 240, 5, 255))
mask_bytes = bytearray((0, 0, 0, 255) * (W * H))
for y in range(4, 12):
    for x in range(8, 20):
        mask_bytes[(y * W + x) * 4:(y * W + x) * 4 + 3] = b"\xff\xff\xff"
mimg = bpy.data.images.new("paste-mask", W, H, alpha=True)
host.write_pixels(mimg, Pixels(bytes(mask_bytes), W, H))
wrong = solid("paste-wrong-size", 8, 8, (255, 255, 255, 255))
rows["base"].image, rows["mask"].image = base, wrong
scene.paintbridge_image = "paste-patch"           # the empty "patch" row takes the active image
rows["feather"].float_value = 0.0
res, err = op("workflow_run")
R["paste_wrong_mask"] = {"result": sorted(res), "error": rows["mask"].error}
R["paste_drawn"] = [t for t in draw_panels(ui, bpy.context, PANELS) if "8x8" in t or "active image" in t]
rows["mask"].image = mimg
n0 = len(ctl.STATE["results"])
res, err = op("workflow_run")
assert "FINISHED" in res, err
pasted = host.image_to_pixels(wait_result(n0, "paste workflow result"))
inside = outside = 0
for y in range(H):
    for x in range(W):
        p = pasted.data[(y * W + x) * 4:(y * W + x) * 4 + 4]
        want = (250, 240, 5, 255) if 4 <= y < 12 and 8 <= x < 20 else (10, 20, 30, 255)
        if tuple(p) != want:
            if 4 <= y < 12 and 8 <= x < 20:
                inside += 1
            else:
                outside += 1
R["paste_run"] = {"size": [pasted.w, pasted.h], "wrong_inside": inside, "wrong_outside": outside}

# ---- 9. paging: one image per page over this run's images (the teapot and the fox) --------------------------
ctl.gallery().page_size = 1
assert "FINISHED" in bpy.ops.paintbridge.gallery_refresh()
wait_page()
first = (len(g.items), ctl.gallery().total, bool(ctl.gallery().has_more))
assert "FINISHED" in bpy.ops.paintbridge.gallery_refresh(more=True)
wait_page()
R["paging"] = {"first": list(first), "after_more": [len(g.items), ctl.gallery().total],
               "ids_distinct": len({i.image_id for i in g.items}) == len(g.items),
               "more_left": bool(ctl.gallery().has_more), "prompts": sorted(i.prompt for i in g.items)}

# ---- 10. Use settings on a workflow image: that workflow is chosen and its form filled --------------------------
assert "FINISHED" in bpy.ops.paintbridge.workflow_select(workflow=PARAMS["shrink"])
g.index = next(i for i, it in enumerate(g.items) if it.prompt == fox_prompt)
assert "FINISHED" in bpy.ops.paintbridge.gallery_recall()
pump(ctl, lambda: form.workflow == PARAMS["fox"] or ctl.STATE["last_error"], 60, "recalled workflow")
rows = {r.name: r for r in form.fields}
R["workflow_recalled"] = {"workflow": form.workflow, "prompt": rows["prompt"].str_value,
                          "seed": rows["seed"].int_value, "cfg": rows["cfg"].float_value,
                          "scheduler": json.loads(rows["scheduler"].choices_json)[int(rows["scheduler"].choice)],
                          "message": ctl.GALLERY_STATE["message"]}
R["last_error"] = ctl.STATE["last_error"]

# ---- 11. unregister frees the thumbnails --------------------------------------------------------------------
thumb_dir = ctl.thumb_dir()
bpy.ops.preferences.addon_disable(module=ADDON_MODULE)
R["thumbs_freed"] = ctl.thumbs_freed() and (thumb_dir is None or not os.path.exists(thumb_dir))

"""Issue 16 deliverable 5 in Blender: the sampler / schedule / clip-skip / VAE pickers the engine lists, defaults
that follow the model (its native size), Generate sends them, Use settings restores them; an admin downloads a
model from a local stand-in site and sees its progress; a user who is not an admin sees no download control.

PARAMS: url, token, user_token, model, vae, download_url, download_name, missing_url.
"""

import bpy
from _util import addon, draw_panels, pump

pkg, A = addon(ADDON_MODULE)
ctl, sett, ui = A.controller, A.settings, A.panels

R = RESULT
P = PARAMS
sett.prefs().server = P["url"]
s = ctl.get_session()
scene = bpy.context.scene
form = scene.paintbridge
catalog = bpy.context.window_manager.paintbridge_catalog
R["size_before"] = [form.width, form.height]   # the property defaults, before any model is known

bpy.ops.paintbridge.connect(token=P["token"])
pump(ctl, lambda: ctl.STATE["state"] == "connected", 30, "connected")
pump(ctl, lambda: bool(ctl.STATE["models"]) and len(catalog.samplers) > 0, 30, "models and samplers")
form.model = P["model"]
R["size_after_model"] = [form.width, form.height]   # the model's native size (models.list native_size)
R["samplers"] = [it.name for it in catalog.samplers]
R["vaes"] = [it.name for it in catalog.vaes]

# a VAE that does not fit the model's base goes back to none when the model changes
form.vae = P["vae"]
form.model = "tiny-sdxl"
R["vae_after_sdxl"] = form.vae
R["vaes_sdxl"] = [it.name for it in catalog.vaes]
form.model = P["model"]

# the schedule follows the sampler: DDIM takes no karras schedule
form.scheduler = "DPM++ 2M"
form.schedule = "karras"
form.scheduler = "DDIM"
R["schedule_after_ddim"] = form.schedule
R["ddim_schedules"] = ctl.schedules(form)

# pick, generate, and the engine gets them
form.mode, form.prompt, form.steps, form.seed = "GENERATE", "a picked harbour", 2, 11
form.scheduler, form.schedule, form.clip_skip, form.vae = "DPM++ 2M", "karras", 2, P["vae"]
labels = draw_panels(ui, bpy.context, ["PAINTBRIDGE_PT_panel"])
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.generate()
pump(ctl, lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, "generate result")
assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
R["job"] = s.jobs.latest().job
R["result_size"] = list(bpy.data.images[ctl.STATE["results"][-1]].size)

# Use settings restores them (after the form was changed)
image_id = s.client.call("job.get", {"job": R["job"]})["layers"][0]["image_id"]
form.scheduler, form.schedule, form.clip_skip, form.vae = "Euler", "default", 1, ""
form.width = form.height = 512
ctl.GALLERY_STATE["message"] = ""
ctl.recall(image_id, scene.name)
pump(ctl, lambda: ctl.GALLERY_STATE["message"].startswith("Settings filled in"), 60, "recall")
R["recalled"] = {"scheduler": form.scheduler, "schedule": form.schedule, "clip_skip": form.clip_skip,
                 "vae": form.vae, "size": [form.width, form.height], "message": ctl.GALLERY_STATE["message"]}

# an admin downloads a model: the panel shows it, its progress, then the new model in the lists
R["admin_panel"] = ui.PAINTBRIDGE_PT_models.poll(bpy.context)
d = bpy.context.window_manager.paintbridge_download
d.source, d.name = P["download_url"], P["download_name"]
assert "FINISHED" in bpy.ops.paintbridge.download_model()
seen = []


def done():
    rows = ctl.downloads()
    if rows:
        seen.append((rows[-1].state, rows[-1].bytes, rows[-1].describe()))
    return bool(rows) and not rows[-1].active


pump(ctl, done, 120, "download")
R["download_seen"] = seen
R["download_drawn"] = " ".join(draw_panels(ui, bpy.context, ["PAINTBRIDGE_PT_models"]))   # wrapped lines, joined
# a source that is not there: a clear error in the panel
d.source, d.name = P["missing_url"], "nothing"
assert "FINISHED" in bpy.ops.paintbridge.download_model()
pump(ctl, lambda: not ctl.downloads()[-1].active, 60, "refused download")
R["missing_drawn"] = " ".join(draw_panels(ui, bpy.context, ["PAINTBRIDGE_PT_models"]))
R["missing_state"] = ctl.downloads()[-1].state

# a user who is not an admin: no download panel
bpy.ops.paintbridge.connect(token=P["user_token"])
pump(ctl, lambda: ctl.STATE["state"] == "connected" and s.user and not s.user.get("admin"), 30, "user connected")
R["user_panel"] = ui.PAINTBRIDGE_PT_models.poll(bpy.context)

"""With Blender's UI and event loop running (run_in_blender(gui=True): no -b, under Xvfb): the add-on's own timer
drains the session. Connect, generate, and wait for the result to be shown in an Image Editor; this script never
calls drain() and never reaches into the session.

PARAMS: url, token, model.
"""

import time

import bpy
from _util import addon

pkg, core = addon(ADDON_MODULE)
R = RESULT
url, token, model = PARAMS["url"], PARAMS["token"], PARAMS["model"]
R["background"] = bpy.app.background


def wait(cond, timeout, what):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}; state={core.STATE}"
        yield 0.05


def shown_images():
    return [a.spaces.active.image.name for w in bpy.context.window_manager.windows for a in w.screen.areas
            if a.type == "IMAGE_EDITOR" and a.spaces.active.image is not None]


def steps():
    # the factory layout has no Image Editor: make the biggest area (the 3D viewport) one, as a user would
    win = bpy.context.window_manager.windows[0]
    area = max(win.screen.areas, key=lambda a: a.width * a.height)
    area.type = "IMAGE_EDITOR"
    R["window"] = [win.width, win.height]
    core.prefs().server = url
    core.get_session().tokens.set(url, token)      # as if signed in earlier: the token comes from the store
    with bpy.context.temp_override(window=win, area=area):
        assert "FINISHED" in bpy.ops.paintbridge.connect()
    yield from wait(lambda: core.STATE["state"] == "connected", 30, "connected")
    yield from wait(lambda: bool(core.STATE["models"]), 30, "models")
    settings = bpy.context.scene.paintbridge
    settings.model = model
    settings.mode, settings.prompt, settings.steps, settings.seed = "GENERATE", "a red cube", 2, 7
    settings.width, settings.height = 64, 48
    n0 = len(core.STATE["results"])
    with bpy.context.temp_override(window=win, area=area):
        assert "FINISHED" in bpy.ops.paintbridge.generate()
    # what the panel would show, as the timer updates it
    statuses = []
    while len(core.STATE["results"]) == n0 and not core.STATE["last_error"]:
        jobs = list(core.STATE["jobs"].values())
        if jobs and (not statuses or statuses[-1] != jobs[-1]["status"]):
            statuses.append(jobs[-1]["status"])
        assert len(statuses) < 50 and time.monotonic() < T_END, f"no result; state={core.STATE}"
        yield 0.02
    assert not core.STATE["last_error"], core.STATE["last_error"]
    name = core.STATE["results"][-1]
    img = bpy.data.images[name]
    R["statuses"] = statuses
    R["result"] = {"size": list(img.size), "packed": img.packed_file is not None, "shown": name in shown_images()}
    R["job_status"] = [i["status"] for i in core.STATE["jobs"].values()]
    R["active_jobs"] = len(core.active_jobs())
    yield 0.5                     # a few more timer ticks: nothing may change once the job is done
    R["active_jobs_later"] = len(core.active_jobs())
    R["results_later"] = len(core.STATE["results"]) - n0


T_END = time.monotonic() + 300
STEPS = steps()

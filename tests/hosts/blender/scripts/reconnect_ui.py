"""With Blender's UI and event loop running (run_in_blender(gui=True)): Generate through a link the test cuts while
the job runs and restores once the engine has finished it (tests/hosts/cut_link.py). Only the add-on's own timer
drains the session. Records what the panel reads meanwhile (the connection state and message, the job's state)
and whether the result is shown in the Image Editor after the add-on reconnects.

PARAMS: url (the cut link), token, model, steps.
"""

import time

import bpy
from _util import addon, ui_wait, image_editor_area, connect_stored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
R = RESULT
url, token, model = PARAMS["url"], PARAMS["token"], PARAMS["model"]
R["background"] = bpy.app.background


def wait(cond, timeout, what):
    return ui_wait(ctl, cond, timeout, what)


def steps():
    win, area = image_editor_area()
    connect_stored(ctl, sett, win, area, url, token)
    yield from wait(lambda: ctl.STATE["state"] == "connected", 30, "connected")
    yield from wait(lambda: bool(ctl.STATE["models"]), 30, "models")
    st = bpy.context.scene.paintbridge
    st.model = model
    st.mode, st.prompt, st.steps, st.seed = "GENERATE", "a red cube", PARAMS["steps"], 7
    st.width, st.height = 64, 48
    n0 = len(ctl.STATE["results"])
    with bpy.context.temp_override(window=win, area=area):
        assert "FINISHED" in bpy.ops.paintbridge.generate()
    job = ctl.latest_job()
    seen = []   # (connection state, its message, the job's state, its line), as the panel would draw them
    while len(ctl.STATE["results"]) == n0 and not ctl.STATE["last_error"]:
        now = (ctl.STATE["state"], ctl.STATE["message"], job.state, job.describe())
        if not seen or seen[-1] != now:
            seen.append(now)
        assert len(seen) < 200 and time.monotonic() < T_END, f"no result; seen={seen}"
        yield 0.02
    R["seen"] = seen
    assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
    name = ctl.STATE["results"][-1]
    img = bpy.data.images[name]
    R["job"] = job.job
    R["result"] = {"size": list(img.size), "shown": name in host.shown_images()}
    R["job_state"] = job.state
    R["state"] = ctl.STATE["state"]
    R["active_jobs"] = len(ctl.active_jobs())
    yield 1.0                     # more timer ticks: nothing may bring the job back
    R["active_jobs_later"] = len(ctl.active_jobs())


T_END = time.monotonic() + 300
STEPS = steps()

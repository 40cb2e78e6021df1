"""With Blender's UI and event loop running (run_in_blender(gui=True): no -b, under Xvfb): the add-on's own timer
drains the session. Connect, generate, and wait for the result to be shown in an Image Editor; this script never
calls drain() and never reaches into the session: it reads what the panels read (the controller's STATE and job
rows, host.shown_images()).

PARAMS: url, token, model.
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
    R["window"] = [win.width, win.height]
    connect_stored(ctl, sett, win, area, url, token)
    yield from wait(lambda: ctl.STATE["state"] == "connected", 30, "connected")
    yield from wait(lambda: bool(ctl.STATE["models"]), 30, "models")
    st = bpy.context.scene.paintbridge
    st.model = model
    st.mode, st.prompt, st.steps, st.seed = "GENERATE", "a red cube", 12, 7   # long enough for the timer to see it run
    st.width, st.height = 64, 48
    n0 = len(ctl.STATE["results"])
    with bpy.context.temp_override(window=win, area=area):
        assert "FINISHED" in bpy.ops.paintbridge.generate()
    job = ctl.latest_job()
    # what the panel would show, as the timer updates it
    statuses = []
    while len(ctl.STATE["results"]) == n0 and not ctl.STATE["last_error"]:
        if not statuses or statuses[-1] != job.state:
            statuses.append(job.state)
        assert len(statuses) < 50 and time.monotonic() < T_END, f"no result; state={ctl.STATE}"
        yield 0.02
    assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
    name = ctl.STATE["results"][-1]
    img = bpy.data.images[name]
    R["statuses"] = statuses
    R["result"] = {"size": list(img.size), "packed": img.packed_file is not None, "shown": name in host.shown_images()}
    R["job_status"] = [job.state, ctl.latest_job() is job]
    R["active_jobs"] = len(ctl.active_jobs())
    yield 0.5                     # a few more timer ticks: nothing may change once the job is done
    R["active_jobs_later"] = len(ctl.active_jobs())
    R["results_later"] = len(ctl.STATE["results"]) - n0


T_END = time.monotonic() + 300
STEPS = steps()

"""For the host benchmark (bench B9, issue 15 item 17), in Blender with its UI and event loop (run_in_blender(gui=True)):
the main thread's longest stall while a 3840x2160 image is sent (Refine), while its 3840x2160 result comes back and
is placed (a new image, and "Replace active image"), and the time from Generate to the result in the document for
a 1920x1080 -> 3840x2160 plain upscale. A bpy.app.timers timer asking for a tick every 5 ms measures how long the
main thread stood still; the add-on's own timer drains the session (nothing here calls drain()).

PARAMS: url, token, model, reps.
"""

import time

import bpy
from _util import addon, ui_wait, image_editor_area, connect_stored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
R = RESULT
P = PARAMS
MS = 1000.0


class Ticker:
    def __init__(self):
        self.last, self.max_gap, self.gaps, self.on = None, 0.0, [], False
        self.fn = self._tick   # one function object: timers.is_registered/unregister compare by identity

    def _tick(self):
        if not self.on:
            return None
        now = time.perf_counter()
        gap = now - self.last
        self.max_gap = max(self.max_gap, gap)
        if gap > 0.03:
            self.gaps.append((round(now - self.t0, 3), round(gap * MS, 1)))
        self.last = now
        return 0.005

    def start(self):
        self.stop()
        self.on, self.gaps, self.max_gap = True, [], 0.0
        self.last = self.t0 = time.perf_counter()
        bpy.app.timers.register(self.fn, first_interval=0.005)

    def stop(self) -> float:
        self.on = False
        if bpy.app.timers.is_registered(self.fn):
            bpy.app.timers.unregister(self.fn)
        return round(self.max_gap * MS, 1)


PLACED = []   # durations of host.place_result, the main-thread part of placing a result


def timed_place(fn):
    def place(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            PLACED.append((time.perf_counter() - t) * MS)
    return place


def wait(cond, timeout, what):
    return ui_wait(ctl, cond, timeout, what, every=0.02)


def painted(name, w, h):
    img = bpy.data.images.new(name, w, h, alpha=True)
    try:
        import numpy as np
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        px = np.stack([x / w, y / h, (x + y) / (w + h), np.ones_like(x)], axis=2).ravel()
    except ImportError:
        import array
        px = array.array("f", [0.5]) * (w * h * 4)
    img.pixels.foreach_set(px)
    img.update()
    img.pack()   # as a painted image the user saved: the add-on reads it, it does not encode it
    return img


def steps():
    win, area = image_editor_area()
    connect_stored(ctl, sett, win, area, P["url"], P["token"])
    yield from wait(lambda: ctl.STATE["state"] == "connected" and ctl.STATE["models"], 60, "connected")
    host.place_result = timed_place(host.place_result)
    ticker = Ticker()
    ticker.start()
    yield 2.0
    R["idle_stall_ms"] = ticker.stop()
    R["numpy"] = host.np is not None
    st = bpy.context.scene.paintbridge
    st.model = P["model"]

    def generate(img, mode, replace=False, **form):
        """Generate from img in the Image Editor; the timings of one run, once the result is placed."""
        area.spaces.active.image = img
        st.mode, st.replace_active, st.steps, st.seed, st.strength = mode, replace, 2, 3, 0.5
        for k, v in form.items():
            setattr(st, k, v)
        n0, jobs0 = len(ctl.STATE["results"]), len(ctl.get_session().jobs.rows)
        del PLACED[:]
        out = {}
        ticker.start()
        t0 = time.perf_counter()
        with bpy.context.temp_override(window=win, area=area):
            assert "FINISHED" in bpy.ops.paintbridge.generate(), ctl.STATE["last_error"]
        out["click_ms"] = (time.perf_counter() - t0) * MS
        row = lambda: list(ctl.get_session().jobs.rows.values())[jobs0]  # noqa: E731
        yield from wait(lambda: row().job is not None or not row().active, 120, "the image sent")
        out["sent_s"] = time.perf_counter() - t0
        out["send_stall_ms"] = ticker.stop()
        out["send_gaps"] = ticker.gaps
        ticker.start()
        t1 = time.perf_counter()
        yield from wait(lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, "the result")
        assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
        out["in_document_s"] = time.perf_counter() - t0
        yield 1.0   # whatever follows the placing (the Image Editor drawing it)
        out["receive_apply_stall_ms"] = ticker.stop()
        out["receive_apply_gaps"] = [(round(t + t1 - t0, 3), g) for t, g in ticker.gaps]
        out["place_ms"] = list(PLACED)
        name = ctl.STATE["results"][-1]
        out["result"] = list(bpy.data.images[name].size)
        return out, name

    def forget(name):
        img = bpy.data.images.get(name)
        if img is not None:
            bpy.data.images.remove(img)

    R["runs"] = []
    for i in range(P.get("reps", 3) + 1):   # the first run warms up
        run = {}
        src = painted(f"bench 4k {i}", 3840, 2160)
        run["4k"], name = yield from generate(src, "REFINE")
        forget(name)
        run["4k_replace"], name = yield from generate(src, "REFINE", replace=True)
        forget(src.name)
        hd = painted(f"bench hd {i}", 1920, 1080)
        run["upscale"], name = yield from generate(hd, "UPSCALE", upscale_factor="2", upscaler="")
        forget(name)
        forget(hd.name)
        if i:
            R["runs"].append(run)
        yield 0.2


STEPS = steps()

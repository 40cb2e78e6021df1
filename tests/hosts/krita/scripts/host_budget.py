# Runs inside Krita (see krita_host.py) for the host benchmark (bench B9, issue 15 item 17): the main thread's
# longest stall while a 4K layer is sent, while its 4K result comes back, and while a 4K result is applied; and the
# time from Generate to the result in the document for a 1920x1080 -> 3840x2160 plain upscale. Driven through the
# docker's buttons, as a person would; a 5 ms QTimer on the main thread measures how long Krita stood still.
# PARAMS: url, token, reps.
import os
import sys
import time

from krita import Krita, Selection
from PyQt5.QtCore import QEventLoop, QTimer

from paintbridge import host

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402

P = kutil.params()
R = {"ok": False, "runs": []}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the test driver)
messages = []
ctl.message.connect(messages.append)
MS = 1000.0


def pump(cond, timeout, what):
    """Wait in a nested Qt event loop: between checks the main thread is in Qt's C++ loop without the GIL, as in
    real use (a Python processEvents() loop would hold the GIL and starve the plug-in's worker threads)."""
    loop, timer, end = QEventLoop(), QTimer(), time.monotonic() + timeout
    state = {}

    def check():
        if cond() or time.monotonic() > end:
            state["done"] = cond()
            loop.quit()
    timer.timeout.connect(check)
    timer.start(20)
    loop.exec_()
    timer.stop()
    if not state.get("done"):
        raise AssertionError(f"timed out waiting for {what} (state={ctl.state}, message={messages[-3:]})")


def settle(seconds):
    end = time.monotonic() + seconds
    try:
        pump(lambda: time.monotonic() >= end, seconds + 5, "time")
    except AssertionError:
        pass


class Ticker(kutil.Ticker):
    """kutil.Ticker that also keeps every gap over 20 ms, with when it ended (s since start()): where the time went."""

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None and now - self.last > 0.02:
            self.gaps.append((round(now - self.t0, 3), round((now - self.last) * MS, 1)))
        super()._tick()

    def start(self):
        self.gaps, self.t0 = [], time.perf_counter()
        super().start()


PHASES = []   # (what, start, end) in perf_counter seconds: the worker's steps, to line up with the gaps


def timed(what, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            PHASES.append((what, t, time.perf_counter()))
    return wrapper


def painted_doc(w, h):
    doc = app.createDocument(w, h, f"pb-bench-{w}-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(doc)
    doc.activeNode().setPixelData(bytes(range(256)) * (w * h * 4 // 256), 0, 0, w, h)
    doc.refreshProjection()
    doc.setSelection(Selection())   # none: the whole document is sent
    doc.waitForDone()
    settle(0.5)
    return doc


def close(doc):
    doc.setModified(False)
    doc.close()
    settle(0.3)


def stage(what):
    """Where the script is, written at once: a crash of Krita itself leaves this behind."""
    R["stage"] = what
    kutil.write(R)


def upscale(scale):
    """Generate (Upscale, plain) on the active document; returns the timings of one run, with the result listed."""
    dk.mode.setCurrentIndex(dk.mode.findData("upscale"))
    dk.upscaler.setCurrentIndex(dk.upscaler.findData(""))
    dk.scale.setValue(scale)
    n0, jobs0 = len(ctl.results), len(ctl.session.jobs.rows)
    row = lambda: list(ctl.session.jobs.rows.values())[-1] if len(ctl.session.jobs.rows) > jobs0 else None  # noqa
    out = {}
    del PHASES[:]
    ticker.start()
    t0 = time.perf_counter()
    stage(f"{R['run']}: generate ×{scale}")
    dk.generate_btn.click()
    out["click_ms"] = (time.perf_counter() - t0) * MS
    pump(lambda: row() is not None and row().job is not None, 120, "the layer sent")
    out["sent_s"] = time.perf_counter() - t0
    out["send_stall_ms"] = ticker.stop()
    out["send_gaps"] = ticker.gaps
    stage(f"{R['run']}: waiting for the ×{scale} result")
    ticker.start()
    pump(lambda: len(ctl.results) > n0 or not row().active, 300, "the result")
    assert len(ctl.results) > n0, f"no result: {row().describe()} {messages[-3:]}"
    out["listed_s"] = time.perf_counter() - t0
    out["receive_stall_ms"] = ticker.stop()
    out["receive_gaps"] = ticker.gaps
    stage(f"{R['run']}: apply ×{scale}")
    dk.results.setCurrentRow(len(ctl.results) - 1)
    out["pixels"] = ctl.results[-1].layer.pixels
    ticker.start()
    t1 = time.perf_counter()
    dk.apply_btn.click()   # an Upscale result opens as a new document
    out["apply_ms"] = (time.perf_counter() - t1) * MS
    out["in_document_s"] = time.perf_counter() - t0
    settle(1.0)      # whatever Krita does after the click (projection, view) stalls here
    out["apply_stall_ms"] = ticker.stop()
    out["apply_gaps"] = ticker.gaps
    out["phases"] = [(w, round((a - t0) * MS), round((b - a) * MS)) for w, a, b in PHASES]
    new = app.activeDocument()
    out["new_document"] = [new.width(), new.height()]
    return out, new


try:
    R["krita_version"] = app.version()
    dk = kutil.docker(app)
    dk.show()
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")
    settle(0.5)
    ticker = Ticker()
    if P.get("phases"):   # diagnosis: time the worker's steps (wrapped here, the plug-in is unchanged)
        snap = timed("snapshot (main)", host.snapshot)
        host.snapshot = lambda *a, **k: timed("read", snap(*a, **k))
        host.request_region = timed("request_region (main)", host.request_region)
        ctl.form.save = timed("form.save (main)", ctl.form.save)
        ctl.session.generate = timed("session.generate (main)", ctl.session.generate)
        ctl._jobs_changed = timed("_jobs_changed (main)", ctl._jobs_changed)
        ctl.session._to_wire = timed("swap", ctl.session._to_wire)
        ctl.session.client.upload = timed("upload", ctl.session.client.upload)
        ctl.session.client.download = timed("download", ctl.session.client.download)
    ticker.start()
    settle(2.0)
    R["idle_stall_ms"] = ticker.stop()   # the pump's own rhythm: the floor of every figure below

    for i in range(P.get("reps", 3) + 1):   # the first run warms up
        R["run"] = f"run {i}"
        stage(f"run {i}: a 4K document")
        run = {}
        big = painted_doc(3840, 2160)
        got, out4k = upscale(1.0)   # a 4K layer sent, a 4K result back and opened
        run["4k"] = got
        # the same 4K result applied as a layer into a 4K document (what Apply does for Generate/Refine results)
        px = got.pop("pixels")
        stage(f"run {i}: close the 4K result's document")
        close(out4k)
        stage(f"run {i}: the 4K result as a layer")
        ticker.start()
        t1 = time.perf_counter()
        host.add_result_layer(big, "bench layer", px)
        run["4k"]["layer_apply_ms"] = (time.perf_counter() - t1) * MS
        settle(1.0)
        run["4k"]["layer_apply_stall_ms"] = ticker.stop()
        stage(f"run {i}: close the 4K document; a 1080p one")
        close(big)
        hd = painted_doc(1920, 1080)
        got, out_up = upscale(2.0)   # 1920x1080 -> 3840x2160, into a new document
        got.pop("pixels")
        run["upscale"] = got
        stage(f"run {i}: close both")
        close(out_up)
        close(hd)
        if i:
            R["runs"].append(run)
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
    R["messages"] = messages[-10:]
kutil.write(R)

# Runs inside Krita (see krita_host.py) with its event loop: Generate from the docker through a link the test cuts
# while the job runs and restores once the engine has finished it (tests/hosts/cut_link.py). Records what the
# docker shows meanwhile (status line, job line) and whether the result arrives after the plug-in reconnects.
# PARAMS: url (the cut link), token, model, steps.
import os
import sys
import time

from krita import Krita

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402
from pattern import pattern_bgra as pattern  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the test driver)
statuses, job_lines = [], []


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, job_lines)


try:
    dk = kutil.docker(app)
    dk.show()
    # the status line without its countdown ("(retrying in 3 s)"), which changes every second
    ctl.state_changed.connect(lambda state, text: statuses.append(text.split(" (retrying")[0]))
    shown = dk.job_line.setText
    dk.job_line.setText = lambda text: (job_lines.append(text), shown(text))
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models, 60, "sign-in and models")

    W = H = 64
    doc = app.createDocument(W, H, f"pb-reconnect-{time.time_ns()}", "RGBA", "U8", "", 300.0)
    kutil.show(doc).setPixelData(pattern(W, H), 0, 0, W, H)
    doc.refreshProjection()
    dk.tabs.setCurrentIndex(0)
    dk.mode.setCurrentIndex(dk.mode.findData("txt2img"))
    dk.model.setCurrentIndex(dk.model.findData(P["model"]))
    dk.steps.setValue(P["steps"])
    dk.seed.setValue(11)
    n0 = len(ctl.results)
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 240, "the result after the link came back")
    R["job"] = ctl.results[-1].job
    R["result_size"] = [ctl.results[-1].layer.pixels.w, ctl.results[-1].layer.pixels.h]
    R["active_jobs"] = len(ctl.active_jobs)
    kutil.settle(1.0)   # a few more drains: nothing may bring the job back
    R["active_jobs_later"] = len(ctl.active_jobs)
    R["job_line"] = dk.job_line.text()
    R["state"] = ctl.state
    R["statuses"] = [t for i, t in enumerate(statuses) if i == 0 or t != statuses[i - 1]]
    R["job_lines"] = [t for i, t in enumerate(job_lines) if t and (i == 0 or t != job_lines[i - 1])]
    dk.apply_btn.click()
    group = [n for n in doc.rootNode().childNodes() if n.name() == "Paintbridge"]
    R["applied"] = bool(group) and len(group[0].childNodes()) == 1
    R["ok"] = True
except Exception:
    import traceback

    R["error"] = traceback.format_exc()
    R["statuses"], R["job_lines"] = statuses, job_lines
kutil.write(R)

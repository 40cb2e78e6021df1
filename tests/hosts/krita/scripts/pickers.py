# Runs inside Krita (see krita_host.py, documents=[a 128x128 PNG]): issue 16 deliverable 5 from the docker's own
# widgets. The sampler / schedule / clip-skip / VAE pickers hold what the engine lists; Generate sends them; Use
# settings puts them back; the Models tab (download) is there for an admin and not for a user.
import os
import sys

from krita import Krita

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kutil  # noqa: E402

P = kutil.params()
R = {"ok": False}
app = Krita.instance()
ctl = controller  # noqa: F821  (given by the test driver)
messages = []
ctl.message.connect(messages.append)


def pump(cond, timeout, what):
    kutil.pump(ctl, cond, timeout, what, messages)


def items(combo):
    return [combo.itemData(i) for i in range(combo.count())]


try:
    doc = app.activeDocument()
    assert doc is not None, "the start-up document is not open"
    ctl.connect_server(P["url"], P["token"])
    pump(lambda: ctl.state == "connected" and ctl.models and ctl.samplers, 60, "sign-in, models and samplers")
    dk = kutil.docker(app)
    dk.show()
    dk.tabs.setCurrentIndex(0)
    dk.mode.setCurrentIndex(dk.mode.findData("txt2img"))
    dk.model.setCurrentIndex(dk.model.findData("tiny-sdxl"))
    R["vaes_sdxl"] = items(dk.vae)
    dk.model.setCurrentIndex(dk.model.findData(P["model"]))
    R["vaes"] = items(dk.vae)
    R["size_note"] = dk.size_note.text()
    R["samplers"] = [dk.scheduler.itemText(i) for i in range(dk.scheduler.count())]
    dk.scheduler.setCurrentIndex(dk.scheduler.findData("ddim"))
    R["ddim_schedules"] = items(dk.schedule)
    dk.scheduler.setCurrentIndex(dk.scheduler.findData("dpmpp_2m"))
    R["dpmpp_2m_schedules"] = items(dk.schedule)
    dk.schedule.setCurrentIndex(dk.schedule.findData("karras"))
    dk.clip_skip.setValue(2)
    dk.vae.setCurrentIndex(dk.vae.findData(P["vae"]))
    R["pickers_visible"] = dk.sampler_row.isVisible() and dk.clip_row.isVisible()
    dk.prompt.setPlainText("a picked lighthouse")
    dk.steps.setValue(2)
    dk.seed.setValue(77)
    n0 = len(ctl.results)
    dk.generate_btn.click()
    pump(lambda: len(ctl.results) > n0, 240, "generated result")
    job = ctl.session.jobs.latest().job
    R["job"] = job
    image_id = ctl.session.client.call("job.get", {"job": job})["layers"][0]["image_id"]

    # change everything, then Use settings puts the picks back
    dk.scheduler.setCurrentIndex(dk.scheduler.findData("euler"))
    dk.clip_skip.setValue(1)
    dk.vae.setCurrentIndex(0)
    dk._read_form()
    del messages[:]
    ctl.use_settings(image_id)
    pump(lambda: any("recalled" in m for m in messages), 60, "recall")
    R["recalled"] = {"scheduler": dk.scheduler.currentData(), "schedule": dk.schedule.currentData(),
                     "clip_skip": dk.clip_skip.value(), "vae": dk.vae.currentData()}
    R["recall_message"] = [m for m in messages if "recalled" in m]

    # the Models tab: an admin's; a download from it shows its progress, then the new model
    R["admin_tab"] = dk.tabs.indexOf(dk.models_page) >= 0
    dk.dl_source.setText(P["download_url"])
    dk.dl_name.setText(P["download_name"])
    dk.dl_btn.click()
    lines = []

    def download_done():
        text = dk.dl_list.text()
        if text and (not lines or lines[-1] != text):
            lines.append(text)
        rows = ctl.downloads()
        return bool(rows) and not rows[-1].active

    pump(download_done, 120, "download")
    kutil.settle(0.3)
    R["download_lines"] = lines + [dk.dl_list.text()]
    R["download_bar_seen"] = any("%)" in t for t in lines)
    R["model_listed"] = dk.model.findData(P["download_name"]) >= 0 or \
        P["download_name"] in [m["name"] for m in ctl.session.models] + [m["name"] for m in ctl.session.upscalers]
    # a user who is not an admin: no such tab
    ctl.connect_server(P["url"], P["user_token"])
    pump(lambda: ctl.state == "connected" and ctl.session.user and not ctl.session.user.get("admin"), 60,
         "the user's sign-in")
    kutil.settle(0.3)
    R["user_tab"] = dk.tabs.indexOf(dk.models_page) >= 0
    R["ok"] = True
except Exception:
    import traceback
    R["error"] = traceback.format_exc()
R["messages"] = messages[-10:]
kutil.write(R)

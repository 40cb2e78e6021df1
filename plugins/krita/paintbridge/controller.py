"""Observable state of the Paintbridge panel, independent of its widgets.

One Controller per Krita process. It owns the shared Session, drains it with a QTimer on the main thread and
turns updates into Qt signals; the docker only displays them. Documents are touched only here and in canvas.py,
both on the main thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from krita import Krita
from PyQt5.QtCore import QObject, QStandardPaths, QTimer, pyqtSignal

from protocol import default_url
from protocol.pixels import round8
from protocol.session import ResultLayer, Session

from . import canvas

MODES = [("txt2img", "Generate"), ("img2img", "Refine"), ("inpaint", "Inpaint selection"),
         ("outpaint", "Outpaint"), ("upscale", "Upscale")]
SETTINGS = "paintbridge"


@dataclass
class Result:
    job: str
    layer: ResultLayer
    doc: object
    mode: str


@dataclass
class Form:
    """What the person typed: kept across sign-ins and Krita restarts."""

    url: str = field(default_factory=default_url)
    username: str = ""
    model: str = ""
    prompt: str = ""
    negative: str = ""
    mode: str = "txt2img"
    source: str = "composite"
    strength: float = 0.6
    steps: int = 20
    guidance: float = 7.0
    seed: int = -1          # -1: random
    batch: int = 1

    def load(self):
        app = Krita.instance()
        for name, value in vars(self).items():
            raw = app.readSetting(SETTINGS, name, "")
            if raw == "":
                continue
            try:
                setattr(self, name, type(value)(raw))
            except ValueError:
                pass

    def save(self):
        app = Krita.instance()
        for name, value in vars(self).items():
            app.writeSetting(SETTINGS, name, str(value))


def config_dir() -> str:
    base = QStandardPaths.writableLocation(QStandardPaths.GenericConfigLocation) or os.path.expanduser("~/.config")
    return os.path.join(base, "paintbridge-krita")


class Controller(QObject):
    state_changed = pyqtSignal(str, str)        # state, message
    models_changed = pyqtSignal(list)
    progress = pyqtSignal(str, int, int, object)  # job, step, total, preview Pixels (BGRA) or None
    results_changed = pyqtSignal()
    busy_changed = pyqtSignal(bool)
    message = pyqtSignal(str)

    def __init__(self):
        super().__init__()
        self.form = Form()
        self.form.load()
        self.session = Session("krita", Krita.instance().version(), config_dir(), self.form.url,
                               pixel_order="bgra")
        self.state = "disconnected"
        self.models: list[dict] = []
        self.results: list[Result] = []
        self.active_jobs: dict[str, dict] = {}
        self.timer = QTimer(self)
        self.timer.setInterval(50)
        self.timer.timeout.connect(self.drain)
        self.timer.start()

    # ---- commands from the panel (none blocks) ---------------------------------------------------------
    def connect_server(self, url: str | None = None, token: str | None = None):
        if url:
            self.form.url = url
        self.form.save()
        self.session.connect(self.form.url, token or None)

    def sign_in(self, url: str, username: str, password: str, remember: bool):
        self.form.url, self.form.username = url, username
        self.form.save()
        self.session.login(username, password, remember, url=url)

    def sign_out(self):
        self.session.sign_out()

    def generate(self) -> str | None:
        """Read the document and queue a job. Returns the request id, or None (with a message) if refused."""
        f = self.form
        f.save()
        try:
            doc = canvas.active_document()
            x, y, w, h = canvas.request_region(doc, f.mode)
            params = {"mode": f.mode, "prompt": f.prompt, "negative_prompt": f.negative, "steps": f.steps,
                      "guidance": f.guidance, "batch": f.batch,
                      "source": {"app": "krita", "document": doc.fileName() or doc.name()}}
            if f.mode != "upscale":
                params["model"] = f.model
            if f.seed >= 0:
                params["seed"] = f.seed
            image = mask = None
            if f.mode == "txt2img":
                params.update(width=round8(w), height=round8(h), x=x, y=y)
            else:
                image = canvas.read_pixels(doc, x, y, w, h, f.source)
            if f.mode in ("img2img", "inpaint"):
                params["strength"] = f.strength
            if f.mode == "inpaint":
                mask = canvas.read_selection_mask(doc, x, y, w, h)
            if f.mode == "upscale":
                params["scale"] = 2.0
        except canvas.CanvasError as exc:
            self.message.emit(str(exc))
            return None
        rid = self.session.generate(params, image, mask, tag={"doc": doc, "mode": f.mode})
        self.busy_changed.emit(True)
        return rid

    def cancel(self):
        for job in list(self.active_jobs):
            self.session.cancel(job)

    def apply(self, index: int, replace: bool = False):
        res = self.results[index]
        try:
            if res.mode == "upscale":
                canvas.new_document(res.layer.name, res.layer.pixels)
            elif replace:
                canvas.replace_in_active_layer(res.doc, res.layer.pixels)
            else:
                canvas.add_result_layer(res.doc, res.layer.name, res.layer.pixels)
        except canvas.CanvasError as exc:
            self.message.emit(str(exc))
            return None
        except RuntimeError:   # the document was closed meanwhile
            self.message.emit("the document this result belongs to is closed")
            return None
        del self.results[index]
        self.results_changed.emit()
        return True

    def discard(self, index: int):
        del self.results[index]
        self.results_changed.emit()

    # ---- the main-thread drain -------------------------------------------------------------------------
    def drain(self):
        for up in self.session.poll():
            d = up.data
            if up.kind == "state":
                self.state = d["state"]
                msg = d.get("message", "")
                if d["state"] == "expired":
                    msg = "Your session expired. Sign in again (your prompt and settings are kept)."
                self.state_changed.emit(self.state, msg)
            elif up.kind == "signed_in":
                self.message.emit(f"signed in as {(d.get('user') or {}).get('name', '?')}")
            elif up.kind == "models":
                self.models = [m for m in d["models"] if m.get("type", "main") == "main"]
                if self.models and self.form.model not in [m["name"] for m in self.models]:
                    self.form.model = self.models[0]["name"]
                self.models_changed.emit(self.models)
            elif up.kind == "job":
                self.active_jobs[d["job"]] = d["tag"] or {}
            elif up.kind == "progress":
                self.progress.emit(d["job"], d.get("step") or 0, d.get("total") or 0, d.get("preview"))
            elif up.kind == "result":
                tag = d.get("tag") or self.active_jobs.get(d["job"]) or {}
                self.active_jobs.pop(d["job"], None)
                for layer in d["layers"]:
                    self.results.append(Result(d["job"], layer, tag.get("doc"), tag.get("mode", "txt2img")))
                self.results_changed.emit()
                self.busy_changed.emit(bool(self.active_jobs))
            elif up.kind in ("failed", "canceled"):
                self.active_jobs.pop(d["job"], None)
                self.busy_changed.emit(bool(self.active_jobs))
                self.message.emit("canceled" if up.kind == "canceled" else f"failed: {d.get('message')}")
            elif up.kind == "error":
                self.busy_changed.emit(bool(self.active_jobs))
                self.message.emit(d.get("message", "error"))


_CONTROLLER: Controller | None = None


def controller() -> Controller:
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = Controller()
    return _CONTROLLER

"""Observable state of the Paintbridge panel, independent of its widgets.

One Controller per Krita process. It owns the shared Session, drains it with a QTimer on the main thread and
turns updates into Qt signals; the docker only displays them. Documents are touched only here and in canvas.py,
both on the main thread.

Besides generating it keeps the gallery (one list of image summaries, paged with next_cursor, filtered by
"this document", "starred" and words of the prompt) and the user's workflows, whose forms come from the shared
protocol.forms so the three plug-ins check values the same way.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from dataclasses import dataclass, field

from krita import Krita
from PyQt5.QtCore import QObject, QStandardPaths, QTimer, pyqtSignal

from ._vendor.protocol import default_url, forms
from ._vendor.protocol.pixels import clear_outside, round8
from ._vendor.protocol.session import ResultLayer, Session

from . import canvas

MODES = [("txt2img", "Generate"), ("img2img", "Refine"), ("inpaint", "Inpaint selection"),
         ("outpaint", "Outpaint"), ("upscale", "Upscale")]
SETTINGS = "paintbridge"
log = logging.getLogger("paintbridge")
GALLERY_PAGE = 24        # images per gallery page
THUMB_SIZE = 96          # px, longest side of a gallery thumbnail
# recalled generate arguments (forms.recalled) -> Form attributes, with their types
RECALL = {"prompt": ("prompt", str), "negative_prompt": ("negative", str), "model": ("model", str),
          "mode": ("mode", str), "steps": ("steps", int), "guidance": ("guidance", float), "seed": ("seed", int),
          "strength": ("strength", float), "scale": ("scale", float), "upscaler": ("upscaler", str)}


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
    upscaler: str = ""      # Upscale: an upscaler model, "" for a plain (Lanczos) resize
    scale: float = 2.0
    lora: str = ""          # a LoRA applied to the model, "" for none
    lora_weight: float = 0.8
    extend_left: int = 0    # Outpaint: grow the canvas by these margins first
    extend_top: int = 0
    extend_right: int = 0
    extend_bottom: int = 0

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
    form_changed = pyqtSignal()                 # the Form was refilled (Use settings): show it again
    gallery_changed = pyqtSignal()              # gallery / gallery_total / gallery_cursor changed
    workflows_changed = pyqtSignal(list)
    workflow_errors = pyqtSignal(dict)          # {field name: message}; "" for the workflow as a whole

    def __init__(self):
        super().__init__()
        self.form = Form()
        self.form.load()
        self.session = Session("krita", Krita.instance().version(), config_dir(), self.form.url,
                               pixel_order="bgra")
        self.state = "disconnected"
        self.models: list[dict] = []
        self.upscalers: list[dict] = []
        self.loras: list[dict] = []
        self.results: list[Result] = []
        self.active_jobs: dict[str, dict] = {}
        self.gallery: list[dict] = []           # image summaries, newest first; "thumbnail" is BGRA Pixels|None
        self.gallery_total = 0
        self.gallery_cursor: str | None = None  # next page, None at the end
        self.gallery_filters: dict = {}         # the filters of the shown list (images.list args)
        self.gallery_loading = False
        self.gallery_page = GALLERY_PAGE
        self._gallery_gen = 0                   # drops pages of an older refresh
        self.workflows: list[dict] = []
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
            grown = None   # the old canvas inside the grown one: everything else is to be filled
            if f.mode == "outpaint" and (f.extend_left or f.extend_top or f.extend_right or f.extend_bottom):
                grown = (f.extend_left, f.extend_top, doc.width(), doc.height())
                canvas.extend_canvas(doc, f.extend_left, f.extend_top, f.extend_right, f.extend_bottom)
                # grown once: another Generate fills again instead of growing again
                f.extend_left = f.extend_top = f.extend_right = f.extend_bottom = 0
                f.save()
                self.form_changed.emit()
            x, y, w, h = canvas.request_region(doc, f.mode)
            params = {"mode": f.mode, "prompt": f.prompt, "negative_prompt": f.negative, "steps": f.steps,
                      "guidance": f.guidance, "batch": f.batch,
                      "source": {"app": "krita", "document": canvas.document_key(doc)}}
            if f.mode != "upscale":
                params["model"] = f.model
                params["loras"] = forms.loras_arg(f.lora, f.lora_weight)
            if f.seed >= 0:
                params["seed"] = f.seed
            image = mask = None
            if f.mode == "txt2img":
                params.update(width=round8(w), height=round8(h), x=x, y=y)
            else:
                image = canvas.read_pixels(doc, x, y, w, h, f.source)
            if grown is not None:   # new margins may hold a layer's default colour (Krita's white background)
                image.data = clear_outside(image.data, image.w, image.h, grown)
            if f.mode in ("img2img", "inpaint"):
                params["strength"] = f.strength
            if f.mode == "inpaint":
                mask = canvas.read_selection_mask(doc, x, y, w, h)
            if f.mode == "upscale":
                params["scale"] = f.scale
                if f.upscaler:
                    params["upscaler"] = f.upscaler
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
        if not self._place(res, replace):
            return None
        del self.results[index]
        self.results_changed.emit()
        return True

    def _place(self, res: Result, replace: bool = False) -> bool:
        """Put one result (or gallery image) into its document: the one code path for both."""
        try:
            if res.mode == "upscale" or res.doc is None:   # no document to go into (a workflow run without one)
                canvas.new_document(res.layer.name, res.layer.pixels)
            elif replace:
                canvas.replace_in_active_layer(res.doc, res.layer.pixels)
            else:
                canvas.add_result_layer(res.doc, res.layer.name, res.layer.pixels)
        except canvas.CanvasError as exc:
            self.message.emit(str(exc))
            return False
        except RuntimeError:   # the document was closed meanwhile
            self.message.emit("the document this result belongs to is closed")
            return False
        except Exception as exc:   # never let it escape into a Qt slot: PyQt aborts Krita on that
            log.exception("placing a result failed")
            self.message.emit(f"could not place the result: {type(exc).__name__}: {exc}")
            return False
        return True

    def discard(self, index: int):
        del self.results[index]
        self.results_changed.emit()

    # ---- gallery ----------------------------------------------------------------------------------------
    def refresh_gallery(self, this_document: bool = False, starred: bool = False, q: str = "") -> bool:
        """Reload the gallery from its first page with these filters. False (with a message) if refused."""
        filters = {}
        if this_document:
            try:
                filters["document"] = canvas.document_key(canvas.active_document())
            except canvas.CanvasError as exc:
                self.message.emit(str(exc))
                return False
        if starred:
            filters["starred"] = True
        if q.strip():
            filters["q"] = q.strip()
        self._gallery_gen += 1
        self.gallery_filters = filters
        self.gallery, self.gallery_total, self.gallery_cursor = [], 0, None
        self.gallery_loading = True
        self.gallery_changed.emit()
        self.session.list_images(thumb_size=THUMB_SIZE, limit=self.gallery_page,
                                 tag={"gallery": self._gallery_gen}, **filters)
        return True

    @property
    def gallery_has_more(self) -> bool:
        return self.gallery_cursor is not None and len(self.gallery) < self.gallery_total

    def load_more_images(self) -> bool:
        """The next page of the shown list (appended)."""
        if not self.gallery_has_more or self.gallery_loading:
            return False
        self.gallery_loading = True
        self.session.list_images(thumb_size=THUMB_SIZE, limit=self.gallery_page,
                                 tag={"gallery": self._gallery_gen}, cursor=self.gallery_cursor,
                                 **self.gallery_filters)
        return True

    def gallery_image(self, image_id: str) -> dict | None:
        return next((im for im in self.gallery if im["id"] == image_id), None)

    def use_settings(self, image_id: str):
        """Refill the generate form from an image's parameters (arrives as form_changed)."""
        self.session.recall(image_id, tag={"recall": image_id})

    def add_image(self, image_id: str) -> bool:
        """Download a gallery image and add it to the active document as a layer in the Paintbridge group,
        at the position it was made for."""
        try:
            doc = canvas.active_document()
        except canvas.CanvasError as exc:
            self.message.emit(str(exc))
            return False
        self.session.open_image(image_id, tag={"doc": doc, "mode": "gallery", "place": True})
        return True

    def star_image(self, image_id: str, starred: bool = True):
        self.session.call("images.star", {"image": image_id, "starred": bool(starred)}, tag={"star": image_id})

    def _recalled(self, d: dict):
        values = d.get("values") or {}
        summary = d.get("summary") or {}
        note = ""
        if not values:   # a graph or workflow image: no generate arguments, but its summary has the basics
            values = {k: summary[k] for k in ("prompt", "negative_prompt", "seed", "steps", "guidance", "model")
                      if summary.get(k) is not None}
            note = " (made by a workflow: only its prompt, seed and steps)"
        f = self.form
        f.lora, f.lora_weight = forms.recalled_lora(values)
        for key, (attr, typ) in RECALL.items():
            if values.get(key) is None:
                continue
            if key == "mode" and values[key] not in dict(MODES):
                continue
            try:
                setattr(f, attr, typ(values[key]))
            except (TypeError, ValueError):
                pass
        f.save()
        self.form_changed.emit()
        if f.model and self.models and f.model not in [m["name"] for m in self.models]:
            note += f"; model {f.model!r} is not on this engine"
        self.message.emit(f"settings of image {d.get('image')} recalled{note}")

    # ---- workflows --------------------------------------------------------------------------------------
    def refresh_workflows(self):
        self.session.refresh_workflows()

    def workflow(self, name: str) -> dict | None:
        return next((w for w in self.workflows if w["name"] == name), None)

    def workflow_fields(self, name: str) -> list:
        wf = self.workflow(name)
        return forms.fields(wf) if wf is not None else []

    def run_workflow(self, name: str, raw: dict) -> dict:
        """Check the form and queue the workflow. raw: widget values by field name; an image field gives
        "layer" or "composite", a mask field anything (the selection is read). Returns {field: message} for
        each mistake (also emitted as workflow_errors), and then sends nothing."""
        wf = self.workflow(name)
        if wf is None:
            errors = {"": "choose a workflow"}
            self.workflow_errors.emit(errors)
            return errors
        form = forms.fields(wf)
        raw = dict(raw)
        errors, doc = {}, None
        if any(f.is_layer for f in form):
            try:
                doc = canvas.active_document()
            except canvas.CanvasError as exc:
                errors[""] = str(exc)
            for f in form:
                if f.is_layer and doc is not None:
                    try:
                        raw[f.name] = canvas.read_workflow_input(doc, f.type, raw.get(f.name) or "layer")
                    except canvas.CanvasError as exc:
                        errors[f.name] = str(exc)
        values, bad = forms.collect(form, raw)
        errors = {**bad, **errors}
        if errors:
            self.workflow_errors.emit(errors)
            return errors
        if doc is None:
            try:
                doc = canvas.active_document()
            except canvas.CanvasError:
                doc = None   # nothing open: Apply puts its results in a new document
        self.workflow_errors.emit({})
        self.session.run_workflow(name, values, tag={"doc": doc, "mode": "workflow", "workflow": name})
        self.busy_changed.emit(True)
        return {}

    # ---- the main-thread drain -------------------------------------------------------------------------
    def drain(self):
        for up in self.session.poll():
            try:
                self._handle(up)
            except Exception as exc:   # a QTimer slot must not raise: PyQt would abort Krita
                log.exception("handling a %s update failed", up.kind)
                self.message.emit(f"Paintbridge: could not handle {up.kind}: {type(exc).__name__}: {exc}")

    def _handle(self, up):
        d = up.data
        if up.kind == "state":
            self.state = d["state"]
            msg = d.get("message", "")
            if d["state"] == "expired":
                msg = "Your session expired. Sign in again (your prompt and settings are kept)."
            self.state_changed.emit(self.state, msg)
            if self.state == "connected":
                self.refresh_workflows()
        elif up.kind == "signed_in":
            self.message.emit(f"signed in as {(d.get('user') or {}).get('name', '?')}")
        elif up.kind == "models":
            self.models, self.upscalers, self.loras = d["models"], d["upscalers"], d["loras"]
            if self.models and self.form.model not in [m["name"] for m in self.models]:
                self.form.model = self.models[0]["name"]
            if self.form.upscaler not in [m["name"] for m in self.upscalers]:
                self.form.upscaler = ""
            if self.form.lora not in [m["name"] for m in self.loras]:
                self.form.lora = ""
            self.models_changed.emit(self.models)
        elif up.kind == "job":
            self.active_jobs[d["job"]] = d["tag"] or {}
        elif up.kind == "progress":
            self.progress.emit(d["job"], d.get("step") or 0, d.get("total") or 0, d.get("preview"))
        elif up.kind == "result" and _tag(d).get("place"):   # Add to document
            tag = _tag(d)
            placed = [layer.name for layer in d["layers"]
                      if self._place(Result(d["job"], layer, tag.get("doc"), tag.get("mode", "gallery")))]
            if placed:
                self.message.emit(f"added {placed[0]!r} to the document")
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
            if _tag(d).get("workflow"):   # the engine refused the values: show it at the field it names
                details = d.get("details") if isinstance(d.get("details"), dict) else {}
                param = details.get("param")
                self.workflow_errors.emit({param if isinstance(param, str) else "": d.get("message", "error")})
            self.gallery_loading = False
        elif up.kind == "images":
            if _tag(d).get("gallery") != self._gallery_gen:
                return   # a page of a list that has been refreshed since
            self.gallery_loading = False
            known = {im["id"] for im in self.gallery}
            self.gallery.extend(im for im in d["images"] if im["id"] not in known)
            self.gallery_total, self.gallery_cursor = d.get("total", 0), d.get("next_cursor")
            self.gallery_changed.emit()
        elif up.kind == "recalled":
            self._recalled(d)
        elif up.kind == "reply":
            star = _tag(d).get("star")
            im = self.gallery_image(star) if star else None
            if im is not None:
                im["starred"] = bool((d.get("result") or {}).get("starred"))
                self.gallery_changed.emit()
        elif up.kind == "workflows":
            self.workflows = list(d["workflows"])
            self.workflows_changed.emit(self.workflows)


def guarded(fn):
    """fn as a Qt slot that never raises: PyQt aborts Krita on an exception that leaves a slot, so it is logged
    and shown in the docker's message line instead. Extra signal arguments fn does not take are dropped."""
    try:
        params = inspect.signature(fn).parameters.values()
        takes = None if any(p.kind == p.VAR_POSITIONAL for p in params) else len(
            [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])
    except (TypeError, ValueError):   # a builtin without a signature: give it everything
        takes = None

    @functools.wraps(fn)
    def slot(*args):
        try:
            return fn(*(args if takes is None else args[:takes]))
        except Exception as exc:
            log.exception("Paintbridge: %s failed", getattr(fn, "__name__", fn))
            controller().message.emit(f"Paintbridge: something went wrong: {type(exc).__name__}: {exc}")
    return slot


def _tag(d: dict) -> dict:
    tag = d.get("tag")
    return tag if isinstance(tag, dict) else {}


_CONTROLLER: Controller | None = None


def controller() -> Controller:
    global _CONTROLLER
    if _CONTROLLER is None:
        _CONTROLLER = Controller()
    return _CONTROLLER

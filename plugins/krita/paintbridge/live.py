"""Live mode in Krita: the canvas re-generated as the person paints (protocol.live.LiveController does the when
and what; this file is the Krita side of it). No widgets here (live_panel.py draws it).

Watching the canvas without polling pixels: Krita's scripting API has no "image changed" signal, so we listen
for what ends a change instead - an event filter on Krita's canvas widgets sees the mouse/tablet button release
that ends every brush stroke (and key releases: fill and clear shortcuts), and the Undo/Redo actions' triggered
signals. Each only marks the canvas dirty (a few Python calls, no pixel access); pixels are copied once per sent
request (Krita's own pixelData copy on the main thread, converted on the Session's worker). A release that
changed nothing (a pan, a click on a layer) costs an upload check: the engine starts nothing for identical
inputs. Plug-ins and scripts that change pixels through the API call `changed()` themselves.
"""

from __future__ import annotations

import logging
import random

from krita import Krita
from PyQt5.QtCore import QEvent, QObject, pyqtSignal
from PyQt5.QtWidgets import QMdiArea, QWidget

from ._vendor.protocol import generate
from ._vendor.protocol.live import LiveController

from . import host

log = logging.getLogger("paintbridge")
CANVAS_CLASSES = ("KisOpenGLCanvas2", "KisQPainterCanvas")
STROKE_ENDS = (QEvent.MouseButtonRelease, QEvent.TabletRelease, QEvent.KeyRelease)
PRESETS = [("", "None (the model's own sampling)"), ("lcm", "LCM"), ("hyper-sd", "Hyper-SD"),
           ("lightning", "Lightning (SDXL)"), ("turbo", "Turbo")]


class KritaLive(QObject):
    changed_state = pyqtSignal()     # state, busy, progress or the newest result changed: redraw the Live tab

    def __init__(self, ctl):
        super().__init__()
        self.ctl = ctl
        self.prompt = ""
        self.strength = 0.3
        self.preset = ""
        self.preempt = False
        self.seed = random.randrange(generate.SEED_MAX - 64)   # one seed while live: same canvas, same image
        self.doc = None
        self.live = LiveController(ctl.session, self._read)
        self._watched: list = []
        self._actions = []
        self.changes_seen = 0   # change notifications (tests print it)

    # ---- controls ---------------------------------------------------------------------------------------
    def start(self):
        try:
            self.doc = host.active_document()
        except host.CanvasError as exc:
            self.ctl.message.emit(str(exc))
            return
        self._watch()
        self.live.start()
        self.changed_state.emit()

    def stop(self):
        self.live.stop()
        self._unwatch()
        self.changed_state.emit()

    def set_settings(self, prompt: str, strength: float, preset: str, preempt: bool = False):
        if (prompt, strength, preset, preempt) == (self.prompt, self.strength, self.preset, self.preempt):
            return
        self.prompt, self.strength, self.preset, self.preempt = prompt, strength, preset, preempt
        self.live.preempt = preempt
        self.live.settings_changed()
        self.changed_state.emit()

    def changed(self):
        """The canvas changed (also for callers that change pixels through the API)."""
        self.changes_seen += 1
        self.live.changed()

    def apply(self) -> bool:
        """The newest live result into the document as a new layer (one undo step); it is also kept in the
        gallery (images.keep)."""
        if not self.live.result:
            return False
        doc = self.doc if self.doc is not None and host.is_open(self.doc) else host.active_document()
        layer = self.live.result[0]
        host.add_result_layer(doc, f"Live: {self.prompt[:40] or 'untitled'}", layer.pixels)
        if self.live.result_job:
            self.ctl.session.call("images.keep", {"job": self.live.result_job}, tag={"keep": True})
        return True

    # ---- from the controller's timer ----------------------------------------------------------------------
    def handle(self, up) -> bool:
        if self.live.handle(up):
            self.changed_state.emit()
            return True
        return False

    def tick(self):
        if self.live.tick():
            self.changed_state.emit()

    # ---- the request ----------------------------------------------------------------------------------------
    def _read(self):
        doc = self.doc
        if doc is None or not host.is_open(doc):
            raise ValueError("the document live mode was watching is closed")
        x, y, w, h = host.request_region(doc, "img2img")
        values = {"model": self.ctl.form.model, "prompt": self.prompt, "negative_prompt": "",
                  "strength": self.strength, "seed": self.seed}
        # the document's regions that touch the canvas area sent (their masks read on the worker thread)
        regions = self.ctl.steering.request(doc, "img2img", (x, y, w, h), sent=[])["regions"]
        params = generate.generate_args("img2img", values, limits=self.ctl.session.limits, regions=regions,
                                        source={"app": "krita", "document": host.document_key(doc)})
        params.pop("steps", None)   # the preset's (or the engine's) unless the person sets them elsewhere
        if self.preset:
            params["preset"] = self.preset
        return params, host.snapshot(doc, x, y, w, h, "composite"), None

    # ---- watching -----------------------------------------------------------------------------------------
    def _watch(self):
        self._unwatch()
        app = Krita.instance()
        window = app.activeWindow()
        mdi = window.qwindow().findChild(QMdiArea) if window is not None else None
        # the views' widgets only (a walk over the whole window wraps thousands of widgets: a visible stall)
        for sub in mdi.subWindowList() if mdi is not None else ():
            for w in sub.findChildren(QWidget):
                if w.metaObject().className() in CANVAS_CLASSES:
                    w.installEventFilter(self)
                    self._watched.append(w)
        for name in ("edit_undo", "edit_redo"):
            action = app.action(name)
            if action is not None:
                action.triggered.connect(self.changed)
                self._actions.append(action)

    def _unwatch(self):
        for w in self._watched:
            try:
                w.removeEventFilter(self)
            except RuntimeError:   # the view was closed
                pass
        for action in self._actions:
            try:
                action.triggered.disconnect(self.changed)
            except (RuntimeError, TypeError):
                pass
        self._watched, self._actions = [], []

    def eventFilter(self, obj, event):
        if event.type() in STROKE_ENDS:
            self.changed()
        return False

"""Live painting in GIMP: the image re-generated (img2img at a low strength) while the person paints.
protocol.live.LiveController decides when to send and what to show; this file is GIMP's side of it. No widgets
here (panels.LiveWindow draws it).

What GIMP's plug-in model allows. A plug-in is a separate process that GIMP starts for one procedure call, and
libgimp 3.0 tells it nothing when an image changes: there is no image-changed signal, and Gimp.Image.is_dirty() is
one flag that stays set until a save. So Filters > Paintbridge > Live… is a procedure that does not return while
live mode is wanted: it keeps its process, its engine session and a window of its own open (not modal: GIMP stays
fully usable, the person keeps painting), and notices changes by comparing a cheap marker every WATCH_S seconds:
the layer structure (ids, visibility, opacity, offsets, sizes) and a THUMB-pixel thumbnail of the image, which
GIMP's core renders from its projection (the kind of preview the Layers dialog shows: 48 KB over the plug-in pipe).
Measured (tests/hosts/test_gimp.py prints it; a busy 2-core machine): under 1 ms a comparison while nothing
changes, 1-12 ms after a change on 1024x1024 and 4000x3000 images (GIMP brings its projection up to date, which
its display does anyway), so painting does not stutter because of it. A change that alters no
thumbnail pixel (a stroke much thinner than IMAGE/THUMB pixels) is missed until the next visible one; the
engine starts nothing for an unchanged canvas anyway. The canvas itself (Gimp.Layer.new_from_visible) is read only
when a request goes out, once per burst of changes; hashing and uploading run on the Session's worker thread.

Apply puts the newest result into the image as a layer (one undo group) and keeps it in the gallery
(images.keep). Stop cancels every live job still queued or running; closing the window stops too and waits (a few
seconds at most) until the engine has ended them, so nothing of live mode is left on the engine.
"""

from __future__ import annotations

import hashlib
import random
import time

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp  # noqa: E402

import host  # noqa: E402
from controller import Failure  # noqa: E402
from protocol import generate  # noqa: E402
from protocol.live import LiveController  # noqa: E402

WATCH_S = 0.4     # how often the marker is compared
THUMB = 128       # the marker thumbnail's longest side
PRESETS = ["", "lcm", "hyper-sd", "lightning", "turbo"]   # SPEC §7 presets ("": the model's own sampling)


class GimpLive:
    def __init__(self, ctl, image, model: str, prompt: str = "", strength: float = 0.3, preset: str = "",
                 clock=time.monotonic):
        self.ctl, self.image, self.model = ctl, image, model
        self.prompt, self.strength, self.preset = prompt, float(strength), preset
        self.seed = random.randrange(generate.SEED_MAX - 64)   # one seed while live: same canvas, same image
        self.clock = clock
        self.live = LiveController(ctl.session, self._read)
        self.changes_seen = 0        # marker changes noticed (tests print it)
        self.marker_s: list[float] = []   # seconds each marker comparison took (tests and the README figure)
        self.applied: list = []      # layers Apply placed
        self._marker = None
        self._next_watch = 0.0

    # ---- what the window calls (GIMP's main thread of this plug-in process) ---------------------------------------
    def start(self):
        if not self.image.is_valid():
            raise Failure("Paintbridge: the image live mode was started on is closed")
        self._marker = self.marker()
        self.live.start()

    def stop(self):
        self.live.stop()

    def set_settings(self, prompt: str, strength: float, preset: str, model: str | None = None):
        model = model or self.model
        if (prompt, float(strength), preset, model) == (self.prompt, self.strength, self.preset, self.model):
            return
        self.prompt, self.strength, self.preset, self.model = prompt, float(strength), preset, model
        self.live.settings_changed()

    def step(self) -> bool:
        """From the window's timer: drain the session, notice canvas changes, send when due. True when the window
        should redraw (a live update came, or a request went out)."""
        redraw = False
        for up in self.ctl.session.poll():
            redraw = self.live.handle(up) or redraw
        now = self.clock()
        if self.live.on and now >= self._next_watch:
            self._next_watch = now + WATCH_S
            self.watch()
        return self.live.tick() or redraw

    def watch(self) -> bool:
        """Compare the marker with the last one; a difference marks the canvas changed."""
        if not self.image.is_valid():
            return False
        t0 = time.perf_counter()
        marker = self.marker()
        self.marker_s.append(time.perf_counter() - t0)
        if marker == self._marker:
            return False
        self._marker = marker
        self.changes_seen += 1
        self.live.changed()
        return True

    def marker(self) -> tuple:
        """Cheap state that changes when the visible image does: layer structure and a small thumbnail's hash."""
        layers = tuple((lay.get_id(), lay.get_visible(), round(lay.get_opacity(), 3), *host.drawable_rect(lay).as_tuple())
                       for lay in host.layers_bottom_first(self.image))
        data, w, h, bpp = self.image.get_thumbnail_data(THUMB, THUMB)
        thumb = hashlib.sha256(bytes(data.get_data())).hexdigest()
        return self.image.get_width(), self.image.get_height(), layers, thumb

    def settle(self, timeout: float = 10.0) -> bool:
        """After stop(): drain until the engine has ended every live job (canceled or finished). True when none is
        left."""
        deadline = self.clock() + timeout
        while self.live.busy and self.clock() < deadline:
            for up in self.ctl.session.poll():
                self.live.handle(up)
            time.sleep(0.03)
        return not self.live.busy

    def apply(self) -> list:
        """The newest result into the image as a new layer (one undo group), kept in the gallery too."""
        if not self.live.result or not self.image.is_valid():
            return []
        name = f"Paintbridge live: {self.prompt[:40] or 'untitled'}"
        placed = host.place(self.image, self.live.result[:1], name)
        Gimp.displays_flush()
        if self.live.result_job:
            self.ctl.session.call("images.keep", {"job": self.live.result_job}, tag={"keep": True})
        self.applied += placed
        return placed

    # ---- the request ---------------------------------------------------------------------------------------------
    def _read(self):
        """(params, image, mask) for the canvas now (LiveController calls this when a request is due)."""
        if not self.image.is_valid():
            raise ValueError("the image live mode was watching is closed")
        values = {"model": self.model, "prompt": self.prompt, "negative_prompt": "", "strength": self.strength,
                  "seed": self.seed}
        try:
            params = generate.generate_args("img2img", values, limits=self.ctl.session.limits,
                                            source={"app": "gimp", "document": _document(self.image)},
                                            regions=host.regions(self.image))
        except generate.FieldError as exc:
            raise ValueError(exc.message) from None
        if self.preset:
            params["preset"] = self.preset
        return params, host.read_visible(self.image, host.image_rect(self.image)), None


def _document(image) -> str:
    f = image.get_file()
    path = f.get_path() if f is not None else None
    return path.rsplit("/", 1)[-1] if path else ""

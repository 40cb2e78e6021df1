#!/usr/bin/env python3
"""Paintbridge for GIMP 3: generate, refine, inpaint, outpaint and upscale through a local Paintbridge engine.

Filters > Paintbridge > …  Each procedure is one plug-in process run. Networking, hashing and transfers run on
the shared client's threads (protocol.session.Session); this file only reads pixels from GIMP, spins a GLib
main loop that drains Session.poll() on the main thread, and places results — GIMP is never touched from
another thread.

Layout once installed (see `paintbridge plugin build gimp`):
    plug-ins/paintbridge/paintbridge.py     this file (executable)
    plug-ins/paintbridge/pb_support.py      GIMP-independent helpers
    plug-ins/paintbridge/_vendor/           protocol/ (the shared client), msgpack, websockets
Running from a source checkout also works when the checkout's root (holding protocol/) is three levels up and
msgpack/websockets are importable.
"""

import json
import os
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.join(_HERE, "_vendor"), os.path.normpath(os.path.join(_HERE, "..", "..", ".."))):
    if os.path.isdir(os.path.join(_p, "protocol")) and _p not in sys.path:
        sys.path.insert(0, _p)
        break
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

import pb_support as sup  # noqa: E402
from pb_support import Rect  # noqa: E402

PLUGIN_VERSION = "0.1.0"
MENU = "<Image>/Filters/Paintbridge"
RGBA = "R'G'B'A u8"      # sRGB-encoded 8-bit, straight alpha: the wire's rgba8
GRAY = "Y' u8"
MASK = "Y u8"            # selection coverage, linear: 50 % selected -> 128
RW = GObject.ParamFlags.READWRITE

PROC_GENERATE = "paintbridge-generate"
PROC_REFINE = "paintbridge-refine"
PROC_INPAINT = "paintbridge-inpaint"
PROC_OUTPAINT = "paintbridge-outpaint"
PROC_UPSCALE = "paintbridge-upscale"
PROC_SIGN_IN = "paintbridge-sign-in"
PROC_SETTINGS = "paintbridge-settings"

LABELS = {
    PROC_GENERATE: ("_Generate…", "Generate a new layer from a prompt (in the selection's bounds, if any)"),
    PROC_REFINE: ("_Refine…", "Re-imagine the visible image (or the selection) with a strength"),
    PROC_INPAINT: ("_Inpaint Selection…", "Regenerate the selected area; the result is a new layer"),
    PROC_OUTPAINT: ("_Outpaint…", "Extend the canvas and fill the new (transparent) area"),
    PROC_UPSCALE: ("_Upscale…", "Upscale the visible image into a new image"),
    PROC_SIGN_IN: ("_Sign In…", "Sign in to a Paintbridge engine"),
    PROC_SETTINGS: ("S_ettings…", "Server address, default model, sign out"),
}
COMMON = ["prompt", "negative-prompt", "model", "steps", "guidance", "seed"]
DIALOG_FIELDS = {
    PROC_GENERATE: COMMON + ["batch"],
    PROC_REFINE: COMMON + ["strength"],
    PROC_INPAINT: COMMON + ["strength"],
    PROC_OUTPAINT: COMMON + ["extend-left", "extend-top", "extend-right", "extend-bottom"],
    PROC_UPSCALE: ["scale", "prompt", "model", "steps", "seed"],
    PROC_SIGN_IN: ["server-url", "username", "password", "remember-me"],
    PROC_SETTINGS: ["server-url", "model", "sign-out"],
}


class Failure(Exception):
    def __init__(self, message, status=Gimp.PDBStatusType.EXECUTION_ERROR):
        super().__init__(message)
        self.status = status


def config_dir():
    return os.path.join(Gimp.directory(), "paintbridge")


def load_protocol():
    try:
        import protocol
        from protocol import pixels
        from protocol.session import Session
    except ImportError as exc:
        raise Failure(f"Paintbridge's bundled client is missing or incomplete ({exc}). Reinstall the plug-in "
                      f"built with `paintbridge plugin build gimp`.")
    return protocol, pixels, Session


# ---- pixels in and out of GIMP (main thread only) ---------------------------------------------------------

def image_rect(image):
    return Rect(0, 0, image.get_width(), image.get_height())


def selection_rect(image):
    """Selection bounds in image coordinates, or None when nothing is selected."""
    ok, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    if not ok or not non_empty:
        return None
    return Rect(x1, y1, x2 - x1, y2 - y1)


def read_visible(image, rect, Pixels):
    """The composite of the visible layers inside rect (image coordinates) as wire rgba8 Pixels."""
    vis = Gimp.Layer.new_from_visible(image, image, "paintbridge-visible")
    try:
        buf = vis.get_buffer()
        data = buf.get(Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h), 1.0, RGBA, Gegl.AbyssPolicy.NONE)
    finally:
        vis.delete()
    return Pixels(bytes(data), rect.w, rect.h, "rgba8", rect.x, rect.y)


def read_selection(image, rect, Pixels):
    """The selection channel inside rect as a gray8 mask (255 = generate here)."""
    buf = image.get_selection().get_buffer()
    data = buf.get(Gegl.Rectangle.new(rect.x, rect.y, rect.w, rect.h), 1.0, MASK, Gegl.AbyssPolicy.NONE)
    return Pixels(bytes(data), rect.w, rect.h, "gray8", rect.x, rect.y)


def new_layer(image, name, px, position=0):
    """Insert a layer holding Pixels px at (px.x, px.y). Call inside an undo group."""
    if image.get_base_type() == Gimp.ImageBaseType.GRAY:
        kind = Gimp.ImageType.GRAYA_IMAGE
    else:
        kind = Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(image, name, px.w, px.h, kind, 100.0, Gimp.LayerMode.NORMAL)
    image.insert_layer(layer, None, position)
    layer.set_offsets(px.x, px.y)
    buf = layer.get_buffer()
    buf.set(Gegl.Rectangle.new(0, 0, px.w, px.h), RGBA if px.format == "rgba8" else GRAY, px.data)
    buf.flush()
    layer.update(0, 0, px.w, px.h)
    return layer


def add_selection_mask(layer):
    mask = layer.create_mask(Gimp.AddMaskType.SELECTION)
    layer.add_mask(mask)
    return mask


# ---- running a request: a GLib main loop that drains the session on the main thread --------------------------

class Runner:
    """Owns one Session for one procedure run."""

    def __init__(self, url, token, interactive):
        self.protocol, self.pixels, Session = load_protocol()
        self.settings = sup.load_settings(config_dir())
        self.url = sup.resolve_url(url, self.settings, self.protocol.default_url())
        self.token = token or None
        self.interactive = interactive
        self.session = Session("gimp", f"{Gimp.version()} plugin {PLUGIN_VERSION}", config_dir(), url=self.url)
        self.cancel_requested = False
        self.job = None
        self.dialog = None

    def close(self):
        if self.dialog is not None:
            self.dialog.destroy()
            self.dialog = None
        self.session.close()

    def pump(self, handle, timeout, what):
        """Spin GLib until handle(update) returns True; raises what it raises, or on timeout."""
        loop = GLib.MainLoop()
        outcome = {}
        deadline = time.monotonic() + timeout

        def tick():
            try:
                if self.cancel_requested and self.job and not outcome.get("cancel_sent"):
                    outcome["cancel_sent"] = True
                    self.session.cancel(self.job)
                for up in self.session.poll():
                    if handle(up):
                        outcome["done"] = True
                        loop.quit()
                        return False
                if time.monotonic() > deadline:
                    raise Failure(f"Paintbridge: {what} timed out after {timeout:.0f}s")
            except BaseException as exc:  # noqa: BLE001 - carried out of the loop and re-raised below
                outcome["error"] = exc
                loop.quit()
                return False
            return True

        GLib.timeout_add(30, tick)
        loop.run()
        if "error" in outcome:
            raise outcome["error"]

    def connect(self, need_models=False):
        self.session.connect(self.url, self.token)
        state = {}

        def handle(up):
            if up.kind == "state":
                s = up.data["state"]
                if s == "connected":
                    state["connected"] = True
                    return not need_models
                if s in ("signed_out", "expired"):
                    raise Failure(f"Not signed in to {self.url}: {up.data.get('message') or s}. "
                                  f"Use Filters > Paintbridge > Sign In first.")
            elif up.kind == "models":
                return state.get("connected", False)
            elif up.kind == "error":
                raise Failure(f"Paintbridge: {up.data.get('message')}")
            return False

        self.pump(handle, 30, f"connecting to {self.url}")

    def generate(self, params, image=None, mask=None, progress_text="Paintbridge"):
        """Submit, follow progress, return the list of ResultLayer."""
        self._progress_start(progress_text)
        rid = self.session.generate(params, image, mask, tag="gimp")
        result = {}

        def handle(up):
            d = up.data
            if up.kind == "job" and d.get("request") == rid:
                self.job = d["job"]
            elif d.get("job") is not None and d.get("job") != self.job:
                return False
            if up.kind == "queued":
                self._progress_text(f"{progress_text}: queued")
            elif up.kind == "started":
                self._progress_text(f"{progress_text}: working")
            elif up.kind == "progress":
                total = d.get("total") or 0
                if total:
                    frac = min(1.0, (d.get("step") or 0) / total)
                    Gimp.progress_update(frac)
                    self._dialog_progress(frac, f"step {d.get('step')} of {total}")
                else:
                    Gimp.progress_pulse()
            elif up.kind == "result":
                result["layers"] = d["layers"]
                return True
            elif up.kind == "failed":
                raise Failure(f"Paintbridge: the job failed: {d.get('message')} ({d.get('code')})")
            elif up.kind == "canceled":
                raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
            elif up.kind == "error" and (d.get("request") in (None, rid)):
                raise Failure(f"Paintbridge: {d.get('message')}")
            elif up.kind == "state" and d.get("state") in ("signed_out", "expired"):
                raise Failure(f"Paintbridge: {d.get('message') or 'signed out'}")
            return False

        try:
            self.pump(handle, sup.timeout_seconds(), "the job")
        finally:
            Gimp.progress_end()
        return result["layers"]

    # progress: GIMP's bar, plus (interactive) a small dialog with a Cancel button that cancels the job
    def _progress_start(self, text):
        Gimp.progress_init(text)
        if self.interactive:
            self._open_cancel_dialog(text)

    def _progress_text(self, text):
        Gimp.progress_set_text(text)
        self._dialog_progress(None, text)

    def _open_cancel_dialog(self, text):
        try:
            gi.require_version("Gtk", "3.0")
            from gi.repository import Gtk
            dialog = Gtk.Dialog(title="Paintbridge")
            dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
            box = dialog.get_content_area()
            box.set_spacing(6)
            box.set_border_width(12)
            self._label = Gtk.Label(label=text)
            self._bar = Gtk.ProgressBar()
            box.pack_start(self._label, False, False, 0)
            box.pack_start(self._bar, False, False, 0)
            dialog.connect("response", self._on_cancel)
            dialog.connect("delete-event", lambda *a: self._on_cancel() or True)
            dialog.show_all()
            self.dialog = dialog
        except Exception:  # no display: GIMP's own progress bar still works
            self.dialog = None

    def _dialog_progress(self, frac, text):
        if self.dialog is None:
            return
        if frac is not None:
            self._bar.set_fraction(frac)
        if text:
            self._label.set_text(text)

    def _on_cancel(self, *args):
        self.cancel_requested = True
        if self.dialog is not None:
            self._label.set_text("Canceling…")


# ---- procedures ----------------------------------------------------------------------------------------------

def add_common_args(p, default_strength=None):
    p.add_string_argument("prompt", "_Prompt", "What to paint", "", RW)
    p.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid", "", RW)
    p.add_string_argument("model", "_Model", "Model name (empty: the engine's default)", "", RW)
    p.add_int_argument("steps", "Steps", "Sampling steps (0: model default)", 0, 500, 0, RW)
    p.add_double_argument("guidance", "_Guidance", "Guidance scale (0: model default)", 0.0, 50.0, 0.0, RW)
    p.add_int_argument("seed", "S_eed", "Seed (-1: random)", -1, 2**31 - 1, -1, RW)
    if default_strength is not None:
        p.add_double_argument("strength", "Streng_th", "How much to change (0..1)", 0.0, 1.0, default_strength, RW)
    add_connection_args(p)


def add_connection_args(p):
    # For scripts and tests; the dialogs don't show them (the Sign In/Settings procedures set them up).
    p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws (empty: from settings)", "", RW)
    p.add_string_argument("token", "Token", "Access token (empty: the stored sign-in)", "", RW)


class Paintbridge(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_GENERATE, PROC_REFINE, PROC_INPAINT, PROC_OUTPAINT, PROC_UPSCALE, PROC_SIGN_IN,
                PROC_SETTINGS]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        p = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        label, blurb = LABELS[name]
        p.set_menu_label(label)
        p.add_menu_path(MENU)
        p.set_documentation(blurb, blurb + ". Needs a running Paintbridge engine.", name)
        p.set_attribution("Paintbridge", "Paintbridge", "2025")
        if name in (PROC_SIGN_IN, PROC_SETTINGS):
            p.set_image_types("")
            p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.ALWAYS)
        else:
            p.set_image_types("RGB*, GRAY*")
            p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
                                   | Gimp.ProcedureSensitivityMask.NO_DRAWABLES)
        if name == PROC_GENERATE:
            add_common_args(p)
            p.add_int_argument("batch", "_Batch", "How many layers", 1, 16, 1, RW)
        elif name == PROC_REFINE:
            add_common_args(p, 0.5)
        elif name == PROC_INPAINT:
            add_common_args(p, 1.0)
        elif name == PROC_OUTPAINT:
            add_common_args(p)
            for side in ("left", "top", "right", "bottom"):
                p.add_int_argument(f"extend-{side}", f"Extend {side}", f"Pixels to add on the {side}",
                                   0, 4096, 0, RW)
        elif name == PROC_UPSCALE:
            add_common_args(p)
            p.add_int_argument("scale", "Sc_ale", "Upscale factor", 2, 4, 2, RW)
        elif name == PROC_SIGN_IN:
            p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws", "", RW)
            p.add_string_argument("username", "User _name", "", "", RW)
            p.add_string_argument("password", "_Password", "", "", RW)
            p.add_boolean_argument("remember-me", "Re_member me", "Keep me signed in", True, RW)
        elif name == PROC_SETTINGS:
            p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws", "", RW)
            p.add_string_argument("model", "Default _model", "Empty: the engine's default", "", RW)
            p.add_boolean_argument("sign-out", "Si_gn out", "Forget the stored sign-in for this server", False, RW)
        p.add_string_return_value("result", "Result", "JSON: job, layers placed, new image", "", RW)
        return p

    # -- entry point --
    def run(self, procedure, run_mode, image, drawables, config, run_data):
        name = procedure.get_name()
        interactive = run_mode == Gimp.RunMode.INTERACTIVE
        try:
            if interactive and not self._dialog(procedure, config, name):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            handler = {
                PROC_GENERATE: run_generate, PROC_REFINE: run_refine, PROC_INPAINT: run_inpaint,
                PROC_OUTPAINT: run_outpaint, PROC_UPSCALE: run_upscale, PROC_SIGN_IN: run_sign_in,
                PROC_SETTINGS: run_settings,
            }[name]
            result = handler(image, config, interactive)
        except Failure as exc:
            return self._fail(procedure, exc.status, str(exc), interactive)
        except Exception as exc:  # a bug: say what happened instead of a bare traceback
            return self._fail(procedure, Gimp.PDBStatusType.EXECUTION_ERROR,
                              f"Paintbridge: {type(exc).__name__}: {exc}", interactive)
        finally:
            # GIMP writes every argument's last value to plug-in-settings/*.last (not a private file): never
            # let a password or a token end up there.
            for secret in ("password", "token"):
                if config.find_property(secret) is not None:
                    config.set_property(secret, "")
        Gimp.displays_flush()
        rv = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)
        rv.insert(1, GObject.Value(GObject.TYPE_STRING, json.dumps(result)))
        return rv

    @staticmethod
    def _fail(procedure, status, message, interactive):
        if interactive and status != Gimp.PDBStatusType.CANCEL:
            Gimp.message(message)
        sys.stderr.write(message + "\n")
        err = GLib.Error(message) if status != Gimp.PDBStatusType.CANCEL else None
        return procedure.new_return_values(status, err)

    @staticmethod
    def _dialog(procedure, config, name):
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi
        GimpUi.init("paintbridge")
        dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title="Paintbridge")
        dialog.fill(DIALOG_FIELDS[name])
        if name == PROC_SIGN_IN:
            widget = dialog.get_widget("password", GObject.TYPE_NONE)
            entry = widget.get_entry() if hasattr(widget, "get_entry") else widget
            if hasattr(entry, "set_visibility"):
                entry.set_visibility(False)
        ok = dialog.run()
        dialog.destroy()
        return ok


def _text(config, name):
    """A string argument: GIMP hands an empty string argument back as None."""
    return config.get_property(name) or ""


def _runner(config, interactive, need_models=True):
    # server-url/token arguments are for scripts; interactive runs use Settings and the stored sign-in (GIMP
    # would otherwise refill them from the last run's values).
    if interactive:
        runner = Runner("", "", interactive)
    else:
        runner = Runner(_text(config, "server-url"), _text(config, "token"), interactive)
    try:
        runner.connect(need_models=need_models)
    except BaseException:
        runner.close()
        raise
    return runner


def _params(runner, config, mode, **kw):
    model = sup.pick_model(_text(config, "model"), runner.settings, runner.session.models)
    if not model and mode != "upscale":
        raise Failure("Paintbridge: the engine offers no model; add one on the engine first")
    return sup.generate_params(
        mode, model, prompt=_text(config, "prompt"), negative_prompt=_text(config, "negative-prompt"),
        steps=config.get_property("steps"), guidance=config.get_property("guidance"),
        seed=config.get_property("seed"), **kw)


def _describe(layer):
    ok, x, y = layer.get_offsets()
    return {"id": layer.get_id(), "name": layer.get_name(), "x": x, "y": y,
            "w": layer.get_width(), "h": layer.get_height()}


def _place(image, results, name, clip=None, selection_mask=False):
    """New layers for each result, inside one undo group. Result x/y are document coordinates (the sender's).
    clip crops each result (to the selection: nothing outside it changes)."""
    placed = []
    image.undo_group_start()
    try:
        for i, res in enumerate(results):
            px = res.pixels
            if clip is not None:
                px = _crop(px, clip)
                if px is None:
                    continue
            label = f"{name}: {res.name}" if res.name else name   # the engine's name carries prompt and seed
            layer = new_layer(image, label, px)
            if selection_mask:
                add_selection_mask(layer)
            placed.append(_describe(layer))
    finally:
        image.undo_group_end()
    return placed


def _crop(px, clip):
    from protocol.pixels import BPP, Pixels, crop
    r = Rect(px.x, px.y, px.w, px.h).intersect(clip)
    if r.empty:
        return None
    if r == Rect(px.x, px.y, px.w, px.h):
        return px
    data = crop(px.data, px.w, px.h, BPP[px.format], r.x - px.x, r.y - px.y, r.w, r.h)
    return Pixels(data, r.w, r.h, px.format, r.x, r.y)


def run_generate(image, config, interactive):
    runner = _runner(config, interactive)
    try:
        region = selection_rect(image) or image_rect(image)
        # generated at the region's size rounded up to a multiple of 8, placed at its corner, clipped to it
        params = _params(runner, config, "txt2img", width=region.w, height=region.h,
                         batch=config.get_property("batch"), extra={"x": region.x, "y": region.y})
        results = runner.generate(params, progress_text="Paintbridge: generating")
        return {"job": runner.job, "layers": _place(image, results, "Paintbridge", clip=region)}
    finally:
        runner.close()


def run_refine(image, config, interactive):
    runner = _runner(config, interactive)
    try:
        Pixels = runner.pixels.Pixels
        sel = selection_rect(image)
        region = sel or image_rect(image)
        src = read_visible(image, region, Pixels)
        params = _params(runner, config, "img2img", strength=config.get_property("strength"))
        results = runner.generate(params, image=src, progress_text="Paintbridge: refining")
        return {"job": runner.job, "layers": _place(image, results, "Paintbridge refine", clip=region,
                                                    selection_mask=sel is not None)}
    finally:
        runner.close()


def run_inpaint(image, config, interactive):
    sel = selection_rect(image)
    if sel is None:
        raise Failure("Paintbridge: select the area to inpaint first")
    runner = _runner(config, interactive)
    try:
        Pixels = runner.pixels.Pixels
        region = sup.context_region(sel, image_rect(image))
        src = read_visible(image, region, Pixels)
        mask = read_selection(image, region, Pixels)
        params = _params(runner, config, "inpaint", strength=config.get_property("strength"))
        results = runner.generate(params, image=src, mask=mask, progress_text="Paintbridge: inpainting")
        return {"job": runner.job, "region": region.as_tuple(), "selection": sel.as_tuple(),
                "layers": _place(image, results, "Paintbridge inpaint", clip=sel, selection_mask=True)}
    finally:
        runner.close()


def run_outpaint(image, config, interactive):
    ext = [config.get_property(f"extend-{s}") for s in ("left", "top", "right", "bottom")]
    runner = _runner(config, interactive)
    try:
        if any(ext):
            left, top, right, bottom = ext
            image.undo_group_start()
            try:
                image.resize(image.get_width() + left + right, image.get_height() + top + bottom, left, top)
            finally:
                image.undo_group_end()
        whole = image_rect(image)
        Pixels = runner.pixels.Pixels
        src = read_visible(image, whole, Pixels)
        mask = Pixels(runner.pixels.mask_from_transparency(src.data), whole.w, whole.h, "gray8")
        if runner.pixels.mask_bounds(mask.data, whole.w, whole.h) is None:
            raise Failure("Paintbridge: nothing to outpaint: extend the canvas (or leave a transparent area)")
        params = _params(runner, config, "outpaint")   # the engine takes the mask from the alpha itself
        results = runner.generate(params, image=src, progress_text="Paintbridge: outpainting")
        return {"job": runner.job, "layers": _place(image, results, "Paintbridge outpaint", clip=whole)}
    finally:
        runner.close()


def run_upscale(image, config, interactive):
    runner = _runner(config, interactive)
    try:
        scale = config.get_property("scale")
        whole = image_rect(image)
        src = read_visible(image, whole, runner.pixels.Pixels)
        params = _params(runner, config, "upscale", extra={"scale": scale})
        results = runner.generate(params, image=src, progress_text="Paintbridge: upscaling")
        if not results:
            raise Failure("Paintbridge: the engine returned no layer")
        first = results[0].pixels
        new = Gimp.Image.new(first.w, first.h, Gimp.ImageBaseType.RGB)
        new.undo_disable()
        for res in results:
            res.pixels.x = res.pixels.y = 0   # a new document: place at its origin
        layers = _place(new, results, "Paintbridge upscale")
        new.undo_enable()
        if interactive:
            Gimp.Display.new(new)
        return {"job": runner.job, "image": new.get_id(), "layers": layers}
    finally:
        runner.close()


def run_sign_in(image, config, interactive):
    protocol, _, Session = load_protocol()
    settings = sup.load_settings(config_dir())
    url = sup.resolve_url(_text(config, "server-url"), settings, protocol.default_url())
    username = _text(config, "username")
    if not username:
        raise Failure("Paintbridge: enter a user name")
    runner = Runner(url, None, interactive)
    try:
        runner.session.login(username, _text(config, "password"), config.get_property("remember-me"), url=url)
        user = {}

        def handle(up):
            if up.kind == "signed_in":
                user["user"] = up.data.get("user")
                return True
            if up.kind == "error":
                raise Failure(f"Paintbridge: sign-in failed: {up.data.get('message')}")
            if up.kind == "state" and up.data.get("state") == "disconnected" and up.data.get("message"):
                raise Failure(f"Paintbridge: {up.data['message']}")
            return False

        runner.pump(handle, 30, "signing in")
    finally:
        runner.close()
    settings["url"] = url
    sup.save_settings(config_dir(), settings)
    if interactive:
        Gimp.message(f"Paintbridge: signed in to {url}")
    return {"url": url, "user": user.get("user")}


def run_settings(image, config, interactive):
    protocol, _, Session = load_protocol()
    settings = sup.load_settings(config_dir())
    url = sup.resolve_url(_text(config, "server-url"), settings, protocol.default_url())
    settings["url"] = url
    settings["model"] = _text(config, "model") or ""
    sup.save_settings(config_dir(), settings)
    if config.get_property("sign-out"):
        from protocol.tokens import TokenStore
        TokenStore(config_dir()).delete(url)
    return {"url": url, "model": settings["model"], "signed_out": bool(config.get_property("sign-out"))}


if __name__ == "__main__":
    Gimp.main(Paintbridge.__gtype__, sys.argv)

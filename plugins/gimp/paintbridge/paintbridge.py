#!/usr/bin/env python3
"""Paintbridge for GIMP 3: generate, refine, inpaint, outpaint and upscale through a local Paintbridge engine; open
images from the gallery and run saved workflows.

Filters > Paintbridge > …  Each procedure is one plug-in process run. Networking, hashing and transfers run on
the shared client's threads (protocol.session.Session); this file only reads pixels from GIMP, spins a GLib
main loop that drains Session.poll() on the main thread, and places results — GIMP is never touched from
another thread.

Layout once installed (see `paintbridge plugin build gimp`):
    plug-ins/paintbridge/paintbridge.py     this file (executable)
    plug-ins/paintbridge/pb_support.py      GIMP-independent helpers
    plug-ins/paintbridge/pb_gallery.py      gallery browser state, "Use settings" (GIMP-independent)
    plug-ins/paintbridge/pb_workflow.py     workflow form widget specs, value checks (GIMP-independent)
    plug-ins/paintbridge/_vendor/           protocol/ (the shared client), msgpack, websockets; site/ keyring
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
_SITE = os.path.join(_HERE, "_vendor", "site")   # keyring and its helpers: last, so a system copy wins
if os.path.isdir(_SITE) and _SITE not in sys.path:
    sys.path.append(_SITE)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

import pb_gallery  # noqa: E402
import pb_support as sup  # noqa: E402
from protocol import forms  # noqa: E402
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
PROC_GALLERY = "paintbridge-gallery"
PROC_WORKFLOW = "paintbridge-workflow"

LABELS = {
    PROC_GENERATE: ("_Generate…", "Generate a new layer from a prompt (in the selection's bounds, if any)"),
    PROC_REFINE: ("_Refine…", "Re-imagine the visible image (or the selection) with a strength"),
    PROC_INPAINT: ("_Inpaint Selection…", "Regenerate the selected area; the result is a new layer"),
    PROC_OUTPAINT: ("_Outpaint…", "Extend the canvas and fill the new (transparent) area"),
    PROC_UPSCALE: ("_Upscale…", "Upscale the visible image into a new image"),
    PROC_SIGN_IN: ("_Sign In…", "Sign in to a Paintbridge engine"),
    PROC_SETTINGS: ("S_ettings…", "Server address, default model, sign out"),
    PROC_GALLERY: ("Open from _Gallery…", "Browse your Paintbridge images: insert one as a layer, reuse its settings, "
                                          "star it"),
    PROC_WORKFLOW: ("Run _Workflow…", "Run one of your saved Paintbridge workflows; its results become layers"),
}
COMMON = ["prompt", "negative-prompt", "model", "lora", "lora-weight", "steps", "guidance", "seed"]
DIALOG_FIELDS = {
    PROC_GENERATE: COMMON + ["batch"],
    PROC_REFINE: COMMON + ["strength"],
    PROC_INPAINT: COMMON + ["strength"],
    PROC_OUTPAINT: COMMON + ["extend-left", "extend-top", "extend-right", "extend-bottom"],
    PROC_UPSCALE: ["scale", "upscaler"],
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
        return self._follow(rid, progress_text)

    def run_workflow(self, name, values, progress_text="Paintbridge"):
        """Queue a saved workflow (values checked by pb_workflow.prepare), follow it, return its ResultLayers."""
        self._progress_start(progress_text)
        rid = self.session.run_workflow(name, values, tag="gimp")
        return self._follow(rid, progress_text)

    def wait_for(self, kind, what, timeout=60, pred=lambda d: True):
        """Pump until an update of `kind` (matching pred) arrives; an error update fails with its message."""
        got = {}

        def handle(up):
            if up.kind == kind and pred(up.data):
                got["data"] = up.data
                return True
            if up.kind == "error":
                raise Failure(f"Paintbridge: {what}: {up.data.get('message')}")
            if up.kind == "state" and up.data.get("state") in ("signed_out", "expired"):
                raise Failure(f"Paintbridge: {up.data.get('message') or 'signed out'}")
            return False

        self.pump(handle, timeout, what)
        return got["data"]

    def _follow(self, rid, progress_text):
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
                    self._dialog_preview(d.get("preview"))
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
            gi.require_version("GdkPixbuf", "2.0")
            from gi.repository import GdkPixbuf, Gtk
            self._GdkPixbuf = GdkPixbuf
            dialog = Gtk.Dialog(title="Paintbridge")
            dialog.add_button("_Cancel", Gtk.ResponseType.CANCEL)
            box = dialog.get_content_area()
            box.set_spacing(6)
            box.set_border_width(12)
            self._label = Gtk.Label(label=text)
            self._bar = Gtk.ProgressBar()
            self._preview = Gtk.Image()   # the job's live preview, once steps report one
            box.pack_start(self._label, False, False, 0)
            box.pack_start(self._bar, False, False, 0)
            box.pack_start(self._preview, False, False, 0)
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

    def _dialog_preview(self, px):
        """Show a step's preview (RGBA Pixels, at most 256 px) in the progress dialog, 192 px on its long side."""
        if self.dialog is not None and px is not None:
            self._preview.set_from_pixbuf(pixbuf(self._GdkPixbuf, px, fit=192))

    def _on_cancel(self, *args):
        self.cancel_requested = True
        if self.dialog is not None:
            self._label.set_text("Canceling…")


def pixbuf(GdkPixbuf, px, fit=None):
    """An RGBA Pixels as a GdkPixbuf (None for None), scaled down to fit a fit×fit box when given."""
    if px is None:
        return None
    pix = GdkPixbuf.Pixbuf.new_from_bytes(GLib.Bytes.new(px.data), GdkPixbuf.Colorspace.RGB, True, 8,
                                          px.w, px.h, px.w * 4)
    if fit and max(px.w, px.h) != fit:
        s = fit / max(px.w, px.h)
        pix = pix.scale_simple(max(1, round(px.w * s)), max(1, round(px.h * s)), GdkPixbuf.InterpType.BILINEAR)
    return pix


# ---- procedures ----------------------------------------------------------------------------------------------

def add_common_args(p, default_strength=None):
    p.add_string_argument("prompt", "_Prompt", "What to paint", "", RW)
    p.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid", "", RW)
    p.add_string_argument("model", "_Model", "Model name (empty: the engine's default)", "", RW)
    p.add_string_argument("lora", "_LoRA", "A LoRA on the engine to apply (empty: none)", "", RW)
    p.add_double_argument("lora-weight", "LoRA _weight", "How strongly the LoRA applies", -2.0, 2.0, 0.8, RW)
    p.add_int_argument("steps", "Steps", "Sampling steps (0: model default)", 0, sup.STEPS_MAX, 0, RW)
    p.add_double_argument("guidance", "_Guidance", "Guidance scale (0: model default)", 0.0, sup.GUIDANCE_MAX,
                          0.0, RW)
    p.add_int_argument("seed", "S_eed", "Seed (-1: random)", -1, sup.SEED_MAX, -1, RW)
    if default_strength is not None:
        p.add_double_argument("strength", "Streng_th", "How much to change (0..1)", 0.0, 1.0, default_strength, RW)
    add_connection_args(p)


def add_connection_args(p):
    # For scripts and tests; the dialogs don't show them (the Sign In/Settings procedures set them up).
    p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws (empty: from settings)", "", RW)
    p.add_string_argument("token", "Token", "Access token (empty: the stored sign-in)", "", RW)


class Paintbridge(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_GENERATE, PROC_REFINE, PROC_INPAINT, PROC_OUTPAINT, PROC_UPSCALE, PROC_GALLERY,
                PROC_WORKFLOW, PROC_SIGN_IN, PROC_SETTINGS]

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
            p.add_int_argument("batch", "_Batch", "How many layers", 1, sup.BATCH_MAX, 1, RW)
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
            p.add_string_argument("upscaler", "_Upscaler", "Upscaler model on the engine (empty: a plain resize)",
                                  "", RW)
        elif name == PROC_GALLERY:
            p.add_string_argument("image-id", "Image ID", "Gallery image to insert as a layer (empty: your newest)",
                                  "", RW)
            add_connection_args(p)
        elif name == PROC_WORKFLOW:
            p.add_string_argument("workflow", "Workflow", "Name of one of your saved workflows", "", RW)
            p.add_string_argument("values", "Values", 'JSON object of parameter values; image parameters take '
                                  '"active" (the active layer), mask parameters "selection"', "{}", RW)
            add_connection_args(p)
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
            # Gallery and Run workflow build their own dialogs (they need the engine's lists first)
            if interactive and name in DIALOG_FIELDS and not self._dialog(procedure, config, name):
                return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, None)
            handler = {
                PROC_GENERATE: run_generate, PROC_REFINE: run_refine, PROC_INPAINT: run_inpaint,
                PROC_OUTPAINT: run_outpaint, PROC_UPSCALE: run_upscale, PROC_SIGN_IN: run_sign_in,
                PROC_SETTINGS: run_settings, PROC_GALLERY: run_gallery,
                PROC_WORKFLOW: lambda im, cfg, inter: run_workflow(im, drawables, cfg, inter),
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
        # "Use settings" in the gallery: recalled values replace GIMP's last values once (see pb_gallery)
        recalled = {}
        if name in pb_gallery.RECALL_PROCS:
            recalled = pb_gallery.pending_recall(config_dir(), name, [a.name for a in procedure.get_arguments()])
            for prop, value in recalled.items():
                config.set_property(prop, value)
        dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title="Paintbridge")
        dialog.fill(DIALOG_FIELDS[name])
        if name == PROC_SIGN_IN:
            widget = dialog.get_widget("password", GObject.TYPE_NONE)
            entry = widget.get_entry() if hasattr(widget, "get_entry") else widget
            if hasattr(entry, "set_visibility"):
                entry.set_visibility(False)
        ok = dialog.run()
        dialog.destroy()
        if ok and recalled:
            pb_gallery.recall_used(config_dir(), name)
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
    if mode != "upscale":
        try:
            lora = forms.offered("LoRA", _text(config, "lora"), runner.session.loras, "none")
        except ValueError as exc:
            raise Failure(f"Paintbridge: {exc}", Gimp.PDBStatusType.CALLING_ERROR) from None
        kw["extra"] = {**(kw.get("extra") or {}),
                       "loras": forms.loras_arg(lora, config.get_property("lora-weight"))}
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
        try:
            upscaler = forms.offered("upscaler", _text(config, "upscaler"), runner.session.upscalers,
                                     "a plain resize")
        except ValueError as exc:
            raise Failure(f"Paintbridge: {exc}", Gimp.PDBStatusType.CALLING_ERROR) from None
        whole = image_rect(image)
        src = read_visible(image, whole, runner.pixels.Pixels)
        extra = {"scale": scale, **({"upscaler": upscaler} if upscaler else {})}
        params = _params(runner, config, "upscale", extra=extra)
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


# ---- Open from gallery ---------------------------------------------------------------------------------------

def _gtk():
    """Gtk for the plug-in's own dialogs (interactive runs only: needs a display)."""
    gi.require_version("GimpUi", "3.0")
    gi.require_version("Gtk", "3.0")
    gi.require_version("GdkPixbuf", "2.0")
    from gi.repository import GdkPixbuf, GimpUi, Gtk
    GimpUi.init("paintbridge")
    return Gtk, GdkPixbuf


def insert_gallery_image(runner, image, image_id, timeout=120):
    """Download a gallery image and insert it as a new layer at its own x, y (one undo group)."""
    runner.session.open_image(image_id, tag=("open", image_id))
    got = runner.wait_for("result", f"opening image {image_id}", timeout,
                          pred=lambda d: d.get("image") == image_id)
    return _place(image, got["layers"], "Paintbridge")


def run_gallery(image, config, interactive):
    if interactive:
        Gtk, GdkPixbuf = _gtk()
    runner = _runner(config, interactive, need_models=False)
    try:
        if interactive:
            return GalleryDialog(runner, image, Gtk, GdkPixbuf).run()
        image_id = _text(config, "image-id").strip()
        if not image_id:
            runner.session.list_images(thumb_size=16, limit=1, tag="newest")
            page = runner.wait_for("images", "listing your gallery", pred=lambda d: d.get("tag") == "newest")
            if not page["images"]:
                raise Failure("Paintbridge: your gallery is empty: nothing to insert")
            image_id = page["images"][0]["id"]
        return {"image_id": image_id, "layers": insert_gallery_image(runner, image, image_id)}
    finally:
        runner.close()


class GalleryDialog:
    """The gallery browser. Runs on GIMP's main thread: requests go through the Session worker, and a GLib
    timeout drains Session.poll() into the view (thumbnails become GdkPixbufs here, never on another thread)."""

    STAR, RECALL, INSERT = 1, 2, 3

    def __init__(self, runner, image, Gtk, GdkPixbuf):
        self.runner, self.image, self.Gtk, self.GdkPixbuf = runner, image, Gtk, GdkPixbuf
        self.browser = pb_gallery.GalleryBrowser(runner.session)
        self.inserted, self.recalled = [], None
        self.loop = None

        d = self.dialog = Gtk.Dialog(title="Paintbridge: Gallery")
        d.set_default_size(760, 580)
        self.star_button = d.add_button("_Star", self.STAR)
        d.add_button("Use se_ttings", self.RECALL)
        d.add_button("_Insert as layer", self.INSERT)
        d.add_button("_Close", Gtk.ResponseType.CLOSE)
        box = d.get_content_area()
        box.set_spacing(6)
        box.set_border_width(8)

        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self.search = Gtk.SearchEntry()
        self.search.set_placeholder_text("Words in the prompt")
        self.search.set_hexpand(True)
        self.search.connect("search-changed", lambda w: self._reload())
        self.starred = Gtk.CheckButton(label="Starred _only", use_underline=True)
        self.starred.connect("toggled", lambda w: self._reload())
        row.pack_start(self.search, True, True, 0)
        row.pack_start(self.starred, False, False, 0)
        box.pack_start(row, False, False, 0)

        # pixbuf, caption, id, tooltip
        self.store = Gtk.ListStore(GdkPixbuf.Pixbuf, str, str, str)
        view = self.view = Gtk.IconView(model=self.store)
        view.set_pixbuf_column(0)
        view.set_text_column(1)
        view.set_tooltip_column(3)
        view.set_item_width(pb_gallery.THUMB_SIZE + 24)
        view.set_selection_mode(Gtk.SelectionMode.SINGLE)
        view.connect("item-activated", lambda v, path: self._insert())
        view.connect("selection-changed", lambda v: self._sensitivity())
        scroll = Gtk.ScrolledWindow()
        scroll.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
        scroll.set_vexpand(True)
        scroll.add(view)
        box.pack_start(scroll, True, True, 0)

        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self.status = Gtk.Label(label="Loading…", xalign=0.0)
        self.status.set_line_wrap(True)
        self.more = Gtk.Button.new_with_mnemonic("Load _more")
        self.more.connect("clicked", lambda b: self.browser.load_more() and self._sensitivity())
        row.pack_start(self.status, True, True, 0)
        row.pack_start(self.more, False, False, 0)
        box.pack_start(row, False, False, 0)
        d.connect("response", self._on_response)

    # -- running --
    def run(self):
        self.browser.reload()
        self.dialog.show_all()
        self._sensitivity()
        self.loop = GLib.MainLoop()
        GLib.timeout_add(40, self._tick)
        self.loop.run()
        self.dialog.destroy()
        return {"inserted": self.inserted, "recalled": self.recalled}

    def _tick(self):
        if self.loop is None or not self.loop.is_running():
            return False
        for up in self.runner.session.poll():
            try:
                self._dispatch(up)
            except Exception as exc:  # keep the dialog alive; say what went wrong
                self._say(f"{type(exc).__name__}: {exc}", error=True)
        return True

    def _on_response(self, dialog, response):
        if response == self.INSERT:
            self._insert()
        elif response == self.RECALL:
            image_id = self._selected()
            if image_id:
                self.runner.session.recall(image_id, tag=("recall", image_id))
                self._say("Fetching its settings…")
        elif response == self.STAR:
            item = self.browser.find(self._selected() or "")
            if item:
                self.runner.session.call("images.star", {"image": item["id"], "starred": not item.get("starred")},
                                         tag=("star", item["id"]))
        else:   # Close, Escape, the window's close button
            self.loop.quit()
        self._sensitivity()

    # -- actions --
    def _selected(self):
        paths = self.view.get_selected_items()
        return self.store[paths[0]][2] if paths else None

    def _insert(self):
        image_id = self._selected()
        if image_id:
            self.runner.session.open_image(image_id, tag=("open", image_id))
            self._say("Downloading…")

    def _reload(self):
        self.store.clear()
        self.browser.reload(query=self.search.get_text(), starred_only=self.starred.get_active())
        self._say(self.browser.status())
        self._sensitivity()

    def _sensitivity(self):
        chosen = self._selected() is not None
        for resp in (self.STAR, self.RECALL, self.INSERT):
            self.dialog.set_response_sensitive(resp, chosen)
        item = self.browser.find(self._selected() or "")
        self.star_button.set_label("Un_star" if item and item.get("starred") else "_Star")
        self.more.set_sensitive(self.browser.has_more and not self.browser.loading)

    def _say(self, text, error=False):
        self.status.set_markup(f'<span foreground="#c01c28">{GLib.markup_escape_text(text)}</span>' if error
                               else GLib.markup_escape_text(text))

    def _pixbuf(self, px):
        return pixbuf(self.GdkPixbuf, px)

    def _dispatch(self, up):
        d = up.data
        tag = d.get("tag")
        if up.kind == "images":
            new = self.browser.accept(d)
            if new is None:
                return
            for it in new:
                self.store.append([self._pixbuf(it.get("thumbnail")), pb_gallery.caption(it), it["id"],
                                   pb_gallery.tooltip(it)])
            self._say(self.browser.status())
        elif up.kind == "result" and isinstance(tag, tuple) and tag[0] == "open":
            if not self.image.is_valid():
                self._say("The image was closed: nothing inserted", error=True)
                return
            placed = _place(self.image, d["layers"], "Paintbridge")
            Gimp.displays_flush()
            self.inserted.extend(placed)
            self._say(f"Inserted “{placed[0]['name']}”" if placed else "Nothing to insert")
        elif up.kind == "recalled":
            if not d.get("values"):
                wf = d.get("workflow")
                if wf:
                    pb_gallery.store_workflow_recall(config_dir(), d["image"], wf[0], wf[1])
                    self.recalled = d["image"]
                    self._say(f"Run workflow will open with “{wf[0]}” and this image's values next time")
                else:
                    self._say("That image was made by a node graph: it has no settings to reuse", error=True)
                return
            args, notes = pb_gallery.store_recall(config_dir(), d["image"], d["values"])
            self.recalled = d["image"]
            text = ("Generate, Refine and Inpaint will start from its settings next time "
                    f"(prompt “{args.get('prompt', '')[:40]}”, seed {args.get('seed', 'random')})")
            self._say(text + (". " + "; ".join(notes) if notes else ""))
        elif up.kind == "reply" and d.get("op") == "images.star":
            image_id = tag[1]
            starred = bool(d["result"].get("starred"))
            self.browser.set_starred(image_id, starred)
            for row in self.store:
                if row[2] == image_id:
                    row[1] = pb_gallery.caption(self.browser.find(image_id))
            self._say("Starred" if starred else "Unstarred")
        elif up.kind == "error":
            self.browser.loading = False
            self._say(d.get("message") or "error", error=True)
        elif up.kind == "state" and d.get("state") in ("signed_out", "expired", "disconnected"):
            self._say(d.get("message") or d["state"], error=True)
        self._sensitivity()


# ---- Run workflow --------------------------------------------------------------------------------------------

def _active_drawable(image, drawables):
    if drawables:
        return drawables[0]
    selected = image.get_selected_drawables()
    return selected[0] if selected else None


def _drawable_rect(drawable):
    ok, x, y = drawable.get_offsets()
    return Rect(x, y, drawable.get_width(), drawable.get_height())


def read_drawable(drawable, Pixels):
    """A drawable's own pixels as rgba8 at its offsets in the image."""
    r = _drawable_rect(drawable)
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, r.w, r.h), 1.0, RGBA, Gegl.AbyssPolicy.NONE)
    return Pixels(bytes(data), r.w, r.h, "rgba8", r.x, r.y)


def source_reader(image, active, Pixels):
    """read(source) for pb_workflow.prepare: "active" -> the active drawable's pixels; "selection" -> the
    selection as gray8 over the active drawable's area (the whole image without one), so a mask lines up with an
    image parameter taken from the same layer; None when there is nothing to read."""
    def read(source):
        if source == "active":
            return read_drawable(active, Pixels) if active is not None else None
        if Gimp.Selection.is_empty(image):
            return None
        rect = _drawable_rect(active) if active is not None else image_rect(image)
        return read_selection(image, rect, Pixels)
    return read


def run_workflow(image, drawables, config, interactive):
    if interactive:
        Gtk, _ = _gtk()
    runner = _runner(config, interactive, need_models=False)
    try:
        import pb_workflow as pbw
        runner.session.refresh_workflows()
        workflows = runner.wait_for("workflows", "listing your workflows")["workflows"]
        read = source_reader(image, _active_drawable(image, drawables), runner.pixels.Pixels)
        if interactive:
            if not workflows:
                raise Failure("Paintbridge: you have no saved workflows yet (save one from the engine: "
                              "`paintbridge workflows import FILE`)")
            try:
                last = pbw.parse_values(_text(config, "values"))
            except ValueError:
                last = {}
            last_name = _text(config, "workflow")
            recalled = pb_gallery.pending_workflow_recall(config_dir())   # "Use settings" on a workflow image
            if recalled:
                last_name, last = recalled
            chosen = WorkflowDialog(Gtk, workflows, last_name, last, read).run()
            if chosen is None:
                raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
            if recalled:
                pb_gallery.workflow_recall_used(config_dir())
            name, values, raw = chosen
            # GIMP keeps these as the last values: the dialog starts from them next time
            config.set_property("workflow", name)
            config.set_property("values", json.dumps(raw))
        else:
            name = _text(config, "workflow").strip()
            try:
                wf = pbw.find_workflow(workflows, name)
                raw = pbw.parse_values(_text(config, "values"))
            except (LookupError, ValueError) as exc:
                raise Failure(f"Paintbridge: {exc}")
            form = forms.fields(wf)
            values, errors = pbw.prepare(form, raw, read)
            if errors:
                raise Failure(f"Paintbridge: workflow {name!r} not run: {pbw.describe_errors(form, errors)}")
        results = runner.run_workflow(name, values, progress_text=f"Paintbridge: {name}")
        return {"job": runner.job, "workflow": name, "layers": _place(image, results, f"Paintbridge {name}")}
    finally:
        runner.close()


class WorkflowDialog:
    """A combo of the person's workflows and a native form per workflow (specs from pb_workflow.form_specs).
    Run checks the form with pb_workflow.prepare; errors show under their fields and nothing is sent."""

    def __init__(self, Gtk, workflows, last_name, last_values, read):
        import pb_workflow as pbw
        self.Gtk, self.pbw, self.read = Gtk, pbw, read
        self.workflows = sorted(workflows, key=lambda w: w.get("name", ""))
        self.last_name, self.last_values = last_name, last_values
        self.form, self.rows = [], []   # rows: (spec, getter, error label)

        d = self.dialog = Gtk.Dialog(title="Paintbridge: Run workflow")
        d.set_default_size(460, -1)
        d.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        d.add_button("_Run", Gtk.ResponseType.OK)
        d.set_default_response(Gtk.ResponseType.OK)
        box = d.get_content_area()
        box.set_spacing(6)
        box.set_border_width(10)
        self.combo = Gtk.ComboBoxText()
        for wf in self.workflows:
            self.combo.append_text(wf["name"])
        box.pack_start(self.combo, False, False, 0)
        self.description = Gtk.Label(xalign=0.0)
        self.description.set_line_wrap(True)
        box.pack_start(self.description, False, False, 0)
        self.grid = None
        self.box = box
        self.message = Gtk.Label(xalign=0.0)
        self.message.set_line_wrap(True)
        box.pack_end(self.message, False, False, 0)
        self.combo.connect("changed", lambda c: self._build())
        names = [w["name"] for w in self.workflows]
        self.combo.set_active(names.index(last_name) if last_name in names else 0)

    def _workflow(self):
        i = self.combo.get_active()
        return self.workflows[i] if i >= 0 else None

    def _build(self):
        Gtk = self.Gtk
        if self.grid is not None:
            self.grid.destroy()
        wf = self._workflow()
        self.description.set_text((wf or {}).get("description") or "")
        initial = self.last_values if wf and wf["name"] == self.last_name else {}
        self.form, specs = self.pbw.form_specs(wf or {}, initial)
        grid = self.grid = Gtk.Grid(row_spacing=4, column_spacing=8)
        self.rows = []
        for i, spec in enumerate(specs):
            widget, getter = self._widget(spec)
            widget.set_tooltip_text(spec["tooltip"] or None)
            label = Gtk.Label(label=spec["label"] + (" *" if spec["required"] else ""), xalign=1.0, yalign=0.0)
            error = Gtk.Label(xalign=0.0)
            error.set_line_wrap(True)
            error.set_no_show_all(True)
            if spec["widget"] != "check":
                grid.attach(label, 0, 2 * i, 1, 1)
            grid.attach(widget, 1, 2 * i, 1, 1)
            grid.attach(error, 1, 2 * i + 1, 1, 1)
            self.rows.append((spec, getter, error))
        if not specs:
            grid.attach(Gtk.Label(label="This workflow has no parameters."), 0, 0, 2, 1)
        self.box.pack_start(grid, True, True, 0)
        grid.show_all()
        self.message.set_text("")

    def _widget(self, spec):
        """Gtk widget for a spec, and a getter giving its raw value for pb_workflow.prepare."""
        Gtk, kind = self.Gtk, spec["widget"]
        if kind == "choice":
            w = Gtk.ComboBoxText()
            for item in spec["items"]:
                w.append_text(item)
            w.set_active(spec["active"])
            return w, lambda: spec["values"][w.get_active()] if w.get_active() >= 0 else None
        if kind in ("int", "float"):
            value = spec["value"]
            start = min(max(value if value is not None else max(spec["min"], min(0, spec["max"])), spec["min"]),
                        spec["max"])
            adj = Gtk.Adjustment(value=start, lower=spec["min"], upper=spec["max"],
                                 step_increment=spec["step"], page_increment=spec["page"], page_size=0)
            w = Gtk.SpinButton(adjustment=adj, climb_rate=spec["step"], digits=spec["digits"])
            w.set_hexpand(True)
            if value is None:
                w.set_text("")      # required, no default: empty until the person types a value

            def get():
                if not w.get_text().strip():
                    return None
                w.update()          # the typed text -> the value (locale-aware), clamped to the bounds
                v = w.get_value()
                return int(round(v)) if kind == "int" else v
            return w, get
        if kind == "text":
            w = Gtk.Entry()
            w.set_text(spec["value"])
            w.set_hexpand(True)
            w.set_activates_default(True)
            return w, w.get_text
        if kind == "textarea":
            view = Gtk.TextView()
            view.set_wrap_mode(Gtk.WrapMode.WORD_CHAR)
            view.get_buffer().set_text(spec["value"])
            w = Gtk.ScrolledWindow()
            w.set_min_content_height(72)
            w.set_hexpand(True)
            w.set_shadow_type(Gtk.ShadowType.IN)
            w.add(view)

            def get():
                buf = view.get_buffer()
                return buf.get_text(buf.get_start_iter(), buf.get_end_iter(), False)
            return w, get
        if kind == "check":
            w = Gtk.CheckButton(label=spec["label"])
            w.set_active(spec["value"])
            return w, w.get_active
        # layer / selection: what will be sent, read when Run is pressed
        w = Gtk.Label(label=spec["text"], xalign=0.0)
        return w, lambda: spec["source"]

    def run(self):
        """(workflow name, values for workflows.run, raw widget values) or None when canceled."""
        self.dialog.show_all()
        try:
            while True:
                if self.dialog.run() != self.Gtk.ResponseType.OK:
                    return None
                chosen = self.check()
                if chosen is not None:
                    return chosen
        finally:
            self.dialog.destroy()

    def check(self):
        """Read the widgets and check them: the run's arguments, or None with the errors shown under their fields
        (nothing is sent then)."""
        wf = self._workflow()
        if wf is None:
            return None
        raw = {spec["name"]: get() for spec, get, _ in self.rows}
        values, errors = self.pbw.prepare(self.form, raw, self.read)
        for spec, _, label in self.rows:
            msg = errors.get(spec["name"])
            if msg:
                label.set_markup(f'<span foreground="#c01c28">{GLib.markup_escape_text(msg)}</span>')
                label.show()
            else:
                label.hide()
        if errors:
            self.message.set_text("Fix the marked fields; nothing was sent.")
            return None
        return wf["name"], values, raw


if __name__ == "__main__":
    Gimp.main(Paintbridge.__gtype__, sys.argv)

#!/usr/bin/env python3
"""Paintbridge for GIMP 3: generate, refine, inpaint, outpaint and upscale through a local Paintbridge engine,
steered by control/reference layers and region prompts on layers; live painting in a window; open images from the
gallery and run saved workflows.

Filters > Paintbridge > …  Each procedure is one plug-in process run. This file registers the procedures and runs
them; the modules beside it have one role each (the same names in the three plug-ins):
    host.py            all reading of GIMP images and placing of results (undo groups); region prompts (parasites)
    controller.py      the shared client's Session: connect, requests (protocol.generate), job progress
    settings.py        the plug-in's settings file: server, default model, last form values, recalls
    panels.py          the dialogs (widgets only)
    workflow_form.py   the Run workflow form: widget specs and checked values
    live.py            Live…: watching the image and protocol.live's LiveController
    _vendor/           protocol/ (the shared client), msgpack, websockets; site/ keyring
Running from a source checkout also works when the checkout's root (holding protocol/) is three levels up and
msgpack/websockets are importable.

No procedure has a password or token argument: GIMP writes arguments to plug-in-settings files ("Save Settings",
last values). Interactive runs use the stored sign-in (Sign In is a plain Gtk dialog); scripts use the stored
sign-in or $PAINTBRIDGE_TOKEN, and Sign In from a script takes the password from $PAINTBRIDGE_PASSWORD.
"""

import json
import os
import sys

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
from gi.repository import Gimp, GLib, GObject  # noqa: E402

try:
    import controller  # noqa: E402
    import host  # noqa: E402
    import settings  # noqa: E402
    import workflow_form  # noqa: E402
    from controller import Controller, Failure  # noqa: E402
    from protocol import forms, generate, pixels  # noqa: E402
    from protocol.updates import JobResult, ImagesPage  # noqa: E402
    _MISSING = None
except ImportError as _exc:   # a plug-in folder without its _vendor: say so from every procedure
    _MISSING = _exc

MENU = "<Image>/Filters/Paintbridge"
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
PROC_REGION = "paintbridge-region-prompt"
PROC_LIVE = "paintbridge-live"

LABELS = {
    PROC_GENERATE: ("_Generate…", "Generate a new layer from a prompt at the model's size, placed in the "
                                  "selection's bounds (or over the canvas)"),
    PROC_REFINE: ("_Refine…", "Re-imagine the visible image (or the selection) with a strength"),
    PROC_INPAINT: ("_Inpaint Selection…", "Regenerate the selected area; the result is a new layer"),
    PROC_OUTPAINT: ("_Outpaint…", "Extend the canvas and fill the new area (one undo step)"),
    PROC_UPSCALE: ("_Upscale…", "Upscale the visible image into a new image"),
    PROC_SIGN_IN: ("_Sign In…", "Sign in to a Paintbridge engine"),
    PROC_SETTINGS: ("S_ettings…", "Server address, default model, who is signed in, sign out"),
    PROC_GALLERY: ("Open from _Gallery…", "Browse your Paintbridge images: insert one as a layer, reuse its settings, "
                                          "star it"),
    PROC_WORKFLOW: ("Run _Workflow…", "Run one of your saved Paintbridge workflows; its results become layers"),
    PROC_REGION: ("Region _Prompt…", "Give the active layer a prompt of its own: Generate, Refine, Inpaint and Outpaint "
                                     "then paint that prompt where the layer is opaque (a region)"),
    PROC_LIVE: ("_Live…", "A window that re-generates the image as you paint (img2img at a low strength); Apply adds "
                          "the newest result as a layer"),
}
# Control and reference layers (protocol.generate.steer_args): each slot is a set of procedure arguments
# SLOT-layer, -model, -strength, -start, -end (and -preprocess for controls), shown in the dialogs as one row each.
STEER_SLOTS = (("control", "Control", "control"), ("control-2", "Control 2", "control"),
               ("reference", "Reference", "reference"))
STEER_PROCS = ("paintbridge-generate", "paintbridge-refine", "paintbridge-inpaint", "paintbridge-outpaint")
COMMON = ["prompt", "negative-prompt", "model", "lora", "lora-weight", "steps", "guidance", "scheduler", "schedule",
          "clip-skip", "vae", "seed"]
DIALOG_FIELDS = {
    PROC_GENERATE: COMMON + ["batch"],
    PROC_REFINE: COMMON + ["strength"],
    PROC_INPAINT: COMMON + ["strength"],
    PROC_OUTPAINT: COMMON + ["extend-left", "extend-top", "extend-right", "extend-bottom"],
    PROC_UPSCALE: ["scale", "upscaler", "refine", "refine-strength", "model", "prompt", "steps", "seed"],
    PROC_SETTINGS: ["server-url", "model", "sign-out"],   # + "download" for an admin (run_settings)
}
MODE = {PROC_GENERATE: "txt2img", PROC_REFINE: "img2img", PROC_INPAINT: "inpaint", PROC_OUTPAINT: "outpaint",
        PROC_UPSCALE: "upscale"}


# ---- procedures ----------------------------------------------------------------------------------------------

def add_common_args(p, default_strength=None):
    # Mnemonics are unique within each dialog, GIMP's own buttons included (_Reset, _Load Saved Settings,
    # _Save Settings, _Cancel, _OK: r, l, s, c, o); GIMP warns about every duplicate, and about a label without.
    p.add_string_argument("prompt", "_Prompt", "What to paint", "", RW)
    p.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid", "", RW)
    p.add_string_argument("model", "_Model", "Model name (empty: your default model, else the engine's)", "", RW)
    p.add_string_argument("lora", "LoR_A", "A LoRA on the engine to apply (empty: none)", "", RW)
    p.add_double_argument("lora-weight", "LoRA _weight", "How strongly the LoRA applies", -2.0, 2.0, 0.8, RW)
    p.add_int_argument("steps", "S_teps", "Sampling steps (0: model default)", 0, settings.STEPS_MAX, 0, RW)
    p.add_double_argument("guidance", "_Guidance", "Guidance scale (0: model default)", 0.0, settings.GUIDANCE_MAX,
                          0.0, RW)
    # the engine's pickers (protocol.generate): the dialog offers what the engine lists
    p.add_string_argument("scheduler", "Sc_heduler", "The sampler, by A1111 name or id (empty: the engine's, Euler)",
                          "", RW)
    p.add_string_argument("schedule", "Noise sched_ule", "default, karras or trailing (empty: the model's own)", "",
                          RW)
    p.add_int_argument("clip-skip", "Clip s_kip", "Use the text encoder's N-th last layer (1: off)",
                       settings.CLIP_SKIP_MIN, settings.CLIP_SKIP_MAX, 1, RW)
    p.add_string_argument("vae", "_VAE", "A VAE on the engine instead of the model's own (empty: the model's)", "",
                          RW)
    p.add_int_argument("seed", "See_d", "Seed (-1: random; the one used is in the layer's name)", -1,
                       settings.SEED_MAX, -1, RW)
    if default_strength is not None:
        p.add_double_argument("strength", "Str_ength", "How much to change (0..1)", 0.0, 1.0, default_strength, RW)
    add_connection_args(p)


def add_connection_args(p):
    # For scripts; the dialogs don't show it (Settings sets the server up). No token argument: see the docstring.
    p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws (empty: from settings)", "", RW)


def add_steer_args(p):
    # The dialogs show these in their own rows (panels.SteerRows), not as GIMP's fields: no mnemonics needed.
    for slot, label, kind in STEER_SLOTS:
        what = "ControlNet or T2I-Adapter" if kind == "control" else "IP-Adapter"
        p.add_layer_argument(f"{slot}-layer", f"{label} layer", f"A layer that steers the image through a {what} "
                             "(none: off; a hidden layer is off too)", True, RW)
        p.add_string_argument(f"{slot}-model", f"{label} model", f"The {what} (empty: the engine's first one for "
                              "the model's base)", "", RW)
        if kind == "control":
            p.add_string_argument(f"{slot}-preprocess", f"{label} preprocess", "none, canny, scribble, lineart, "
                                  "invert, blur or tile (empty: the model's preset)", "", RW)
        p.add_double_argument(f"{slot}-strength", f"{label} strength", "How strongly it steers (-1: the model's "
                              "preset)", -1.0, 2.0, -1.0, RW)
        p.add_double_argument(f"{slot}-start", f"{label} start", "From this fraction of the steps (-1: the model's "
                              "preset)", -1.0, 1.0, -1.0, RW)
        p.add_double_argument(f"{slot}-end", f"{label} end", "Until this fraction of the steps (-1: the model's "
                              "preset)", -1.0, 1.0, -1.0, RW)


class Paintbridge(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROC_GENERATE, PROC_REFINE, PROC_INPAINT, PROC_OUTPAINT, PROC_UPSCALE, PROC_GALLERY,
                PROC_WORKFLOW, PROC_REGION, PROC_LIVE, PROC_SIGN_IN, PROC_SETTINGS]

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
            p.add_int_argument("batch", "_Batch", "How many layers", 1, settings.BATCH_MAX, 1, RW)
        elif name == PROC_REFINE:
            add_common_args(p, 0.5)
        elif name == PROC_INPAINT:
            add_common_args(p, 1.0)
        elif name == PROC_OUTPAINT:
            add_common_args(p)
            for side, mn in (("left", "Extend le_ft"), ("top", "E_xtend top"), ("right", "Extend r_ight"),
                             ("bottom", "Extend _bottom")):
                p.add_int_argument(f"extend-{side}", mn, f"Pixels to add on the {side}", 0, 4096, 0, RW)
        elif name == PROC_UPSCALE:
            p.add_int_argument("scale", "Sc_ale", "Upscale factor", 2, 4, 2, RW)
            p.add_string_argument("upscaler", "_Upscaler", "Upscaler model on the engine (empty: a plain resize)",
                                  "", RW)
            # then, if asked, refined with the model in tiles at its native size (the fields below apply)
            p.add_boolean_argument("refine", "Re_fine with the model", "Add detail with the model, tile by tile",
                                   False, RW)
            p.add_double_argument("refine-strength", "Refine stre_ngth", "How much each tile may change (0..1)",
                                  0.0, 1.0, 0.3, RW)
            p.add_string_argument("model", "_Model", "Model to refine with (empty: your default model)", "", RW)
            p.add_string_argument("prompt", "_Prompt", "What the image shows (guides the refine)", "", RW)
            p.add_int_argument("steps", "S_teps", "Sampling steps (0: model default)", 0, settings.STEPS_MAX, 0, RW)
            p.add_int_argument("seed", "See_d", "Seed (-1: random)", -1, settings.SEED_MAX, -1, RW)
            add_connection_args(p)
        elif name == PROC_GALLERY:
            p.add_string_argument("image-id", "Image ID", "Gallery image to insert as a layer (empty: your newest)",
                                  "", RW)
            add_connection_args(p)
        elif name == PROC_WORKFLOW:
            p.add_string_argument("workflow", "Workflow", "Name of one of your saved workflows", "", RW)
            p.add_string_argument("values", "Values", 'JSON object of parameter values; image parameters take '
                                  '"active" (the active layer), mask parameters "selection"', "{}", RW)
            add_connection_args(p)
        elif name == PROC_REGION:
            p.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
            p.add_string_argument("prompt", "_Prompt", "What to paint where this layer is opaque (both prompts empty: "
                                  "the layer is no longer a region)", "", RW)
            p.add_string_argument("negative-prompt", "_Negative prompt", "What to avoid there", "", RW)
        elif name == PROC_LIVE:
            p.add_string_argument("prompt", "_Prompt", "What the painting shows", "", RW)
            p.add_double_argument("strength", "Str_ength", "How much each result may change the canvas", 0.0, 1.0,
                                  0.3, RW)
            p.add_string_argument("preset", "Pr_eset", "Few-step sampling: lcm, hyper-sd, lightning, turbo (empty: "
                                  "the model's own)", "", RW)
            p.add_string_argument("model", "_Model", "Model name (empty: your default model)", "", RW)
            add_connection_args(p)
        elif name == PROC_SIGN_IN:
            p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws", "", RW)
            p.add_string_argument("username", "User _name", "Scripts: the password comes from $PAINTBRIDGE_PASSWORD",
                                  "", RW)
            p.add_boolean_argument("remember-me", "Re_member me", "Keep me signed in", True, RW)
        elif name == PROC_SETTINGS:
            p.add_string_argument("server-url", "Server _URL", "ws://host:port/v1/ws", "", RW)
            p.add_string_argument("model", "Default _model", "Empty: the engine's default", "", RW)
            p.add_boolean_argument("sign-out", "Si_gn out", "End the sign-in on the engine and forget it here", False,
                                   RW)
            p.add_string_argument("download", "_Download a model", "Admins: a URL, OWNER/REPO/FILE or starter:NAME "
                                  "for the engine to download (empty: none)", "", RW)
        if name in STEER_PROCS:
            add_steer_args(p)
        p.add_string_return_value("result", "Result", "JSON: job, layers placed, new image", "", RW)
        return p

    # -- entry point --
    def run(self, procedure, run_mode, image, drawables, config, run_data):
        name = procedure.get_name()
        interactive = run_mode == Gimp.RunMode.INTERACTIVE
        try:
            if _MISSING is not None:
                raise Failure(f"Paintbridge's bundled client is missing or incomplete ({_MISSING}). Reinstall the "
                              f"plug-in built with `paintbridge plugin build gimp`.")
            handler = {
                PROC_GENERATE: run_generate, PROC_REFINE: run_refine, PROC_INPAINT: run_inpaint,
                PROC_OUTPAINT: run_outpaint, PROC_UPSCALE: run_upscale, PROC_SIGN_IN: run_sign_in,
                PROC_SETTINGS: run_settings, PROC_GALLERY: run_gallery, PROC_WORKFLOW: run_workflow,
                PROC_REGION: run_region, PROC_LIVE: run_live,
            }[name]
            result = handler(Run(procedure, config, interactive, image, drawables))
        except Failure as exc:
            return self._fail(procedure, exc.status, str(exc))
        except Exception as exc:  # a bug: say what happened instead of a bare traceback
            return self._fail(procedure, Gimp.PDBStatusType.EXECUTION_ERROR, f"Paintbridge: {type(exc).__name__}: {exc}")
        Gimp.displays_flush()
        rv = procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, None)
        rv.insert(1, GObject.Value(GObject.TYPE_STRING, json.dumps(result)))
        return rv

    @staticmethod
    def _fail(procedure, status, message):
        # GIMP shows a failed interactive run's error itself: one message, not two
        sys.stderr.write(message + "\n")
        err = GLib.Error(message) if status != Gimp.PDBStatusType.CANCEL else None
        return procedure.new_return_values(status, err)


class Run:
    """One procedure call: its arguments, and the controller it opens (closed by done())."""

    def __init__(self, procedure, config, interactive, image, drawables):
        self.procedure, self.config, self.interactive = procedure, config, interactive
        self.image, self.drawables = image, drawables
        self.name = procedure.get_name()
        self.label = LABELS[self.name][0]
        self.fields = list(DIALOG_FIELDS.get(self.name, ()))   # what the dialog shows
        self.ctl = None

    def text(self, prop):
        """A string argument: GIMP hands an empty string argument back as None."""
        return self.config.get_property(prop) or ""

    def get(self, prop):
        return self.config.get_property(prop)

    def open(self):
        """Connect ($PAINTBRIDGE_TOKEN or the stored sign-in; interactive runs use the server from Settings,
        scripts their server-url argument)."""
        url = "" if self.interactive else self.text("server-url")
        self.ctl = Controller(self.interactive, url, controller_label(self.label))
        try:
            self.ctl.connect(settings.script_token())   # None: the stored sign-in
        except BaseException:
            self.ctl.close()
            raise
        return self.ctl

    def form(self, pickers=None, note="", steer=None):
        """Interactive: the procedure's dialog, starting from the last values typed (kept after a cancel or a
        failure) or from recalled ones; False when canceled. Scripts: True. steer: the control/reference rows'
        choices (steer_choices)."""
        if not self.interactive:
            return True
        import panels
        cfg_dir = controller.config_dir()
        arg_names = [a.name for a in self.procedure.get_arguments()]
        for prop, value in settings.last_form(cfg_dir, self.name).items():
            if prop in arg_names:
                self.config.set_property(prop, value)
        for prop in self.fields:   # an empty text argument comes back as None: Gtk wants ""
            spec = self.config.find_property(prop)
            if spec is not None and spec.value_type == GObject.TYPE_STRING and self.get(prop) is None:
                self.config.set_property(prop, "")
        recalled = settings.pending_recall(cfg_dir, self.name, arg_names)
        for prop, value in recalled.items():
            if prop.endswith("-layer"):   # a layer id: the layer of this image it was matched to, if it still is
                layer = Gimp.Layer.get_by_id(value) if isinstance(value, int) else None
                value = layer if host.layer_in(self.image, layer) else None
            self.config.set_property(prop, value)
        ok = panels.procedure_dialog(self.procedure, self.config, self.fields, self.label, pickers, note, steer)
        if self.name != PROC_SETTINGS:   # kept even when canceled (GIMP keeps only a successful run's values)
            settings.remember_form(cfg_dir, self.name, {p: self.get(p) for p in self.fields})
        if ok and recalled:
            settings.recall_used(cfg_dir, self.name)
        return ok

    def progress(self):
        if self.interactive:
            import panels
            self.ctl.progress = panels.ProgressDialog(self.label)

    def values(self):
        """The form's values under protocol.generate's field names."""
        mode = generate_mode(self.name)
        out = {}
        for field in ("prompt", "negative_prompt", "model", "lora", "lora_weight", "steps", "guidance", "seed",
                      "batch", "strength", "scale", "upscaler", "scheduler", "schedule", "clip_skip", "vae", "refine",
                      "refine_strength"):
            prop = field.replace("_", "-")
            if not mode.uses(field) or self.config.find_property(prop) is None:
                continue
            value = self.get(prop)
            if field in ("steps", "guidance") and not value:
                value = None        # 0: the model's default
            out[field] = "" if value is None and field in ("prompt", "negative_prompt") else value
        return out

    def done(self):
        if self.ctl is not None:
            self.ctl.close()


def controller_label(label):
    return "Paintbridge: " + label.replace("_", "").rstrip("…").strip()


def generate_mode(name):
    return generate.MODES[MODE[name]]


def pickers(ctl, with_upscaler=False):
    names = {"model": [m["name"] for m in ctl.session.models],
             "lora": [""] + [m["name"] for m in ctl.session.loras]}
    if with_upscaler:
        names["upscaler"] = [""] + [m["name"] for m in ctl.session.upscalers]
    else:   # the engine's pickers: samplers by label, the schedules, its VAEs ("" = the model's own)
        names["scheduler"] = [c.label for c in generate.scheduler_choices(ctl.session.samplers)]
        names["schedule"] = list(generate.SCHEDULE_LABELS)
        names["vae"] = [""] + [v["name"] for v in ctl.session.vaes]
    return names


def _diffusion(run, mode, prepare, note=None):
    """Generate/Refine/Inpaint/Outpaint: connect, the dialog (with the engine's pickers; note(ctl): a line above
    it), read pixels (the control/reference layers and the region layers too), follow the job."""
    ctl = run.open()
    try:
        said = [note(ctl)] if note else []
        named = [f"{layer.get_name()} (“{rp['prompt'][:30]}”)" for layer, rp in host.region_layers(run.image)]
        if named:   # the person sees which layers will be sent as regions
            said.append(f"Regions: {', '.join(named)}; the prompt below is for the rest")
        if not run.form(pickers(ctl), note="\n".join(said), steer=steer_choices(run, ctl)):
            raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
        values = run.values()
        model = settings.pick_model(values.get("model") or "", ctl.prefs, ctl.session.models)
        values.update(steering(run, ctl, model))
        regions = host.regions(run.image)
        params = ctl.params(mode, values, document=_document(run.image), regions=regions)
        image, mask, place, extra = prepare(ctl, params)
        run.progress()
        results = ctl.generate(params, image, mask)
        out = {"job": ctl.job, "seed": params.get("seed"), **extra}
        out["steering"] = {key: [{"model": e["model"], "layer": e["layer"]} for e in values.get(key, [])]
                           for key in ("control", "reference")}
        out["regions"] = [{"layer": r["layer"], "prompt": r["prompt"]} for r in regions]
        out["layers"] = place(results)
        return out
    finally:
        run.done()


# ---- control and reference layers ---------------------------------------------------------------------------

def steer_models(ctl, kind):
    return ctl.session.controls if kind == "control" else ctl.session.references


def steer_choices(run, ctl):
    """What the dialog's control/reference rows offer: the image's layers, the engine's models and their presets."""
    layers = [(layer.get_id(), layer.get_name()) for layer in host.layers_bottom_first(run.image)[::-1]]
    models = {kind: [m["name"] for m in steer_models(ctl, kind)] for kind in ("control", "reference")}
    presets = {m["name"]: m.get("preset") or {} for kind in ("control", "reference") for m in steer_models(ctl, kind)}
    return {"slots": STEER_SLOTS, "layers": layers, "models": models, "presets": presets,
            "preprocessors": list(generate.PREPROCESSORS)}


def steering(run, ctl, model):
    """{"control": [...], "reference": [...]} for protocol.generate.steer_args from the run's slots: each shown
    layer with its model (the named one, else the engine's first for the main model's base) and the numbers given,
    the model's preset for the ones left at -1. The layer's pixels are read here, at its place in the image."""
    base = (ctl.model_entry(model) or {}).get("base")
    out = {"control": [], "reference": []}
    for slot, label, kind in STEER_SLOTS:
        layer = run.get(f"{slot}-layer")
        if layer is None:
            continue
        if not host.layer_in(run.image, layer):
            # GIMP's last values (Repeat, Ctrl+F) may hold a layer of the image the last run was on: not this one's
            sys.stderr.write(f"paintbridge: {label.lower()} layer is not in this image: left out\n")
            continue
        if not host.shown(layer):
            continue   # a hidden control is off
        entry = pick_steer_model(run.text(f"{slot}-model").strip(), steer_models(ctl, kind), base, label)
        preset = entry.get("preset") or {}
        defaults = generate.CONTROL_DEFAULTS if kind == "control" else generate.REFERENCE_DEFAULTS
        item = {"model": entry["name"], "image": host.read_drawable(layer), "layer": layer.get_id()}
        for name in ("strength", "start", "end"):
            value = run.get(f"{slot}-{name}")
            item[name] = preset.get(name, defaults[name]) if value is None or value < 0 else value
        if kind == "control":
            item["preprocess"] = run.text(f"{slot}-preprocess").strip() or preset.get("preprocess") or "none"
        out[kind].append(item)
    return out


def pick_steer_model(name, entries, base, label):
    if name:
        entry = next((m for m in entries if m.get("name") == name), None)
        if entry is None:
            raise Failure(f"Paintbridge: {label.lower()} model: the engine has no {name!r}; it has: "
                          f"{', '.join(m['name'] for m in entries) or 'none'}", Gimp.PDBStatusType.CALLING_ERROR)
        return entry
    fits = [m for m in entries if not base or not m.get("base") or m["base"] == base]
    if not fits:
        kind = "ControlNet or T2I-Adapter" if label.lower().startswith("control") else "IP-Adapter"
        raise Failure(f"Paintbridge: {label.lower()} model: the engine has no {kind}"
                      f"{' for ' + base + ' models' if base else ''}: install one on the engine first",
                      Gimp.PDBStatusType.CALLING_ERROR)
    return fits[0]


def _document(image):
    f = image.get_file() if image is not None else None
    return os.path.basename(f.get_path() or "") if f is not None else ""


def run_generate(run):
    def prepare(ctl, params):
        region = host.selection_rect(run.image) or host.image_rect(run.image)
        limits = ctl.session.limits
        w, h, hires = controller.render_size(region.w, region.h,
                                             controller.native_size(ctl.model_entry(params["model"])),
                                             limits.max_pixels)
        params.update(width=w, height=h, x=region.x, y=region.y)
        if hires:   # above the model's native size: a native-size pass, then refined in tiles by the engine
            params["hires"] = True
        ctl.label = f"{ctl.label} at {w}×{h}"   # the size used, on the progress bar and the dialog
        return None, None, lambda res: host.place(run.image, res, "Paintbridge", fit=region), {"size": [w, h]}
    def note(ctl):
        region = host.selection_rect(run.image) or host.image_rect(run.image)
        model = settings.pick_model("", ctl.prefs, ctl.session.models)
        w, h, hires = controller.render_size(region.w, region.h, controller.native_size(ctl.model_entry(model)),
                                             ctl.session.limits.max_pixels)
        if hires:
            return (f"Renders at {w}×{h}: first at the size {model or 'the model'} is made for, then refined in "
                    f"tiles (hires), placed in {region.w}×{region.h}")
        return f"Renders at {w}×{h} (the size {model or 'the model'} is made for), placed in {region.w}×{region.h}"
    return _diffusion(run, "txt2img", prepare, note)


def run_refine(run):
    def prepare(ctl, params):
        sel = host.selection_rect(run.image)
        region = sel or host.image_rect(run.image)
        src = host.read_visible(run.image, region)
        return src, None, lambda res: host.place(run.image, res, "Paintbridge refine", clip=region,
                                                 selection_mask=sel is not None), {}
    return _diffusion(run, "img2img", prepare)


def run_inpaint(run):
    sel = host.selection_rect(run.image)
    if sel is None:
        raise Failure("Paintbridge: select the area to inpaint first")

    def prepare(ctl, params):
        region = host.context_region(sel, host.image_rect(run.image))
        src = host.read_visible(run.image, region)
        mask = host.read_selection(run.image, region)
        return src, mask, lambda res: host.place(run.image, res, "Paintbridge inpaint", clip=sel,
                                                 selection_mask=True), \
            {"region": region.as_tuple(), "selection": sel.as_tuple()}
    return _diffusion(run, "inpaint", prepare)


def run_outpaint(run):
    """The visible image with transparent margins is sent; the canvas grows only when the result is here, in the
    same undo group as the result layer, which is masked to the area that was filled."""
    def prepare(ctl, params):
        margins = tuple(run.get(f"extend-{s}") for s in ("left", "top", "right", "bottom"))
        src = pixels.pad(host.read_visible(run.image, host.image_rect(run.image)), *margins)
        fill = pixels.Pixels(pixels.mask_from_transparency(src.data), src.w, src.h, "gray8", src.x, src.y)
        if pixels.mask_bounds(fill.data, fill.w, fill.h) is None:
            raise Failure("Paintbridge: nothing to outpaint: extend the canvas (or leave a transparent area)")
        return src, None, lambda res: host.place_outpaint(run.image, res, "Paintbridge outpaint", margins, fill), {}
    return _diffusion(run, "outpaint", prepare)


def run_upscale(run):
    ctl = run.open()
    try:
        if not run.form(pickers(ctl, with_upscaler=True)):
            raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
        params = ctl.params("upscale", run.values(), document=_document(run.image))
        src = host.read_visible(run.image, host.image_rect(run.image))
        run.progress()
        results = ctl.generate(params, src)
        if not results:
            raise Failure("Paintbridge: the engine returned no layer")
        new, layers = host.new_image(results, "Paintbridge upscale")
        if run.interactive:
            Gimp.Display.new(new)
        return {"job": ctl.job, "image": new.get_id(), "layers": layers}
    finally:
        run.done()


def run_sign_in(run):
    cfg_dir = controller.config_dir()
    prefs = settings.load(cfg_dir)
    if run.interactive:
        import panels
        from protocol import default_url
        chosen = panels.SignInDialog(settings.resolve_url("", prefs, default_url()), prefs.get("username", ""),
                                     prefs.get("remember_me", True)).run()
        if chosen is None:
            raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
        url, username, password, remember = chosen
    else:
        url, username = run.text("server-url"), run.text("username")
        password, remember = os.environ.get("PAINTBRIDGE_PASSWORD", ""), run.get("remember-me")
    if not username:
        raise Failure("Paintbridge: enter a user name", Gimp.PDBStatusType.CALLING_ERROR)
    ctl = Controller(run.interactive, url, "Paintbridge: signing in")
    try:
        user = ctl.sign_in(username, password, remember)
        url = ctl.url
    finally:
        ctl.close()
    settings.update(cfg_dir, url=url, username=username, remember_me=bool(remember))
    if run.interactive:
        Gimp.message(f"Paintbridge: signed in to {url} as {user}")
    return {"url": url, "user": user}


def run_settings(run):
    cfg_dir = controller.config_dir()
    prefs = settings.load(cfg_dir)
    if run.interactive:
        # who is signed in, and the engine's models for the default-model picker (when it can be reached)
        note, names = "Not signed in: use Sign In", {}
        try:
            ctl = run.open()
            note = f"Signed in to {ctl.url} as {ctl.user or '?'}"
            names = {"model": [""] + [m["name"] for m in ctl.session.models]}
            if ctl.session.is_admin:   # only an admin sees the download field
                run.fields.append("download")
                note += " (admin: you can have the engine download a model)"
            run.done()
        except Failure as exc:
            note = str(exc).replace("Paintbridge: ", "")
        run.config.set_property("server-url", prefs.get("url") or "")
        run.config.set_property("model", prefs.get("model") or "")
        run.config.set_property("sign-out", False)
        run.config.set_property("download", "")
        if not run.form(names, note=note):
            raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
    from protocol import default_url
    url = settings.resolve_url(run.text("server-url"), prefs, default_url())
    settings.update(cfg_dir, url=url, model=run.text("model"))
    signed_out = bool(run.get("sign-out"))
    download = None
    if run.text("download").strip():
        download = download_model(run, url, run.text("download").strip())
    said = ""
    if signed_out:
        ctl = Controller(run.interactive, url, "Paintbridge: signing out")
        try:
            said = ctl.sign_out()
        finally:
            ctl.close()
        run.config.set_property("sign-out", False)
        if run.interactive:
            Gimp.message(f"Paintbridge ({url}): {said}")
    return {"url": url, "model": run.text("model"), "signed_out": signed_out, "message": said,
            "download": download}


def download_model(run, url, source):
    """Settings' download (admins): the engine fetches the model; its progress on GIMP's bar (and the progress
    dialog), a clear error when it fails. Returns the download's final row as a dict."""
    ctl = Controller(run.interactive, url, "Paintbridge: downloading a model")
    try:
        ctl.connect(settings.script_token())
        run.ctl = ctl
        run.progress()
        run.ctl = None
        row, seen = ctl.download(source)
    finally:
        ctl.close()
    if row.state != "done":
        raise Failure(f"Paintbridge: {row.describe()}")
    if run.interactive:
        Gimp.message(f"Paintbridge: {row.describe()}")
    return {"state": row.state, "name": row.name, "bytes": row.bytes, "total": row.total, "seen": seen,
            "text": row.describe()}


# ---- regions and live ------------------------------------------------------------------------------------------

def run_region(run):
    """Set (or, with both prompts empty, remove) the active layer's region prompt: a layer parasite, kept in the
    .xcf and undoable. No engine is needed."""
    layer = host.active_drawable(run.image, run.drawables)
    if layer is None or not layer.is_layer():
        raise Failure("Paintbridge: choose the layer that is the region first", Gimp.PDBStatusType.CALLING_ERROR)
    if run.interactive:
        import panels
        current = host.region_prompt(layer) or {}
        run.config.set_property("prompt", current.get("prompt", ""))
        run.config.set_property("negative-prompt", current.get("negative_prompt", ""))
        note = (f"Layer “{layer.get_name()}”: Generate paints this prompt where the layer is opaque, followed by the "
                "dialog's prompt. Both empty: the layer is no longer a region.")
        if not panels.procedure_dialog(run.procedure, run.config, ["prompt", "negative-prompt"], run.label,
                                       note=note):
            raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
    prompt, negative = run.text("prompt"), run.text("negative-prompt")
    stored = host.set_region_prompt(run.image, layer, prompt, negative)
    return {"layer": layer.get_id(), "region": stored, "prompt": prompt if stored else "",
            "negative_prompt": negative if stored else "",
            "regions": [lay.get_id() for lay, _ in host.region_layers(run.image)]}


def run_live(run):
    """Live painting in a window of its own (live.py says what GIMP allows and how the canvas is watched)."""
    if not run.interactive:
        raise Failure("Paintbridge: Live runs in its own window: start it from Filters > Paintbridge > Live…",
                      Gimp.PDBStatusType.CALLING_ERROR)
    import live
    import panels
    ctl = run.open()
    try:
        model = settings.pick_model(run.text("model"), ctl.prefs, ctl.session.models)
        if not model:
            raise Failure("Paintbridge: the engine offers no model; add one on the engine first")
        session = live.GimpLive(ctl, run.image, model, run.text("prompt"), run.get("strength"), run.text("preset"))
        out = panels.LiveWindow(session, live.PRESETS, [m["name"] for m in ctl.session.models]).run()
        run.config.set_property("prompt", session.prompt)   # the next Live starts from these
        run.config.set_property("model", session.model)
        run.config.set_property("strength", session.strength)
        run.config.set_property("preset", session.preset)
        return out
    finally:
        run.done()


# ---- Open from gallery ---------------------------------------------------------------------------------------

def run_gallery(run):
    ctl = run.open()
    try:
        if run.interactive:
            import panels
            from gi.repository import Gtk, GdkPixbuf
            from protocol.gallery import GalleryBrowser, layer_name
            ctl.gallery = GalleryBrowser(ctl.session)

            def insert(up):
                if not run.image.is_valid():
                    return "The image was closed: nothing inserted", []
                placed = host.place(run.image, up.layers, "Paintbridge")
                Gimp.displays_flush()
                return (f"Inserted “{placed[0]['name']}”" if placed else "Nothing to insert"), placed

            return panels.GalleryDialog(ctl, Gtk, GdkPixbuf, insert, lambda up: use_settings(up, run.image)).run()
        image_id = run.text("image-id").strip()
        if not image_id:
            ctl.session.list_images(thumb_size=16, limit=1, tag="newest")
            page = ctl.wait_for(ImagesPage, "listing your gallery", pred=lambda up: up.tag == "newest")
            if not page.images:
                raise Failure("Paintbridge: your gallery is empty: nothing to insert")
            image_id = page.images[0]["id"]
        ctl.session.open_image(image_id, tag=("open", image_id))
        got = ctl.wait_for(JobResult, f"opening image {image_id}", 120, pred=lambda up: up.image == image_id)
        return {"image_id": image_id, "layers": host.place(run.image, got.layers, "Paintbridge")}
    finally:
        run.done()


def use_settings(up, image=None):
    """A Recalled image: its values become the next defaults of Generate/Refine/Inpaint (or, for a workflow's
    image, of Run workflow): its control and reference layers where this image still has them (the same pixels
    at the same place), and its regions' prompts go back onto the layers whose alpha they were (one undo step).
    Returns (what to say, whether anything was kept)."""
    cfg_dir = controller.config_dir()
    if not up.values and up.workflow:
        settings.store_workflow_recall(cfg_dir, up.image, up.workflow[0], up.workflow[1])
        return f"Run workflow will open with “{up.workflow[0]}” and this image's values next time", True
    args, notes = settings.recall_args(up.values, up.summary)
    if not args:
        return "That image was made by a node graph: it has no settings to reuse", False
    said = ""
    if image is not None and image.is_valid():
        def find(wire):
            layer = host.find_layer(image, wire)
            return layer.get_id() if layer is not None else None
        steer, steer_notes = settings.recall_steer_args(up.values, find, STEER_SLOTS)
        args.update(steer)
        notes += steer_notes
        restored, region_notes = restore_regions(image, up.values)
        notes += region_notes
        if restored:
            said = f"; {restored} region prompt{'s' if restored != 1 else ''} put back on {'their' if restored != 1 else 'its'} layer"
    settings.store_recall(cfg_dir, up.image, args)
    text = ("Generate, Refine and Inpaint will start from its settings next time "
            f"(prompt “{str(args.get('prompt', ''))[:40]}”, seed {args.get('seed', 'random')})") + said
    return text + (". " + "; ".join(notes) if notes else ""), True


def restore_regions(image, values):
    """The recalled regions' prompts onto the layers of `image` whose alpha was their mask (one undo step).
    (how many were restored, notes for the ones this image no longer has)."""
    restored, notes = 0, []
    found = []
    for r in generate.recalled_regions(values):
        layer = host.find_layer(image, r["mask"], alpha=True)
        if layer is None:
            notes.append(f"region “{r['prompt'][:30]}”: its layer is not in this image")
        else:
            found.append((layer, r))
    if found:
        image.undo_group_start()
        try:
            for layer, r in found:
                restored += host.set_region_prompt(image, layer, r["prompt"], r["negative_prompt"])
        finally:
            image.undo_group_end()
        Gimp.displays_flush()
    return restored, notes


# ---- Run workflow --------------------------------------------------------------------------------------------

def run_workflow(run):
    from protocol.updates import WorkflowsChanged
    ctl = run.open()
    try:
        ctl.session.refresh_workflows()
        workflows = ctl.wait_for(WorkflowsChanged, "listing your workflows").workflows
        read = host.source_reader(run.image, host.active_drawable(run.image, run.drawables))
        cfg_dir = controller.config_dir()
        if run.interactive:
            import panels
            from gi.repository import Gtk
            if not workflows:
                raise Failure("Paintbridge: you have no saved workflows yet (save one from the engine: "
                              "`paintbridge workflows import FILE`)")
            try:
                last = workflow_form.parse_values(run.text("values"))
            except ValueError:
                last = {}
            last_name = run.text("workflow")
            recalled = settings.pending_workflow_recall(cfg_dir)   # "Use settings" on a workflow image
            if recalled:
                last_name, last = recalled
            chosen = panels.WorkflowDialog(Gtk, workflows, last_name, last, read).run()
            if chosen is None:
                raise Failure("Paintbridge: canceled", Gimp.PDBStatusType.CANCEL)
            if recalled:
                settings.workflow_recall_used(cfg_dir)
            name, values, raw = chosen
            # GIMP keeps these as the last values: the dialog starts from them next time
            run.config.set_property("workflow", name)
            run.config.set_property("values", json.dumps(raw))
        else:
            name = run.text("workflow").strip()
            try:
                wf = workflow_form.find_workflow(workflows, name)
                raw = workflow_form.parse_values(run.text("values"))
            except (LookupError, ValueError) as exc:
                raise Failure(f"Paintbridge: {exc}")
            form = forms.fields(wf)
            values, errors = workflow_form.prepare(form, raw, read)
            if errors:
                raise Failure(f"Paintbridge: workflow {name!r} not run: {workflow_form.describe_errors(form, errors)}")
        ctl.label = f"Paintbridge: {name}"
        run.progress()
        results = ctl.run_workflow(name, values)
        return {"job": ctl.job, "workflow": name, "layers": host.place(run.image, results, f"Paintbridge {name}")}
    finally:
        run.done()


if __name__ == "__main__":
    Gimp.main(Paintbridge.__gtype__, sys.argv)

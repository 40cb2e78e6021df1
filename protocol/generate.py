"""The generate form every plug-in shows, written once: which fields each mode uses, the one seed rule, the
`generate` arguments built from a host's field values, recalled parameters back into field values, and which
field an engine error belongs beside.

Regions (a prompt per mask, SPEC §7) travel beside the fields: region_args() builds generate's `regions` from a
host's regions (masks as Pixels, uploaded by the Session like image/mask), recalled_regions() reads them back.

Field values are keyed by the names in FIELDS (the `generate` argument names, plus `lora`/`lora_weight` for a
host's single LoRA picker). Hosts keep their own widgets; they read them into such a dict and call
generate_args(), and write recalled_fields() back into them.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from . import forms
from .limits import Limits
from .pixels import round8

# ---- the seed rule -------------------------------------------------------------------------------------------
# Every host shows one seed field. A negative value (or None) means "random": the client picks the seed before
# sending, below 2**31 - 64 so that seed..seed+batch-1 fit every host's 32-bit integer field, and the host shows
# the seed that was used (JobAccepted.seed) so the image can be made again.
RANDOM = -1
SEED_MAX = 2 ** 31 - 1          # the largest seed a host's integer field holds
_RANDOM_BELOW = 2 ** 31 - 64    # the engine's own rule for a seed it picks (SPEC §7)
WIRE_SEED_MAX = 2 ** 53


def resolve_seed(seed, rng: random.Random | None = None) -> int:
    """The seed to send for a seed field's value: negative or None -> a fresh random one, else the value."""
    if seed is None or (isinstance(seed, (int, float)) and not isinstance(seed, bool) and seed < 0):
        return (rng or random).randrange(_RANDOM_BELOW)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FieldError("seed", f"seed: {seed!r} is not a whole number")
    if seed > WIRE_SEED_MAX:
        raise FieldError("seed", f"seed: at most {WIRE_SEED_MAX}")
    return seed


# ---- modes and their fields ----------------------------------------------------------------------------------
FIELDS = ("model", "prompt", "negative_prompt", "steps", "guidance", "seed", "batch", "scheduler", "schedule",
          "clip_skip", "vae", "lora", "lora_weight", "strength", "feather", "width", "height", "x", "y", "scale",
          "upscaler", "control", "reference", "refine", "refine_strength")
# Upscale's "refine with the model": a checkbox (refine) and its own strength (sent as `strength`), so the low
# strength a tiled refine wants does not share a widget with Refine's (img2img's) much higher one.
REFINE_STRENGTH = 0.3
_REFINE = ("refine", "refine_strength", "model", "prompt", "negative_prompt", "steps", "seed", "scheduler")
REGIONS = "regions"   # the field name errors about regions carry (a host's regions list/panel), not a widget value
_DIFFUSION = ("model", "prompt", "negative_prompt", "steps", "guidance", "seed", "batch", "scheduler", "schedule",
              "clip_skip", "vae", "lora", "lora_weight", "control", "reference")

# ---- control layers and image references ----------------------------------------------------------------------
# A control (ControlNet / T2I-Adapter) or reference (IP-Adapter) in a host's form is a dict:
#   {"model": name, "image": Pixels | a callable returning Pixels | a wire layer, "strength": float,
#    "start": float, "end": float, "preprocess": one of PREPROCESSORS (controls only)}
# with the image in document coordinates, like the generate image. Missing numbers take the engine's defaults.
PREPROCESSORS = ("none", "canny", "scribble", "lineart", "invert", "blur", "tile")
CONTROL_DEFAULTS = {"strength": 1.0, "start": 0.0, "end": 1.0, "preprocess": "none"}
REFERENCE_DEFAULTS = {"strength": 0.6, "start": 0.0, "end": 1.0}
CONTROL_TYPES = ("controlnet", "t2i_adapter")
REFERENCE_TYPES = ("ip_adapter",)


@dataclass(frozen=True)
class Mode:
    name: str                 # generate's "mode"
    label: str                # what the host's mode picker shows
    fields: tuple             # the form fields this mode uses (a host hides or greys out the others)
    image: bool = True        # needs the current layer / image
    mask: bool = False        # needs a mask (the selection)

    def uses(self, name: str) -> bool:
        return name in self.fields


MODES = {
    "txt2img": Mode("txt2img", "Generate", _DIFFUSION + ("width", "height", "x", "y"), image=False),
    "img2img": Mode("img2img", "Refine", _DIFFUSION + ("strength",)),
    "inpaint": Mode("inpaint", "Inpaint", _DIFFUSION + ("strength", "feather"), mask=True),
    # the image's fully transparent pixels are the area to fill
    "outpaint": Mode("outpaint", "Outpaint", _DIFFUSION + ("feather",)),
    # with `refine`: upscaled, then refined with the model in tiles at its native size
    "upscale": Mode("upscale", "Upscale", ("scale", "upscaler") + _REFINE),
}


def field_applies(mode: str, name: str, refine: bool = False) -> bool:
    """Whether a host shows (enables) form field `name` in `mode` now: the mode uses it, and Upscale's model,
    prompt, steps, seed and refine strength only while its `refine` checkbox is on."""
    m = MODES.get(mode)
    if m is None or not m.uses(name):
        return False
    return refine or mode != "upscale" or name not in _REFINE or name == "refine"


class FieldError(ValueError):
    """A value the person must fix: `field` names the form field (a FIELDS name, REGIONS, "" for the form)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def generate_args(mode: str, values: dict, *, limits: Limits | None = None, loras: list | None = None,
                  upscalers: list | None = None, source: dict | None = None, rng: random.Random | None = None,
                  samplers: list | None = None, vaes: list | None = None, models: list | None = None,
                  regions: list | None = None) -> dict:
    """`generate` arguments (without image/mask, which the Session uploads) for a host's field values.

    Only the fields `mode` uses are sent; an empty value (None, "") is left out so the engine applies its
    default (prompts are always sent, "" included); the seed follows the seed rule (the chosen one is in the result's "seed"); width/height (txt2img)
    are rounded up to multiples of 8. Other modes send no size: the engine generates at the model's native size.
    loras/upscalers/samplers/vaes (Session.loras/.upscalers/.samplers/.vaes) check a picked name against what the
    engine has; with models (Session.models) a VAE must fit the model's base, and a txt2img bigger than the
    model's native size squared asks for `hires` (first pass at the native size, then upscaled and refined in
    tiles). Upscale sends the model, prompt, steps, seed and refine_strength (as `strength`) only with `refine` on.
    regions: a host's regions for region_args() (not for upscale). Raises FieldError."""
    m = MODES.get(mode)
    if m is None:
        raise FieldError("mode", f"unknown mode {mode!r}: one of {', '.join(MODES)}")
    limits = limits or Limits()
    args: dict = {"mode": mode}
    fields = m.fields
    if mode == "upscale":
        fields = tuple(f for f in fields if f not in ("refine", "refine_strength"))
        if not values.get("refine"):
            fields = tuple(f for f in fields if f not in _REFINE)
        else:
            value = values.get("refine_strength")
            args["strength"] = REFINE_STRENGTH if value is None or value == "" else value
    for name in fields:
        value = values.get(name)
        if name in ("prompt", "negative_prompt"):   # text as typed; "" is a prompt like any other
            args[name] = "" if value is None else str(value)
            continue
        if isinstance(value, str):
            value = value.strip()
        if name in ("lora", "lora_weight", "seed", "control", "reference") or value is None or value == "":
            continue
        args[name] = value
    if "model" in fields and not args.get("model"):
        raise FieldError("model", "choose a model")
    if "seed" in fields:
        args["seed"] = resolve_seed(values.get("seed"), rng)
    for key in ("control", "reference"):
        if m.uses(key) and values.get(key):
            args[key] = steer_args(key, values[key])
    count = len(args.get("control", [])) + len(args.get("reference", []))
    if count > limits.max_controls:
        raise FieldError("control" if args.get("control") else "reference",
                         f"{count} controls and references: at most {limits.max_controls} on this engine")
    if m.uses("lora"):
        name = str(values.get("lora") or "")
        if loras is not None:
            try:
                name = forms.offered("LoRA", name, loras, "none")
            except ValueError as exc:
                raise FieldError("lora", str(exc)) from None
        args["loras"] = forms.loras_arg(name.strip(), float(values.get("lora_weight", 0.8) or 0.0))
    if "upscaler" in args and upscalers is not None:
        try:
            args["upscaler"] = forms.offered("upscaler", args["upscaler"], upscalers, "a plain resize")
        except ValueError as exc:
            raise FieldError("upscaler", str(exc)) from None
    _check_sampling(args, samplers, vaes, models)
    for name in ("steps", "batch"):
        if name in args:
            _check_int(name, args[name], 1, limits.max_steps if name == "steps" else limits.max_batch)
    if "width" in args or "height" in args:
        w, h = args.get("width"), args.get("height")
        if w is None or h is None:
            raise FieldError("width" if w is None else "height", "give both width and height")
        _check_int("width", w, 1, None)
        _check_int("height", h, 1, None)
        args["width"], args["height"] = round8(w), round8(h)
        if args["width"] * args["height"] > limits.max_pixels:
            raise FieldError("width", f"{args['width']}×{args['height']} is more than the engine's "
                                      f"{limits.max_pixels / 1e6:.1f} MP per generation")
        entry = model_entry(models, args.get("model"))
        native = native_size(entry) if entry else None   # an unknown model: no hires asked
        if native and args["width"] * args["height"] > native * native:
            args["hires"] = True
    for name in ("guidance", "strength", "scale", "feather"):
        if name in args:
            try:
                args[name] = float(args[name])
            except (TypeError, ValueError):
                raise FieldError(name, f"{name}: {args[name]!r} is not a number") from None
    if "strength" in args and not 0.0 <= args["strength"] <= 1.0:
        where = "refine_strength" if mode == "upscale" else "strength"
        raise FieldError(where, f"{where.replace('_', ' ')}: between 0 and 1")
    if regions:
        if mode == "upscale":
            raise FieldError("regions", "upscale takes no regions")
        args["regions"] = region_args(regions, args.get("prompt", ""), limits)
    if source is not None:
        args["source"] = dict(source)
    return args


def _check_sampling(args: dict, samplers: list | None, vaes: list | None, models: list | None):
    """scheduler/schedule/clip_skip/vae as the engine takes them (SPEC §7), checked against its lists when given."""
    if "scheduler" in args and samplers:
        entry = sampler_entry(samplers, args["scheduler"])
        if entry is None:
            raise FieldError("scheduler", f"the engine has no sampler {args['scheduler']!r}; it has: "
                                          f"{', '.join(str(x.get('label') or x['id']) for x in samplers)}")
        args["scheduler"] = entry["id"]
        if "schedule" in args and args["schedule"] not in schedules_for(samplers, entry["id"]):
            raise FieldError("schedule", f"the {args['schedule']} schedule does not apply to "
                                         f"{entry.get('label') or entry['id']}: choose "
                                         f"{' or '.join(schedules_for(samplers, entry['id']))}")
    if "clip_skip" in args:
        if isinstance(args["clip_skip"], str) and args["clip_skip"].isdigit():   # a text picker's value
            args["clip_skip"] = int(args["clip_skip"])
        _check_int("clip_skip", args["clip_skip"], CLIP_SKIP_MIN, CLIP_SKIP_MAX)
    if "vae" in args and vaes is not None:
        try:
            forms.offered("VAE", args["vae"], vaes, "the model's own")
        except ValueError as exc:
            raise FieldError("vae", str(exc)) from None
        if models is not None and args["vae"] not in [v["name"] for v in vaes_for(vaes, models, args.get("model"))]:
            base = model_entry(models, args.get("model")).get("base")
            raise FieldError("vae", f"the VAE {args['vae']!r} is not for {base or 'this'} models: choose one for "
                                    f"{args.get('model')!r} or the model's own")


def region_args(regions: list, base_prompt: str = "", limits: Limits | None = None) -> list[dict]:
    """generate's `regions` for a host's regions, bottom of the layer stack first (a higher region takes its
    area from the ones below). Each: {"prompt", "negative_prompt" (optional), "mask"}, the mask a gray8 Pixels in
    document coordinates (255 = this region; from the layer's alpha) or a zero-argument callable returning one,
    which the Session calls on its worker thread and uploads like image/mask. FieldError("regions") names the
    region (0-based) for what the engine would refuse anyway: too many, an empty prompt with no base prompt."""
    limits = limits or Limits()
    if len(regions) > limits.max_regions:
        raise FieldError("regions", f"{len(regions)} regions: at most {limits.max_regions} on this engine")
    out = []
    for i, r in enumerate(regions):
        prompt = str(r.get("prompt") or "")
        if not prompt.strip() and not str(base_prompt or "").strip():
            raise FieldError("regions", f"region {i}: its prompt is empty and there is no base prompt")
        mask = r.get("mask")
        if mask is None:
            raise FieldError("regions", f"region {i}: no mask")
        if getattr(mask, "format", "gray8") != "gray8":
            raise FieldError("regions", f"region {i}: its mask must be gray8, not {mask.format}")
        item = {"prompt": prompt, "mask": mask}
        if r.get("negative_prompt"):
            item["negative_prompt"] = str(r["negative_prompt"])
        out.append(item)
    return out


def recalled_regions(values: dict | None) -> list[dict]:
    """The regions of recalled values (Recalled.values / forms.recalled), bottom first: [{"prompt",
    "negative_prompt", "mask"}] with mask the engine's layer reference ({sha256, w, h, format, x, y}: match it to
    a host layer by hash or fetch it with blob.get). [] when the image had none."""
    out = []
    for r in (values or {}).get("regions") or []:
        if isinstance(r, dict) and isinstance(r.get("mask"), dict):
            out.append({"prompt": str(r.get("prompt") or ""), "negative_prompt": str(r.get("negative_prompt") or ""),
                        "mask": dict(r["mask"])})
    return out


def steer_args(key: str, items: list) -> list[dict]:
    """generate's `control` or `reference` list from a host's entries (see PREPROCESSORS above): checked like the
    engine checks them; images are passed through for the Session to upload. Raises FieldError(key, ...)."""
    what = "control" if key == "control" else "reference"
    out = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise FieldError(key, f"{what} {n}: not a {what} entry")
        model = str(item.get("model") or "").strip()
        if not model:
            raise FieldError(key, f"{what} {n}: choose a model")
        if item.get("image") is None:
            raise FieldError(key, f"{what} {n}: choose a layer")
        entry = {"model": model, "image": item["image"]}
        for name in ("strength", "start", "end"):
            value = item.get(name)
            if value is None or value == "":
                continue
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise FieldError(key, f"{what} {n}: {name} {value!r} is not a number") from None
            hi = 2.0 if name == "strength" else 1.0
            if not 0.0 <= value <= hi:
                raise FieldError(key, f"{what} {n}: {name} between 0 and {hi:g}")
            entry[name] = value
        defaults = CONTROL_DEFAULTS if key == "control" else REFERENCE_DEFAULTS
        if entry.get("start", defaults["start"]) > entry.get("end", defaults["end"]):
            raise FieldError(key, f"{what} {n}: start is after end")
        if key == "control" and item.get("preprocess") not in (None, ""):
            if item["preprocess"] not in PREPROCESSORS:
                raise FieldError(key, f"{what} {n}: preprocess {item['preprocess']!r} is not one of "
                                      f"{', '.join(PREPROCESSORS)}")
            entry["preprocess"] = item["preprocess"]
        out.append(entry)
    return out


def recalled_steering(items, find) -> tuple[list[dict], list[str]]:
    """Recalled `control`/`reference` entries (Recalled.values / recalled_fields) with each image replaced by the
    host's layer: `find(layer)` gets the recorded wire layer ({sha256, w, h, x, y, name}) and returns the host's
    layer (or its id), or None when the document no longer has it. (entries kept, notes for the ones dropped)."""
    kept, notes = [], []
    for item in items or []:
        if not isinstance(item, dict):
            continue
        layer = find(item.get("image") or {})
        if layer is None:
            image = item.get("image") or {}
            notes.append(f"{item.get('model')}: its layer {image.get('name') or str(image.get('sha256', ''))[:12]} "
                         "is not in this document")
            continue
        kept.append({**item, "image": layer})
    return kept, notes


def _check_int(name: str, value, lo: int, hi: int | None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(name, f"{name}: {value!r} is not a whole number")
    if value < lo:
        raise FieldError(name, f"{name}: at least {lo}")
    if hi is not None and value > hi:
        raise FieldError(name, f"{name}: at most {hi} on this engine")


# ---- recall: an image's parameters back into field values ------------------------------------------------------
_SUMMARY_KEYS = ("prompt", "negative_prompt", "seed", "steps", "guidance", "model")


def recalled_fields(values: dict | None, summary: dict | None = None,
                    seed_max: int = SEED_MAX) -> tuple[dict, list[str]]:
    """(field values, notes) for a Recalled update's `values` (forms.recalled). A graph or workflow image has
    no generate values: its summary's prompt, seed, steps, guidance and model are used. Notes say what a host
    field cannot hold (an unknown mode, a seed over seed_max) and was left out."""
    values = dict(values or {})
    notes: list[str] = []
    if not values and summary:
        values = {k: summary[k] for k in _SUMMARY_KEYS if summary.get(k) is not None}
        if values:
            notes.append("made by a workflow or graph: only its prompt, seed, steps, guidance and model")
    out: dict = {}
    mode = values.pop("mode", None)
    if mode in MODES:
        out["mode"] = mode
    elif mode is not None:
        notes.append(f"mode {mode!r} is not one of this form's")
    if "model" in values:   # first: a host whose model picker refills defaults (size, VAE) does so before the rest
        out["model"] = values.pop("model")
    if "loras" in values or (mode is not None and mode != "upscale"):
        out["lora"], out["lora_weight"] = forms.recalled_lora(values)
    if mode is not None and mode != "upscale" and not values.get("vae"):
        out["vae"] = ""   # made with the model's own VAE: the picker goes back to it
    values.pop("loras", None)
    if mode == "upscale":   # refined with a model: its strength goes back into the refine strength
        out["refine"] = bool(out.get("model"))
        strength = values.pop("strength", None)
        if out["refine"] and strength is not None:
            out["refine_strength"] = strength
    for name, value in values.items():
        if name not in FIELDS:
            continue
        if name == "seed" and isinstance(value, int) and not 0 <= value <= seed_max:
            notes.append(f"seed {value} does not fit the seed field (0…{seed_max})")
            continue
        out[name] = value
    return out, notes


# ---- errors beside the field they are about --------------------------------------------------------------------
_WIRE_TO_FIELD = {"loras": "lora", "image": "", "mask": "", "recall": "", "source": "",   # control.0.x -> control
                  "regions": "regions"}


def error_field(details) -> str:
    """The form field an error reply is about: workflows.run's details.param (a workflow field), or the first
    bad `generate` argument of a bad_request (details.fields[0].field, e.g. "loras.0.weight" -> "lora").
    "" when the error is about the request as a whole."""
    if not isinstance(details, dict):
        return ""
    if isinstance(details.get("param"), str):
        return details["param"]
    items = details.get("fields")
    if isinstance(items, list) and items and isinstance(items[0], dict):
        where = str(items[0].get("field") or "").split(".")[0]
        where = _WIRE_TO_FIELD.get(where, where)
        return where if where in FIELDS or where == REGIONS else ""
    if isinstance(details.get("field"), str):
        where = details["field"].split(".")[0] if details["field"].startswith(REGIONS + ".") else details["field"]
        where = _WIRE_TO_FIELD.get(where, where)
        return where if where in FIELDS or where == REGIONS else ""
    return ""


# ---- the engine's pickers: sampler, schedule, clip skip, VAE; defaults that follow the model ---------------------
# What a host offers comes from the engine: nodes.list's samplers (id, A1111 label, the schedules each takes) and
# models.list's VAEs and main models (base, native_size); the Session keeps them (samplers, vaes, models).
DEFAULT_SCHEDULER = "euler"      # the engine's defaults (SPEC §7)
DEFAULT_SCHEDULE = "default"
CLIP_SKIP_MIN, CLIP_SKIP_MAX = 1, 12
NATIVE_BY_BASE = {"sd1": 512, "sd2": 512, "sdxl": 1024, "flux": 1024}   # when models.list gives no native_size
SCHEDULE_LABELS = {"default": "Default (the model's)", "karras": "Karras", "trailing": "Trailing (sgm_uniform)"}
DEFAULTS = {"scheduler": DEFAULT_SCHEDULER, "schedule": DEFAULT_SCHEDULE, "clip_skip": 1, "vae": ""}


@dataclass(frozen=True)
class Choice:
    value: str     # what is sent ("" = the engine's default / the model's own)
    label: str     # what the picker shows


def model_entry(models: list | None, name: str | None) -> dict:
    """The models.list entry of a main model ({} if unknown)."""
    return next((m for m in models or [] if isinstance(m, dict) and m.get("name") == name), {})


def sampler_entry(samplers: list | None, name: str | None) -> dict | None:
    """The nodes.list sampler for an id or its label (as a recalled or typed value may be), or None."""
    key = str(name or "").strip().lower()
    return next((x for x in samplers or [] if key in (str(x.get("id", "")).lower(),
                                                      str(x.get("label", "")).lower())), None)


def scheduler_choices(samplers: list | None) -> list[Choice]:
    """The sampler picker: the engine's samplers by A1111 label (empty until the engine said)."""
    return [Choice(x["id"], x.get("label") or x["id"]) for x in samplers or []]


def schedules_for(samplers: list | None, scheduler: str | None) -> list[str]:
    """The schedules a sampler takes (its nodes.list entry's; every schedule when the engine gives none)."""
    entry = sampler_entry(samplers, scheduler)
    if entry is not None and entry.get("schedules"):
        return list(entry["schedules"])
    return list(SCHEDULE_LABELS)


def schedule_choices(samplers: list | None, scheduler: str | None) -> list[Choice]:
    """The schedule picker for the chosen sampler."""
    return [Choice(x, SCHEDULE_LABELS.get(x, x)) for x in schedules_for(samplers, scheduler)]


def fit_schedule(samplers: list | None, scheduler: str | None, schedule: str | None) -> str:
    """The schedule to keep when the sampler changes: the same one if it still applies, else the sampler's first."""
    ok = schedules_for(samplers, scheduler)
    return schedule if schedule in ok else ok[0]


def clip_skip_choices() -> list[Choice]:
    return [Choice(str(n), "1 (off)" if n == 1 else str(n)) for n in range(CLIP_SKIP_MIN, CLIP_SKIP_MAX + 1)]


def vaes_for(vaes: list | None, models: list | None, model: str | None) -> list[dict]:
    """The VAEs that fit a model (same base; an sd1 VAE also serves sd2, as the engine allows; all of them when
    the model's base is unknown)."""
    base = model_entry(models, model).get("base")
    fits = {base, "sd1"} if base == "sd2" else {base}
    return [v for v in vaes or [] if not base or not v.get("base") or v["base"] in fits]


def vae_choices(vaes: list | None, models: list | None, model: str | None) -> list[Choice]:
    """The VAE picker: the model's own first, then the VAEs that fit it."""
    return [Choice("", "The model's own")] + [Choice(v["name"], v["name"]) for v in vaes_for(vaes, models, model)]


def native_size(entry: dict | None) -> int:
    """A model's native size: models.list's native_size, else by its base."""
    entry = entry or {}
    size = entry.get("native_size")
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    return NATIVE_BY_BASE.get(entry.get("base") or "sd1", 512)


def generation_size(w: int, h: int, native: int, max_pixels: int) -> tuple[int, int]:
    """(w, h) scaled to about native*native pixels, aspect kept, multiples of 8: the engine's own rule for the
    modes that send an image, for a host that renders txt2img into a region (GIMP's selection)."""
    scale = (min(native * native, max_pixels) / (w * h)) ** 0.5
    return max(8, int(round(w * scale / 8)) * 8), max(8, int(round(h * scale / 8)) * 8)


def render_size(w: int, h: int, native: int, max_pixels: int) -> tuple[int, int, bool]:
    """(width, height, hires) Generate sends for a w x h area: up to the model's native area, that many pixels
    at the area's aspect (generation_size); above it, the area itself (within the pixel budget) with hires, so
    the engine renders at the native size first and refines the enlargement in tiles."""
    if w * h <= native * native:
        return (*generation_size(w, h, native, max_pixels), False)
    gw, gh = generation_size(w, h, math.isqrt(min(w * h, max_pixels)), max_pixels)
    return gw, gh, gw * gh > native * native


def follow_model(values: dict, model: str, *, models: list | None, vaes: list | None = None,
                 loras: list | None = None) -> dict:
    """The field values that change when the person picks `model`: width/height to its native size, and a VAE or
    LoRA that does not fit it back to none. A host writes them into its widgets (Use settings writes the recalled
    size after the model, so a recalled size wins)."""
    entry = model_entry(models, model)
    n = native_size(entry)
    out = {"width": n, "height": n}
    if values.get("vae") and vaes is not None and \
            values["vae"] not in [v["name"] for v in vaes_for(vaes, models, model)]:
        out["vae"] = ""
    if values.get("lora") and loras is not None and \
            values["lora"] not in [lo["name"] for lo in forms.loras_for(loras, models or [], model)]:
        out["lora"] = ""
    return out

"""The generate form every plug-in shows, written once: which fields each mode uses, the one seed rule, the
`generate` arguments built from a host's field values, recalled parameters back into field values, and which
field an engine error belongs beside.

Field values are keyed by the names in FIELDS (the `generate` argument names, plus `lora`/`lora_weight` for a
host's single LoRA picker). Hosts keep their own widgets; they read them into such a dict and call
generate_args(), and write recalled_fields() back into them.
"""

from __future__ import annotations

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
FIELDS = ("model", "prompt", "negative_prompt", "steps", "guidance", "seed", "batch", "scheduler", "lora",
          "lora_weight", "strength", "feather", "width", "height", "x", "y", "scale", "upscaler", "refine",
          "refine_strength")
# Upscale's "refine with the model": a checkbox (refine) and its own strength (sent as `strength`), so the low
# strength a tiled refine wants does not share a widget with Refine's (img2img's) much higher one.
REFINE_STRENGTH = 0.3
_REFINE = ("refine", "refine_strength", "model", "prompt", "negative_prompt", "steps", "seed", "scheduler")
_DIFFUSION = ("model", "prompt", "negative_prompt", "steps", "guidance", "seed", "batch", "scheduler", "lora",
              "lora_weight")


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
    """A value the person must fix: `field` names the form field (a FIELDS name, "" for the form)."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def generate_args(mode: str, values: dict, *, limits: Limits | None = None, loras: list | None = None,
                  upscalers: list | None = None, source: dict | None = None, rng: random.Random | None = None,
                  models: list | None = None) -> dict:
    """`generate` arguments (without image/mask, which the Session uploads) for a host's field values.

    Only the fields `mode` uses are sent; an empty value (None, "") is left out so the engine applies its
    default (prompts are always sent, "" included); the seed follows the seed rule (the chosen one is in the result's "seed"); width/height (txt2img)
    are rounded up to multiples of 8. Other modes send no size: the engine generates at the model's native size.
    loras/upscalers (Session.loras/.upscalers) check a picked name against what the engine has. Upscale sends
    the model, prompt, steps, seed and refine_strength (as `strength`) only with `refine` on. models
    (Session.models): a txt2img bigger than the model's native_size squared asks for `hires` (first pass at the
    native size, then upscaled and refined in tiles). Raises FieldError."""
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
        if name in ("lora", "lora_weight", "seed") or value is None or value == "":
            continue
        args[name] = value
    if "model" in fields and not args.get("model"):
        raise FieldError("model", "choose a model")
    if "seed" in fields:
        args["seed"] = resolve_seed(values.get("seed"), rng)
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
        native = native_size(models, args.get("model"))
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
    if source is not None:
        args["source"] = dict(source)
    return args


def native_size(models: list | None, name: str | None) -> int | None:
    """A main model's native image side from models.list (Session.models), None when unknown."""
    for entry in models or ():
        if isinstance(entry, dict) and entry.get("name") == name:
            size = entry.get("native_size")
            return size if isinstance(size, int) and size > 0 else None
    return None


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
    if "loras" in values or (mode is not None and mode != "upscale"):
        out["lora"], out["lora_weight"] = forms.recalled_lora(values)
    values.pop("loras", None)
    if mode == "upscale":   # refined with a model: its strength goes back into the refine strength
        out["refine"] = bool(values.get("model"))
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
_WIRE_TO_FIELD = {"loras": "lora", "image": "", "mask": "", "recall": "", "source": ""}


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
        return where if where in FIELDS else ""
    if isinstance(details.get("field"), str):
        where = _WIRE_TO_FIELD.get(details["field"], details["field"])
        return where if where in FIELDS else ""
    return ""

"""Host-independent forms: workflow parameters (SPEC §11) and recalled generate arguments (SPEC §10).

A workflow's exposed parameters become a list of Field; each host draws one native widget per Field.widget
(Qt in Krita, bpy properties in Blender, Gtk in GIMP) and gives the raw widget values back to `collect`, which
checks them exactly as the engine will, so the person sees a mistake next to the field before anything is sent.
Kept free of any host import so all three plug-ins bundle the same code and tests run it against a real engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Field.widget values: what a host draws.
CHOICE = "choice"        # drop-down over Field.choices
INT = "int"              # spin box
FLOAT = "float"          # slider / spin box with Field.step
TEXT = "text"            # one-line entry
TEXTAREA = "textarea"    # multi-line entry
CHECK = "check"          # check box
LAYER = "layer"          # "current layer" picker: the host sends rgba8 Pixels
SELECTION = "selection"  # the selection / a mask image: the host sends gray8 Pixels


@dataclass
class Field:
    name: str
    type: str                   # int | float | str | bool | image | mask
    label: str
    description: str = ""
    default: Any = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: list = field(default_factory=list)
    multiline: bool = False

    @property
    def widget(self) -> str:
        if self.choices:
            return CHOICE
        return {"int": INT, "float": FLOAT, "bool": CHECK, "image": LAYER, "mask": SELECTION}.get(
            self.type, TEXTAREA if self.multiline else TEXT)

    @property
    def is_layer(self) -> bool:
        return self.type in ("image", "mask")


def fields(workflow: dict) -> list[Field]:
    """The form of a workflow as returned by workflows.list / workflows.get."""
    out = []
    for p in workflow.get("params") or []:
        default = p.get("default")
        out.append(Field(
            name=p["name"], type=p["type"], label=p.get("label") or p["name"].replace("_", " ").capitalize(),
            description=p.get("description") or "", default=default,
            required=bool(p.get("required", default is None)), min=p.get("min"), max=p.get("max"),
            step=p.get("step"), choices=list(p.get("choices") or []), multiline=bool(p.get("multiline"))))
    return out


def coerce(f: Field, raw: Any) -> Any:
    """One widget value -> the value workflows.run takes. Raises ValueError with a message for the person.
    Accepts typed values (Qt, bpy) and text (entries); layers (Pixels) pass through untouched."""
    if f.is_layer:
        if raw is None:
            raise ValueError(f"{f.label}: choose a {'layer' if f.type == 'image' else 'mask'}")
        return raw
    if isinstance(raw, str) and (f.type != "str" or f.required):
        if raw.strip() == "":
            raw = None
        elif f.type != "str":
            raw = raw.strip()
    if raw is None:
        if f.required:
            raise ValueError(f"{f.label} is required")
        return None
    try:
        if f.type == "bool":
            value = raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes", "on")
        elif f.type == "int":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            value = int(raw) if not isinstance(raw, str) else int(raw, 10)
        elif f.type == "float":
            value = float(raw)
        else:
            value = str(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{f.label}: {raw!r} is not a{'n' if f.type == 'int' else ''} {f.type}") from None
    if f.choices and value not in f.choices:
        raise ValueError(f"{f.label}: choose one of {', '.join(map(str, f.choices))}")
    if f.type in ("int", "float"):
        if f.min is not None and value < f.min:
            raise ValueError(f"{f.label}: at least {f.min}")
        if f.max is not None and value > f.max:
            raise ValueError(f"{f.label}: at most {f.max}")
    return value


def collect(form: list[Field], raw: dict) -> tuple[dict, dict]:
    """Raw widget values by name -> (values for workflows.run, {name: message} for each field in error).
    A field left empty that has a default is omitted so the engine applies the default."""
    values, errors = {}, {}
    for f in form:
        try:
            value = coerce(f, raw.get(f.name))
        except ValueError as exc:
            errors[f.name] = str(exc)
            continue
        if value is not None:
            values[f.name] = value
    return values, errors


# ---- recall: refill a host's generate form from an image's parameters -------------------------------------
RECALLED = ("mode", "model", "prompt", "negative_prompt", "seed", "steps", "guidance", "strength", "width",
            "height", "scheduler", "schedule", "clip_skip", "vae", "batch", "scale", "upscaler", "loras", "control",
            "reference", "regions")
UPSCALE_ONLY = ("scale", "upscaler")   # stored with every request (defaults), meaningful for upscales only


def recalled(params: dict | None) -> dict:
    """The form values in generate `params` (images.get / images.import), without layers or placement: what a
    host copies into its own prompt/seed/steps widgets. Empty for graph and workflow images (params null)."""
    if not params:
        return {}
    keys = RECALLED if params.get("mode") == "upscale" else [k for k in RECALLED if k not in UPSCALE_ONLY]
    return {k: params[k] for k in keys if params.get(k) not in (None, [])}


def offered(kind: str, name: str, entries: list[dict], empty: str) -> str:
    """A host's text or picker value for an optional model (kind "LoRA", "upscaler"), stripped: "" or the name of
    one of the engine's entries (Session.loras / .upscalers). ValueError naming what the engine has otherwise;
    `empty` says what leaving it empty means."""
    name = name.strip()
    names = [m["name"] for m in entries]
    if name and name not in names:
        raise ValueError(f"the engine has no {kind} {name!r}; it has: {', '.join(names) or 'none'} "
                         f"(leave it empty for {empty})")
    return name


def loras_arg(name: str, weight: float) -> list[dict]:
    """generate's "loras" for a host's single LoRA picker ("" = none)."""
    return [{"model": name, "weight": float(weight)}] if name else []


def loras_for(loras: list[dict], models: list[dict], model: str) -> list[dict]:
    """The LoRAs that fit `model` (same base; all of them when its base is unknown), for a host's LoRA picker."""
    base = next((m.get("base") for m in models if m.get("name") == model), None)
    return [lo for lo in loras if not base or not lo.get("base") or lo["base"] == base]


def recalled_lora(values: dict) -> tuple[str, float]:
    """The first LoRA of recalled values as (name, weight) for a single LoRA picker; ("", 0.8) when none."""
    loras = values.get("loras") or []
    first = loras[0] if loras and isinstance(loras[0], dict) else {}
    return str(first.get("model") or ""), float(first.get("weight", 0.8)) if first else 0.8


def recalled_workflow(summary: dict | None) -> tuple[str, dict] | None:
    """(workflow name, values) for an image a workflow made (images.get `meta.workflow`), else None: a host
    selects that workflow and fills its form with the values (layer values are references to the engine's
    copies, which a host usually replaces with its own current layer)."""
    wf = ((summary or {}).get("meta") or {}).get("workflow")
    if not wf or not wf.get("name"):
        return None
    return wf["name"], dict(wf.get("values") or {})

"""The Run workflow form (GIMP-independent): which Gtk widget each protocol.forms Field becomes, and turning the
values a script or the dialog gives into checked workflows.run values (errors per field).

No `gi` import here (tested without GIMP). The schema -> Field mapping and the value checks are the shared
protocol.forms; this module adds only what is GIMP's: concrete widget settings (Gtk adjustments need finite
bounds and a digit count), and image/mask parameters named by source ("active" layer, "selection").
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable

from protocol import forms

ACTIVE = "active"         # an image parameter's value: the active drawable
SELECTION = "selection"   # a mask parameter's value: the selection
INT_BOUNDS = (-(2 ** 31), 2 ** 31 - 1)
FLOAT_BOUNDS = (-1e9, 1e9)


def _decimals(x) -> int:
    if x is None or float(x).is_integer():
        return 0
    text = repr(float(x))
    if "e" in text:
        return 6
    return min(6, len(text.split(".")[1]))


def widget_spec(f: forms.Field, value=None) -> dict:
    """One field -> what the GIMP dialog draws: {"widget", "name", "label", "tooltip", "required", ...}:
      choice:   items (labels), values (the choices), active (index of the default, -1 for none)
      int/float: min, max, step, page, digits, value (None: the entry starts empty — a required field)
      text/textarea: value (str);  check: value (bool)
      layer/selection: source ("active" / "selection"), text (what the dialog says it will send)
    `value` (e.g. the last run's) replaces the default where it is one the field accepts.
    """
    if value is not None and not f.is_layer:
        try:
            f = replace(f, default=forms.coerce(f, value))
        except ValueError:
            pass
    spec = {"widget": f.widget, "name": f.name, "label": f.label, "tooltip": f.description or "",
            "required": f.required}
    if f.widget == forms.CHOICE:
        spec["values"] = list(f.choices)
        spec["items"] = [str(c) for c in f.choices]
        spec["active"] = f.choices.index(f.default) if f.default in f.choices else -1
    elif f.widget in (forms.INT, forms.FLOAT):
        is_int = f.widget == forms.INT
        lo, hi = INT_BOUNDS if is_int else FLOAT_BOUNDS
        lo = lo if f.min is None else f.min
        hi = hi if f.max is None else f.max
        step = f.step or (1 if is_int else 0.1)
        if is_int:
            lo, hi, step = int(lo), int(hi), max(1, int(step))
        spec.update(min=lo, max=hi, step=step, page=step * 10,
                    digits=0 if is_int else max(1, _decimals(step), _decimals(f.default)),
                    value=f.default)
    elif f.widget in (forms.TEXT, forms.TEXTAREA):
        spec["value"] = "" if f.default is None else str(f.default)
    elif f.widget == forms.CHECK:
        spec["value"] = bool(f.default)
    elif f.widget == forms.LAYER:
        spec.update(source=ACTIVE, text="the active layer")
    elif f.widget == forms.SELECTION:
        spec.update(source=SELECTION, text="the selection (over the active layer)")
    return spec


def form_specs(workflow: dict, initial: dict | None = None) -> tuple[list[forms.Field], list[dict]]:
    """The workflow's Fields and their widget specs; `initial` (name -> raw value, e.g. the last run's) prefills."""
    form = forms.fields(workflow)
    initial = initial or {}
    return form, [widget_spec(f, initial.get(f.name)) for f in form]


def find_workflow(workflows: list[dict], name: str) -> dict:
    for wf in workflows:
        if wf.get("name") == name:
            return wf
    names = ", ".join(sorted(w.get("name", "?") for w in workflows)) or "none saved yet"
    raise LookupError(f"no workflow named {name!r} (yours: {names})")


def parse_values(text: str | None) -> dict:
    """The `values` argument: a JSON object string ("" = no values)."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"values is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError('values must be a JSON object, like {"steps": 4, "source": "active"}')
    return data


def prepare(form: list[forms.Field], raw: dict, read: Callable[[str], object]) -> tuple[dict, dict]:
    """Raw values (a script's JSON, or the dialog's widget values) -> (workflows.run values, {name: message}).

    Image parameters take "active" and mask parameters "selection"; `read(source)` returns the host's Pixels for
    it, or None when there is nothing to read (no active layer, empty selection). Names the workflow does not have
    are errors too (the engine would refuse the run). Nothing is read for a source no parameter asks for."""
    by_name = {f.name: f for f in form}
    errors: dict[str, str] = {}
    for name in raw:
        if name not in by_name:
            errors[name] = f"{name}: this workflow has no such parameter ({', '.join(by_name) or 'it has none'})"
    values_in = {k: v for k, v in raw.items() if k in by_name}
    for f in form:
        if not f.is_layer:
            continue
        want = ACTIVE if f.type == "image" else SELECTION
        if values_in.get(f.name) is None:
            if f.required:
                errors[f.name] = f'{f.label} is required: give "{want}"'
            continue
        given = values_in[f.name]
        if given != want:
            errors[f.name] = f'{f.label}: give "{want}" ({"the active layer" if want == ACTIVE else "the selection"})'
            values_in[f.name] = None
            continue
        px = read(want)
        if px is None:
            errors[f.name] = (f"{f.label}: there is no active layer" if want == ACTIVE
                              else f"{f.label}: the selection is empty: select an area first")
        values_in[f.name] = px
    values, form_errors = forms.collect(form, values_in)
    for name, message in form_errors.items():
        errors.setdefault(name, message)
    return values, errors


def describe_errors(form: list[forms.Field], errors: dict) -> str:
    """All errors in form order (unknown names last), one sentence."""
    order = [f.name for f in form if f.name in errors] + sorted(n for n in errors if n not in {f.name for f in form})
    return "; ".join(errors[n] for n in order)

"""A saved workflow's form in Blender: one property-group row per protocol.forms.Field, drawn with the native
widget for its kind, and read back into the values workflows.run takes (checked by forms.collect first)."""

from __future__ import annotations

import json

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, \
    StringProperty

from ._vendor.protocol import forms

from . import host

INT_MIN, INT_MAX = -2 ** 31, 2 ** 31 - 1
_CHOICE_ITEMS: dict = {}   # choices_json -> enum items; Blender needs the strings kept alive


def _choice_items(self, context):
    key = self.choices_json
    items = _CHOICE_ITEMS.get(key)
    if items is None:
        try:
            choices = json.loads(self.choices_json or "[]")
        except ValueError:
            choices = []
        items = [("-", "(choose)", "No value: required fields must be chosen")]
        items += [(str(i), str(v), "") for i, v in enumerate(choices)]
        items = _CHOICE_ITEMS[key] = items
    return items


class PaintbridgeField(bpy.types.PropertyGroup):
    """One row of a workflow form (name = the parameter name); the widget kind says which value slot is used."""
    label: StringProperty(name="Label")
    widget: StringProperty(name="Widget")   # forms.CHOICE / INT / FLOAT / TEXT / TEXTAREA / CHECK / LAYER / SELECTION
    ftype: StringProperty(name="Type")
    description: StringProperty(name="Description")
    required: BoolProperty(name="Required")
    int_value: IntProperty(name="Value")
    float_value: FloatProperty(name="Value", precision=3, step=10)
    str_value: StringProperty(name="Value")
    bool_value: BoolProperty(name="Value")
    choice: EnumProperty(name="Value", items=_choice_items)
    choices_json: StringProperty(name="Choices", default="[]")
    image: PointerProperty(name="Image", type=bpy.types.Image)
    has_min: BoolProperty()
    min_value: FloatProperty()
    has_max: BoolProperty()
    max_value: FloatProperty()
    step: FloatProperty()
    error: StringProperty(name="Error")


class PaintbridgeWorkflowForm(bpy.types.PropertyGroup):
    workflow: StringProperty(name="Workflow", default="")
    description: StringProperty(name="Description", default="")
    params_json: StringProperty(default="[]")   # the parameters the rows were built from
    fields: CollectionProperty(type=PaintbridgeField)
    error: StringProperty(name="Error", default="")


def params_json(wf: dict) -> str:
    return json.dumps(wf.get("params") or [], sort_keys=True)


def build_form(form, wf: dict):
    """(Re)build the scene's workflow form from the workflow's parameters: one row per forms.Field."""
    form.fields.clear()
    form.workflow, form.description = wf["name"], wf.get("description") or ""
    form.params_json, form.error = params_json(wf), ""
    for f in forms.fields(wf):
        it = form.fields.add()
        it.name, it.label, it.widget, it.ftype = f.name, f.label, f.widget, f.type
        it.description, it.required = f.description, f.required
        it.has_min, it.min_value = f.min is not None, f.min if f.min is not None else 0.0
        it.has_max, it.max_value = f.max is not None, f.max if f.max is not None else 0.0
        it.step = f.step or 0.0
        it.choices_json = json.dumps(f.choices)
        d = f.default
        if f.widget == forms.CHOICE:
            it.choice = str(f.choices.index(d)) if d in f.choices else "-"
        elif f.type == "int" and d is not None:
            it.int_value = max(INT_MIN, min(INT_MAX, int(d)))
        elif f.type == "float" and d is not None:
            it.float_value = float(d)
        elif f.type == "str":
            it.str_value = "" if d is None else str(d)
        elif f.type == "bool":
            it.bool_value = bool(d)


def fill_form(form, values: dict) -> list[str]:
    """Put typed values (as workflows.run took them) into the form's rows; image and mask rows are left alone."""
    filled = []
    for it in form.fields:
        if it.name not in values or it.widget in (forms.LAYER, forms.SELECTION) or values[it.name] is None:
            continue
        v = values[it.name]
        try:
            if it.widget == forms.CHOICE:
                choices = json.loads(it.choices_json)
                if v not in choices:
                    continue
                it.choice = str(choices.index(v))
            elif it.widget == forms.INT:
                it.int_value = max(INT_MIN, min(INT_MAX, int(v)))
            elif it.widget == forms.FLOAT:
                it.float_value = float(v)
            elif it.widget in (forms.TEXT, forms.TEXTAREA):
                it.str_value = str(v)
            elif it.widget == forms.CHECK:
                it.bool_value = bool(v)
        except (TypeError, ValueError):
            continue
        filled.append(it.name)
    return filled


def form_fields(form) -> list:
    return forms.fields({"params": json.loads(form.params_json or "[]")})


def _raw_value(f, it, active_image, layer_size):
    """What the row's widget holds, as forms.collect takes it. Image and mask rows give a Deferred: its pixels are
    copied now and converted on the session's worker thread."""
    w = f.widget
    if w == forms.CHOICE:
        if it.choice in ("", "-"):
            return None
        return json.loads(it.choices_json)[int(it.choice)]
    if w == forms.INT:
        return it.int_value
    if w == forms.FLOAT:   # FloatProperty is single precision: 0.3 would arrive as 0.30000001192…
        return float(f"{it.float_value:.7g}")
    if w in (forms.TEXT, forms.TEXTAREA):
        return it.str_value
    if w == forms.CHECK:
        return it.bool_value
    if w == forms.LAYER:
        img = it.image or active_image
        return host.Deferred(host.Snapshot(img).pixels) if img is not None else None
    if w == forms.SELECTION:
        img = it.image
        if img is None:
            return None
        size = layer_size or tuple(img.size)
        if tuple(img.size) != tuple(size):
            raise ValueError(f"mask {img.name!r} is {img.size[0]}x{img.size[1]}, the image is {size[0]}x{size[1]}")
        snap = host.Snapshot(img)
        return host.Deferred(lambda: snap.mask(size))
    raise ValueError(f"unknown widget {w!r}")


def collect_form(form, active_image=None) -> tuple[dict, dict]:
    """(values for workflows.run, {field name: message}); the messages are also put on the rows."""
    fl = form_fields(form)
    rows = {it.name: it for it in form.fields}
    layer_size = None   # a mask must match the size of the (first) image it goes with
    for f in fl:
        it = rows.get(f.name)
        img = (it.image or active_image) if it is not None and f.widget == forms.LAYER else None
        if img is not None:
            layer_size = tuple(img.size)
            break
    raw, errors = {}, {}
    for f in fl:
        it = rows.get(f.name)
        if it is None:
            errors[f.name] = f"{f.label}: not in the form (choose the workflow again)"
            continue
        try:
            raw[f.name] = _raw_value(f, it, active_image, layer_size)
        except ValueError as exc:
            errors[f.name] = f"{f.label}: {exc}"
    values, more = forms.collect([f for f in fl if f.name not in errors], raw)
    errors.update(more)
    for it in form.fields:
        it.error = errors.get(it.name, "")
    form.error = f"Fix {len(errors)} field{'s' if len(errors) > 1 else ''} first" if errors else ""
    return values, errors


def refused(form, message: str, param: str):
    """The engine refused a run's values: its message on the field it names, and on the form."""
    row = next((it for it in form.fields if it.name == param), None) if param else None
    if row is not None:
        row.error = message
    form.error = message


def _range_text(it) -> str:
    if not (it.has_min or it.has_max):
        return ""
    fmt = (lambda v: str(int(v))) if it.widget == forms.INT else (lambda v: f"{v:g}")
    lo = fmt(it.min_value) if it.has_min else "…"
    hi = fmt(it.max_value) if it.has_max else "…"
    return f"{lo} – {hi}"


def draw_field(col, it, active_image):
    """One row's native widget, its description/range and its error."""
    label = it.label + (" *" if it.required else "")
    w = it.widget
    box = col.column(align=True)
    if w == forms.CHOICE:
        box.prop(it, "choice", text=label)
    elif w == forms.INT:
        box.prop(it, "int_value", text=label)
    elif w == forms.FLOAT:
        box.prop(it, "float_value", text=label)
    elif w == forms.TEXT:
        box.prop(it, "str_value", text=label)
    elif w == forms.TEXTAREA:   # Blender has no multi-line text field: a full-width line under the label
        box.label(text=label)
        box.prop(it, "str_value", text="")
    elif w == forms.CHECK:
        box.prop(it, "bool_value", text=label)
    elif w == forms.LAYER:
        box.prop(it, "image", text=label)
        if it.image is None:
            box.label(text=f"empty: the active image ({active_image.name if active_image else 'none'})")
    elif w == forms.SELECTION:
        box.prop(it, "image", text=label)
        box.label(text="mask image: white = generate here")
    rng = _range_text(it)
    if it.description or rng:
        box.label(text="  ".join(t for t in (it.description, rng) if t))
    if it.error:
        err = box.row()
        err.alert = True
        err.label(text=it.error, icon="ERROR")


CLASSES = (PaintbridgeField, PaintbridgeWorkflowForm)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.paintbridge_workflow = PointerProperty(type=PaintbridgeWorkflowForm)


def unregister():
    del bpy.types.Scene.paintbridge_workflow
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

"""Preferences, scene settings, operators and the Image Editor sidebar panel ("Paintbridge" tab)."""

from __future__ import annotations

import json

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from ._vendor.protocol import forms

from . import core

PACKAGE = __package__


class PAINTBRIDGE_AP_prefs(bpy.types.AddonPreferences):
    # Only the server address and username live here; the token is in the keyring / a 0600 file.
    bl_idname = PACKAGE
    server: StringProperty(name="Server", default="127.0.0.1:9180",
                           description="Paintbridge engine address: host:port or ws://host:port/v1/ws")
    username: StringProperty(name="Username", default="")

    def draw(self, context):
        self.layout.prop(self, "server")
        self.layout.prop(self, "username")


def _model_changed(self, context):
    core.fill_loras(self)


class PaintbridgeSettings(bpy.types.PropertyGroup):
    model: StringProperty(name="Model", default="", update=_model_changed)
    prompt: StringProperty(name="Prompt", default="")
    negative_prompt: StringProperty(name="Negative", default="")
    mode: EnumProperty(name="Mode", default="GENERATE", items=[
        ("GENERATE", "Generate new image", "Text to image"),
        ("REFINE", "Refine active image", "Image to image with a strength"),
        ("INPAINT", "Inpaint", "Regenerate the masked part of the active image"),
        ("UPSCALE", "Upscale", "Enlarge the active image"),
    ])
    strength: FloatProperty(name="Strength", default=0.6, min=0.0, max=1.0)
    mask_source: EnumProperty(name="Mask", default="ALPHA", items=[
        ("ALPHA", "Image alpha", "Transparent pixels are regenerated"),
        ("IMAGE", "Mask image", "White in the chosen image is regenerated"),
    ])
    mask_image: StringProperty(name="Mask image", default="")
    upscale_factor: EnumProperty(name="Factor", default="2", items=[("2", "2×", ""), ("4", "4×", "")])
    upscaler: StringProperty(name="Upscaler", default="",
                             description="Upscaler model on the engine (empty: a plain resize)")
    lora: StringProperty(name="LoRA", default="", description="A LoRA on the engine to apply (empty: none)")
    lora_weight: FloatProperty(name="Weight", default=0.8, min=-2.0, max=2.0, step=5,
                               description="How strongly the LoRA applies")
    replace_active: BoolProperty(name="Replace active image", default=False,
                                 description="Write the result into the active image (undoable) instead of a new one")
    width: IntProperty(name="Width", default=512, min=8, max=4096, step=8)
    height: IntProperty(name="Height", default=512, min=8, max=4096, step=8)
    steps: IntProperty(name="Steps", default=20, min=1, max=200)
    guidance: FloatProperty(name="Guidance", default=7.0, min=0.0, max=30.0)
    seed: IntProperty(name="Seed", default=0, min=0, description="0 = random")


class PaintbridgeName(bpy.types.PropertyGroup):
    """One name in a picker list (the engine's main models, upscalers, LoRAs) for prop_search."""


class PaintbridgeCatalog(bpy.types.PropertyGroup):
    """What the engine offers, refilled on every models update (core._apply_models)."""
    models: CollectionProperty(type=PaintbridgeName)
    upscalers: CollectionProperty(type=PaintbridgeName)
    loras: CollectionProperty(type=PaintbridgeName)


# ---- gallery and workflow-form data -----------------------------------------------------------------------
class PaintbridgeImageItem(bpy.types.PropertyGroup):
    """One gallery row (name = the prompt, for the UIList's own filter)."""
    image_id: StringProperty(name="Image id")
    prompt: StringProperty(name="Prompt")
    seed: StringProperty(name="Seed")   # text: engine seeds go up to 2**32, beyond Blender's int
    app: StringProperty(name="App")
    mode: StringProperty(name="Mode")
    model: StringProperty(name="Model")
    starred: BoolProperty(name="Starred")
    width: IntProperty(name="Width")
    height: IntProperty(name="Height")
    created: StringProperty(name="Created")


def _refilter(self, context):
    if core.STATE["state"] == "connected":
        core.gallery_refresh()


class PaintbridgeGallery(bpy.types.PropertyGroup):
    items: CollectionProperty(type=PaintbridgeImageItem)
    index: IntProperty(name="Image", default=0)
    starred_only: BoolProperty(name="Starred only", default=False, update=_refilter,
                               description="List only starred images")
    search: StringProperty(name="Search", default="", update=_refilter,
                           description="Words that must all appear in the prompt")


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


def _active_image(context):
    space = getattr(context, "space_data", None)
    img = getattr(space, "image", None) if space is not None and space.type == "IMAGE_EDITOR" else None
    if img is None:
        img = bpy.data.images.get(context.scene.paintbridge_image) if context.scene.paintbridge_image else None
    return img


class PAINTBRIDGE_OT_connect(bpy.types.Operator):
    bl_idname = "paintbridge.connect"
    bl_label = "Connect"
    bl_description = "Connect to the Paintbridge engine with the stored sign-in"

    def execute(self, context):
        core.connect()
        return {"FINISHED"}


class PAINTBRIDGE_OT_sign_in(bpy.types.Operator):
    bl_idname = "paintbridge.sign_in"
    bl_label = "Sign in"
    bl_description = "Sign in to the Paintbridge engine"

    username: StringProperty(name="Username", options={"SKIP_SAVE"})
    password: StringProperty(name="Password", subtype="PASSWORD", options={"SKIP_SAVE", "HIDDEN"})
    remember: BoolProperty(name="Keep me signed in", default=True)

    def invoke(self, context, event):
        p = core.prefs()
        if p and not self.username:
            self.username = p.username
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context):
        self.layout.prop(self, "username")
        row = self.layout.row()
        row.prop(self, "password", text="Password")
        self.layout.prop(self, "remember")

    def execute(self, context):
        if not self.username or not self.password:
            self.report({"ERROR"}, "enter a username and a password")
            return {"CANCELLED"}
        p = core.prefs()
        if p is not None:
            p.username = self.username
        core.get_session().login(self.username, self.password, self.remember, url=core.server_url())
        core.STATE["state"], core.STATE["message"] = "connecting", "signing in…"
        self.password = ""
        return {"FINISHED"}


class PAINTBRIDGE_OT_sign_out(bpy.types.Operator):
    bl_idname = "paintbridge.sign_out"
    bl_label = "Sign out"

    def execute(self, context):
        core.get_session().sign_out()
        return {"FINISHED"}


class PAINTBRIDGE_OT_generate(bpy.types.Operator):
    bl_idname = "paintbridge.generate"
    bl_label = "Generate"
    bl_description = "Send the request to the engine; the result becomes an image"

    image: StringProperty(name="Image", default="", options={"SKIP_SAVE"},
                          description="Source image name (default: the Image Editor's image)")

    def execute(self, context):
        settings = context.scene.paintbridge
        img = bpy.data.images.get(self.image) if self.image else _active_image(context)
        try:
            core.submit(settings, img)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class PAINTBRIDGE_OT_cancel(bpy.types.Operator):
    bl_idname = "paintbridge.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        core.cancel_all()
        return {"FINISHED"}


# ---- gallery operators --------------------------------------------------------------------------------------
def _image_arg(op) -> str:
    return op.image or core.selected_image_id()


class PAINTBRIDGE_OT_gallery_refresh(bpy.types.Operator):
    bl_idname = "paintbridge.gallery_refresh"
    bl_label = "Refresh"
    bl_description = "List your images (from every app), newest first"

    more: BoolProperty(name="Load more", default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        if not core.gallery_refresh(more=self.more):
            return {"CANCELLED"}
        return {"FINISHED"}


class PAINTBRIDGE_OT_gallery_recall(bpy.types.Operator):
    bl_idname = "paintbridge.gallery_recall"
    bl_label = "Use settings"
    bl_description = "Fill the generate settings (prompt, model, seed, …) from the selected image"

    image: StringProperty(name="Image id", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        image_id = _image_arg(self)
        if not image_id:
            self.report({"ERROR"}, "select an image in the gallery")
            return {"CANCELLED"}
        core.recall(image_id, context.scene.name)
        return {"FINISHED"}


class PAINTBRIDGE_OT_gallery_open(bpy.types.Operator):
    bl_idname = "paintbridge.gallery_open"
    bl_label = "Open as image"
    bl_description = "Download the selected gallery image as a new (packed) image"

    image: StringProperty(name="Image id", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        image_id = _image_arg(self)
        if not image_id:
            self.report({"ERROR"}, "select an image in the gallery")
            return {"CANCELLED"}
        core.open_image(image_id)
        return {"FINISHED"}


class PAINTBRIDGE_OT_gallery_star(bpy.types.Operator):
    bl_idname = "paintbridge.gallery_star"
    bl_label = "Star"
    bl_description = "Star or unstar the image"

    image: StringProperty(name="Image id", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        image_id = _image_arg(self)
        it = core.gallery_item(image_id) if image_id else None
        if it is None:
            self.report({"ERROR"}, "select an image in the gallery")
            return {"CANCELLED"}
        core.star(image_id, not it.starred)
        return {"FINISHED"}


# ---- workflow operators -------------------------------------------------------------------------------------
_WORKFLOW_ITEMS: list = []   # kept alive for Blender (dynamic enum strings)


def _workflow_items(self, context):
    _WORKFLOW_ITEMS[:] = [(w["name"], w["name"], w.get("description") or "") for w in core.WORKFLOWS["list"]] \
        or [("-", "(no workflows: refresh)", "")]
    return _WORKFLOW_ITEMS


class PAINTBRIDGE_OT_workflows_refresh(bpy.types.Operator):
    bl_idname = "paintbridge.workflows_refresh"
    bl_label = "Refresh workflows"
    bl_description = "Fetch your saved workflows from the engine"

    def execute(self, context):
        core.refresh_workflows()
        return {"FINISHED"}


class PAINTBRIDGE_OT_workflow_select(bpy.types.Operator):
    bl_idname = "paintbridge.workflow_select"
    bl_label = "Choose workflow"
    bl_description = "Choose a workflow: its parameters become the form below"
    bl_property = "workflow"

    workflow: EnumProperty(name="Workflow", items=_workflow_items)

    def execute(self, context):
        wf = core.find_workflow(self.workflow)
        if wf is None:
            self.report({"ERROR"}, "no such workflow: refresh the list")
            return {"CANCELLED"}
        core.build_form(context.scene.paintbridge_workflow, wf)
        return {"FINISHED"}


class PAINTBRIDGE_OT_workflow_run(bpy.types.Operator):
    bl_idname = "paintbridge.workflow_run"
    bl_label = "Run workflow"
    bl_description = "Check the form and run the workflow; each output becomes a new image"

    image: StringProperty(name="Image", default="", options={"SKIP_SAVE"},
                          description="Image for empty image fields (default: the Image Editor's image)")

    def execute(self, context):
        form = context.scene.paintbridge_workflow
        img = bpy.data.images.get(self.image) if self.image else _active_image(context)
        rid, errors = core.run_workflow(form, img)
        if rid is None:
            self.report({"ERROR"}, "; ".join(errors.values()))
            return {"CANCELLED"}
        return {"FINISHED"}


class PAINTBRIDGE_PT_panel(bpy.types.Panel):
    bl_idname = "PAINTBRIDGE_PT_panel"
    bl_label = "Paintbridge"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Paintbridge"

    def draw(self, context):
        layout = self.layout
        st = core.STATE
        s = context.scene.paintbridge
        state = st["state"]
        box = layout.box()
        box.label(text=f"{core.server_url()} — {state}", icon="WORLD")
        if st["message"]:
            box.label(text=st["message"], icon="INFO")
        if state in ("disconnected", "closed"):
            box.operator("paintbridge.connect")
            box.operator("paintbridge.sign_in")
            return
        if state in ("signed_out", "expired"):
            if state == "expired":
                box.label(text="Your session expired: sign in again", icon="ERROR")
            box.operator("paintbridge.sign_in")
            return
        if state != "connected":
            return
        box.operator("paintbridge.sign_out")
        catalog = context.window_manager.paintbridge_catalog
        if s.mode != "UPSCALE":
            layout.prop_search(s, "model", catalog, "models", icon="FILE_3D")
            row = layout.row(align=True)
            row.prop_search(s, "lora", catalog, "loras")
            row.prop(s, "lora_weight")
        layout.prop(s, "mode")
        layout.prop(s, "prompt")
        layout.prop(s, "negative_prompt")
        if s.mode == "GENERATE":
            row = layout.row(align=True)
            row.prop(s, "width")
            row.prop(s, "height")
        else:
            img = _active_image(context)
            layout.label(text=f"Source: {img.name if img else '(open an image)'}", icon="IMAGE_DATA")
            if s.mode in ("REFINE", "INPAINT"):
                layout.prop(s, "strength")
            if s.mode == "INPAINT":
                layout.prop(s, "mask_source")
                if s.mask_source == "IMAGE":
                    layout.prop_search(s, "mask_image", bpy.data, "images")
            if s.mode == "UPSCALE":
                layout.prop(s, "upscale_factor")
                layout.prop_search(s, "upscaler", catalog, "upscalers", text="Upscaler (empty: resize)")
            layout.prop(s, "replace_active")
        col = layout.column(align=True)
        col.prop(s, "steps")
        col.prop(s, "guidance")
        col.prop(s, "seed")
        jobs = core.active_jobs()
        row = layout.row(align=True)
        row.operator("paintbridge.generate", icon="PLAY")
        if jobs:
            row.operator("paintbridge.cancel", icon="CANCEL")
            for j in jobs:
                pct = 100 * j["step"] / j["total"] if j["total"] else 0
                layout.label(text=f"{j['status']} {j['step']}/{j['total']} ({pct:.0f}%)")
            if bpy.data.images.get(core.PREVIEW_NAME):
                layout.label(text=f"Preview in image “{core.PREVIEW_NAME}”", icon="IMAGE_DATA")
        if st["last_error"]:
            layout.label(text=st["last_error"], icon="ERROR")


class PAINTBRIDGE_UL_images(bpy.types.UIList):
    bl_idname = "PAINTBRIDGE_UL_images"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        pv = core.thumbnail(item.image_id)
        row = layout.row(align=True)
        if pv is not None and pv.icon_id:
            row.label(text=item.prompt or "(no prompt)", icon_value=pv.icon_id)
        else:
            row.label(text=item.prompt or "(no prompt)", icon="IMAGE_DATA")
        sub = row.row(align=True)
        sub.alignment = "RIGHT"
        sub.label(text=f"{item.seed}  {item.app}")
        op = sub.operator("paintbridge.gallery_star", text="", emboss=False,
                          icon="SOLO_ON" if item.starred else "SOLO_OFF")
        op.image = item.image_id


class _Sub:
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Paintbridge"
    bl_parent_id = "PAINTBRIDGE_PT_panel"

    @classmethod
    def poll(cls, context):
        return core.STATE["state"] == "connected"


class PAINTBRIDGE_PT_gallery(_Sub, bpy.types.Panel):
    bl_idname = "PAINTBRIDGE_PT_gallery"
    bl_label = "Gallery"

    def draw(self, context):
        layout = self.layout
        g = context.window_manager.paintbridge_gallery
        gs = core.GALLERY
        row = layout.row(align=True)
        row.prop(g, "starred_only", text="", icon="SOLO_ON" if g.starred_only else "SOLO_OFF")
        row.prop(g, "search", text="", icon="VIEWZOOM")
        row.operator("paintbridge.gallery_refresh", text="", icon="FILE_REFRESH").more = False
        layout.template_list("PAINTBRIDGE_UL_images", "", g, "items", g, "index", rows=5)
        row = layout.row()
        row.label(text="Loading…" if gs["loading"] else f"{len(g.items)} of {gs['total']}")
        if gs["next_cursor"]:
            row.operator("paintbridge.gallery_refresh", text="Load more").more = True
        if 0 <= g.index < len(g.items):
            it = g.items[g.index]
            box = layout.box()
            pv = core.thumbnail(it.image_id)
            if pv is not None and pv.icon_id:
                box.template_icon(icon_value=pv.icon_id, scale=6.0)
            box.label(text=it.prompt or "(no prompt)")
            box.label(text=f"{it.mode} · {it.model or '-'} · {it.width}×{it.height} · seed {it.seed or '-'}")
            box.label(text=f"from {it.app or '?'} · {it.created}")
            row = box.row(align=True)
            row.operator("paintbridge.gallery_recall", icon="PASTEDOWN")
            row.operator("paintbridge.gallery_open", icon="IMAGE_DATA")
            row.operator("paintbridge.gallery_star", text="Unstar" if it.starred else "Star",
                         icon="SOLO_ON" if it.starred else "SOLO_OFF")
        if gs["message"]:
            layout.label(text=gs["message"], icon="INFO")


def _range_text(it) -> str:
    if not (it.has_min or it.has_max):
        return ""
    fmt = (lambda v: str(int(v))) if it.widget == forms.INT else (lambda v: f"{v:g}")
    lo = fmt(it.min_value) if it.has_min else "…"
    hi = fmt(it.max_value) if it.has_max else "…"
    return f"{lo} – {hi}"


class PAINTBRIDGE_PT_workflows(_Sub, bpy.types.Panel):
    bl_idname = "PAINTBRIDGE_PT_workflows"
    bl_label = "Workflows"

    def draw(self, context):
        layout = self.layout
        form = context.scene.paintbridge_workflow
        row = layout.row(align=True)
        row.operator_menu_enum("paintbridge.workflow_select", "workflow", text=form.workflow or "Choose a workflow",
                               icon="NODETREE")
        row.operator("paintbridge.workflows_refresh", text="", icon="FILE_REFRESH")
        if not form.workflow:
            return
        if form.description:
            layout.label(text=form.description, icon="INFO")
        col = layout.column()
        for it in form.fields:
            self.draw_field(col, it, context)
        layout.operator("paintbridge.workflow_run", icon="PLAY")
        if form.error:
            layout.label(text=form.error, icon="ERROR")

    @staticmethod
    def draw_field(col, it, context):
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
                img = _active_image(context)
                box.label(text=f"empty: the active image ({img.name if img else 'none'})")
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


CLASSES = (PAINTBRIDGE_AP_prefs, PaintbridgeSettings, PaintbridgeName, PaintbridgeCatalog, PaintbridgeImageItem,
           PaintbridgeGallery, PaintbridgeField, PaintbridgeWorkflowForm, PAINTBRIDGE_OT_connect, PAINTBRIDGE_OT_sign_in, PAINTBRIDGE_OT_sign_out,
           PAINTBRIDGE_OT_generate, PAINTBRIDGE_OT_cancel, PAINTBRIDGE_OT_gallery_refresh, PAINTBRIDGE_OT_gallery_recall,
           PAINTBRIDGE_OT_gallery_open, PAINTBRIDGE_OT_gallery_star, PAINTBRIDGE_OT_workflows_refresh,
           PAINTBRIDGE_OT_workflow_select, PAINTBRIDGE_OT_workflow_run, PAINTBRIDGE_UL_images, PAINTBRIDGE_PT_panel,
           PAINTBRIDGE_PT_gallery, PAINTBRIDGE_PT_workflows)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.paintbridge = bpy.props.PointerProperty(type=PaintbridgeSettings)
    bpy.types.Scene.paintbridge_image = StringProperty(name="Paintbridge source image", default="")
    bpy.types.Scene.paintbridge_workflow = PointerProperty(type=PaintbridgeWorkflowForm)
    bpy.types.WindowManager.paintbridge_gallery = PointerProperty(type=PaintbridgeGallery)
    bpy.types.WindowManager.paintbridge_catalog = PointerProperty(type=PaintbridgeCatalog)


def unregister():
    del bpy.types.WindowManager.paintbridge_catalog
    del bpy.types.WindowManager.paintbridge_gallery
    del bpy.types.Scene.paintbridge_workflow
    del bpy.types.Scene.paintbridge_image
    del bpy.types.Scene.paintbridge
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

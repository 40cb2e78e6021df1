"""Widgets only: the operators (buttons) and the Image Editor sidebar panels ("Paintbridge" tab). They draw the
controller's state and call its functions; no protocol call and no pixel work happens here."""

from __future__ import annotations

import textwrap

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from ._vendor.protocol import generate

from . import controller, host, settings, workflow_form

WRAP = 34   # characters per label line: Blender 3.4's default sidebar width cuts longer ones


def wrapped(layout, text: str, icon: str = "NONE", alert: bool = False):
    """A long message as several labels, so it is shown in full at the sidebar's width."""
    col = layout.column(align=True)
    col.alert = alert
    for i, line in enumerate(textwrap.wrap(text, WRAP) or [""]):
        col.label(text=line, icon=icon if i == 0 else "BLANK1")


def _active_image(context):
    space = getattr(context, "space_data", None)
    img = getattr(space, "image", None) if space is not None and space.type == "IMAGE_EDITOR" else None
    if img is not None and img.name == host.PREVIEW_NAME:
        img = None   # the live preview is never a source
    if img is None:
        img = bpy.data.images.get(context.scene.paintbridge_image) if context.scene.paintbridge_image else None
    return img


# ---- account ------------------------------------------------------------------------------------------------
class PAINTBRIDGE_OT_connect(bpy.types.Operator):
    bl_idname = "paintbridge.connect"
    bl_label = "Connect"
    bl_description = "Connect to the Paintbridge engine with a pasted token, or the stored sign-in"

    token: StringProperty(name="Token", subtype="PASSWORD", options={"SKIP_SAVE", "HIDDEN"},
                          description="A token from `paintbridge token` (empty: the stored sign-in)")

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context):
        self.layout.prop(self, "token")
        self.layout.label(text="Empty: use the stored sign-in")

    def execute(self, context):
        controller.connect(self.token)
        self.token = ""
        return {"FINISHED"}


class PAINTBRIDGE_OT_sign_in(bpy.types.Operator):
    bl_idname = "paintbridge.sign_in"
    bl_label = "Sign in"
    bl_description = "Sign in to the Paintbridge engine"

    username: StringProperty(name="Username", options={"SKIP_SAVE"})
    password: StringProperty(name="Password", subtype="PASSWORD", options={"SKIP_SAVE", "HIDDEN"})
    remember: BoolProperty(name="Keep me signed in", default=True)

    def invoke(self, context, event):
        p = settings.prefs()
        if p and not self.username:
            self.username = p.username
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, context):
        self.layout.prop(self, "username")
        self.layout.prop(self, "password", text="Password")
        self.layout.prop(self, "remember")

    def execute(self, context):
        if not self.username or not self.password:
            self.report({"ERROR"}, "enter a username and a password")
            return {"CANCELLED"}
        controller.sign_in(self.username, self.password, self.remember)
        self.password = ""
        return {"FINISHED"}


class PAINTBRIDGE_OT_sign_out(bpy.types.Operator):
    bl_idname = "paintbridge.sign_out"
    bl_label = "Sign out"
    bl_description = "End this sign-in on the engine and delete the token stored on this computer"

    def execute(self, context):
        controller.sign_out()
        return {"FINISHED"}


# ---- generate -------------------------------------------------------------------------------------------------
class PAINTBRIDGE_OT_generate(bpy.types.Operator):
    bl_idname = "paintbridge.generate"
    bl_label = "Generate"
    bl_description = "Send the request to the engine; the result becomes an image"

    image: StringProperty(name="Image", default="", options={"SKIP_SAVE"},
                          description="Source image name (default: the Image Editor's image)")

    def execute(self, context):
        s = context.scene.paintbridge
        img = bpy.data.images.get(self.image) if self.image else _active_image(context)
        try:
            controller.submit(s, img)
        except ValueError as exc:
            controller.STATE["last_error"] = str(exc)
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class PAINTBRIDGE_OT_cancel(bpy.types.Operator):
    bl_idname = "paintbridge.cancel"
    bl_label = "Cancel"

    def execute(self, context):
        controller.cancel_all()
        return {"FINISHED"}


class PAINTBRIDGE_OT_reuse_seed(bpy.types.Operator):
    bl_idname = "paintbridge.reuse_seed"
    bl_label = "Reuse"
    bl_description = "Put the seed of the last request in the Seed field (it then makes the same image again)"

    def execute(self, context):
        seed = controller.STATE["last_seed"]
        if seed is None or not 0 <= seed <= settings.INT_MAX:
            return {"CANCELLED"}
        context.scene.paintbridge.seed = seed
        return {"FINISHED"}


# ---- gallery ---------------------------------------------------------------------------------------------------
def _image_arg(op) -> str:
    return op.image or controller.selected_image_id()


class PAINTBRIDGE_OT_gallery_refresh(bpy.types.Operator):
    bl_idname = "paintbridge.gallery_refresh"
    bl_label = "Refresh"
    bl_description = "List your images (from every app), newest first"

    more: BoolProperty(name="Load more", default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        if not controller.gallery_refresh(more=self.more):
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
        controller.recall(image_id, context.scene.name)
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
        controller.open_image(image_id)
        return {"FINISHED"}


class PAINTBRIDGE_OT_gallery_star(bpy.types.Operator):
    bl_idname = "paintbridge.gallery_star"
    bl_label = "Star"
    bl_description = "Star or unstar the image"

    image: StringProperty(name="Image id", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        image_id = _image_arg(self)
        it = controller.gallery_item(image_id) if image_id else None
        if it is None:
            self.report({"ERROR"}, "select an image in the gallery")
            return {"CANCELLED"}
        controller.star(image_id, not it.starred)
        return {"FINISHED"}


# ---- workflows -------------------------------------------------------------------------------------------------
_WORKFLOW_ITEMS: list = []   # kept alive for Blender (dynamic enum strings)


def _workflow_items(self, context):
    _WORKFLOW_ITEMS[:] = [(w["name"], w["name"], w.get("description") or "")
                          for w in controller.WORKFLOWS["list"]] or [("-", "(no workflows: refresh)", "")]
    return _WORKFLOW_ITEMS


class PAINTBRIDGE_OT_workflows_refresh(bpy.types.Operator):
    bl_idname = "paintbridge.workflows_refresh"
    bl_label = "Refresh workflows"
    bl_description = "Fetch your saved workflows from the engine"

    def execute(self, context):
        controller.refresh_workflows()
        return {"FINISHED"}


class PAINTBRIDGE_OT_workflow_select(bpy.types.Operator):
    bl_idname = "paintbridge.workflow_select"
    bl_label = "Choose workflow"
    bl_description = "Choose a workflow: its parameters become the form below"
    bl_property = "workflow"

    workflow: EnumProperty(name="Workflow", items=_workflow_items)

    def execute(self, context):
        wf = controller.find_workflow(self.workflow)
        if wf is None:
            self.report({"ERROR"}, "no such workflow: refresh the list")
            return {"CANCELLED"}
        workflow_form.build_form(context.scene.paintbridge_workflow, wf)
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
        rid, errors = controller.run_workflow(form, img)
        if rid is None:
            self.report({"ERROR"}, "; ".join(errors.values()))
            return {"CANCELLED"}
        return {"FINISHED"}


# ---- panels ------------------------------------------------------------------------------------------------------
class PAINTBRIDGE_PT_panel(bpy.types.Panel):
    bl_idname = "PAINTBRIDGE_PT_panel"
    bl_label = "Paintbridge"
    bl_space_type = "IMAGE_EDITOR"
    bl_region_type = "UI"
    bl_category = "Paintbridge"

    def draw(self, context):
        layout = self.layout
        st = controller.STATE
        state = st["state"]
        if not self.draw_account(layout, st, state):
            return
        s = context.scene.paintbridge
        mode = generate.MODES[settings.MODES[s.mode]]
        catalog = context.window_manager.paintbridge_catalog

        def uses(name):   # Upscale's model, prompt, steps and seed apply with "Refine with the model" only
            return generate.field_applies(mode.name, name, s.refine)

        layout.prop(s, "mode")
        if uses("model"):
            layout.prop_search(s, "model", catalog, "models", icon="FILE_3D")
            row = layout.row(align=True)
            row.prop_search(s, "lora", catalog, "loras")
            row.prop(s, "lora_weight")
        if uses("prompt"):
            layout.prop(s, "prompt")
            layout.prop(s, "negative_prompt")
        if mode.uses("width"):
            row = layout.row(align=True)
            row.prop(s, "width")
            row.prop(s, "height")
        if mode.image:
            img = _active_image(context)
            layout.label(text=f"Source: {img.name if img else '(open an image)'}", icon="IMAGE_DATA")
            if mode.uses("strength"):
                layout.prop(s, "strength")
            if mode.mask:
                layout.prop(s, "mask_source")
                if s.mask_source == "IMAGE":
                    layout.prop_search(s, "mask_image", bpy.data, "images")
            if s.mode == "OUTPAINT":
                layout.label(text="Fills transparent pixels; add margins:")
                row = layout.row(align=True)
                for side in ("extend_left", "extend_top", "extend_right", "extend_bottom"):
                    row.prop(s, side)
            if mode.uses("scale"):
                layout.prop(s, "upscale_factor")
                layout.prop_search(s, "upscaler", catalog, "upscalers", text="Upscaler (empty: resize)")
                row = layout.row(align=True)
                row.prop(s, "refine")
                sub = row.row(align=True)
                sub.active = s.refine
                sub.prop(s, "refine_strength", text="Strength")
            layout.prop(s, "replace_active")
        if uses("steps"):
            col = layout.column(align=True)
            col.prop(s, "steps")
            col.prop(s, "guidance")
            self.draw_sampling(col, s, catalog)
            row = col.row(align=True)
            row.prop(s, "seed")
            if st["last_seed"] is not None:
                row.operator("paintbridge.reuse_seed", text=f"Reuse {st['last_seed']}")
        row = layout.row(align=True)
        row.operator("paintbridge.generate", icon="PLAY")
        jobs = controller.active_jobs()
        if jobs:
            row.operator("paintbridge.cancel", icon="CANCEL")
        for j in jobs:
            pct = f" ({100 * j.fraction:.0f}%)" if j.total else ""
            layout.label(text=j.describe() + pct, icon="TIME")
        if not jobs:
            last = controller.latest_job()
            if last is not None and last.state in ("canceled", "gone"):
                layout.label(text=last.describe(), icon="INFO")
        if st["last_error"]:
            wrapped(layout, st["last_error"], icon="ERROR", alert=True)

    @staticmethod
    def draw_sampling(col, s, catalog):
        """The engine's pickers: sampler (by label), its schedules when it has a choice, clip skip, VAE."""
        col.prop_search(s, "scheduler", catalog, "samplers", icon="MOD_NOISE")
        if len(controller.schedules(s)) > 1:
            col.prop(s, "schedule")
        col.prop(s, "clip_skip")
        col.prop_search(s, "vae", catalog, "vaes", text="VAE (empty: the model's)")

    @staticmethod
    def draw_account(layout, st, state) -> bool:
        """The connection box; True when signed in (the form follows)."""
        box = layout.box()
        box.label(text=f"{settings.server_url()}", icon="WORLD")
        box.label(text=state if not st["user"] or state != "connected" else f"signed in as {st['user']}")
        if st["message"]:
            wrapped(box, st["message"], icon="INFO")
        if state in ("disconnected", "closed"):
            box.operator("paintbridge.connect")
            box.operator("paintbridge.sign_in")
            if st["last_error"]:
                wrapped(box, st["last_error"], icon="ERROR", alert=True)
            return False
        if state in ("signed_out", "expired"):
            box.operator("paintbridge.sign_in")
            box.operator("paintbridge.connect", text="Paste a token")
            if st["last_error"]:
                wrapped(box, st["last_error"], icon="ERROR", alert=True)
            return False
        if state != "connected":
            return False
        box.operator("paintbridge.sign_out")
        return True


class PAINTBRIDGE_UL_images(bpy.types.UIList):
    bl_idname = "PAINTBRIDGE_UL_images"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        pv = controller.thumbnail(item.image_id)
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
        return controller.STATE["state"] == "connected"


class PAINTBRIDGE_PT_gallery(_Sub, bpy.types.Panel):
    bl_idname = "PAINTBRIDGE_PT_gallery"
    bl_label = "Gallery"

    def draw(self, context):
        layout = self.layout
        g = context.window_manager.paintbridge_gallery
        gb = controller.gallery()
        row = layout.row(align=True)
        row.prop(g, "starred_only", text="", icon="SOLO_ON" if g.starred_only else "SOLO_OFF")
        row.prop(g, "search", text="", icon="VIEWZOOM")
        row.operator("paintbridge.gallery_refresh", text="", icon="FILE_REFRESH").more = False
        layout.template_list("PAINTBRIDGE_UL_images", "", g, "items", g, "index", rows=5)
        row = layout.row()
        row.label(text=gb.status())
        if gb.has_more:
            row.operator("paintbridge.gallery_refresh", text="Load more").more = True
        if 0 <= g.index < len(g.items):
            it = g.items[g.index]
            box = layout.box()
            pv = controller.thumbnail(it.image_id)
            if pv is not None and pv.icon_id:
                box.template_icon(icon_value=pv.icon_id, scale=6.0)
            wrapped(box, it.prompt or "(no prompt)")
            box.label(text=f"{it.mode} · {it.width}×{it.height} · seed {it.seed or '-'}")
            box.label(text=f"{it.model or '-'}")
            box.label(text=f"from {it.app or '?'} · {it.created}")
            row = box.row(align=True)
            row.operator("paintbridge.gallery_recall", icon="PASTEDOWN")
            row.operator("paintbridge.gallery_open", icon="IMAGE_DATA")
            row.operator("paintbridge.gallery_star", text="Unstar" if it.starred else "Star",
                         icon="SOLO_ON" if it.starred else "SOLO_OFF")
        if controller.GALLERY_STATE["message"]:
            wrapped(layout, controller.GALLERY_STATE["message"], icon="INFO")


class PAINTBRIDGE_OT_download_model(bpy.types.Operator):
    bl_idname = "paintbridge.download_model"
    bl_label = "Download"
    bl_description = "Have the engine download this model (admins); its progress shows below"

    def execute(self, context):
        d = context.window_manager.paintbridge_download
        if controller.download_model(d.source, d.name) is None:
            self.report({"ERROR"}, controller.STATE["last_error"])
            return {"CANCELLED"}
        return {"FINISHED"}


class PAINTBRIDGE_PT_models(_Sub, bpy.types.Panel):
    """Admins only: download a model onto the engine and follow it."""
    bl_idname = "PAINTBRIDGE_PT_models"
    bl_label = "Download a model"
    bl_options = {"DEFAULT_CLOSED"}

    @classmethod
    def poll(cls, context):
        return controller.is_admin()

    def draw(self, context):
        layout = self.layout
        d = context.window_manager.paintbridge_download
        layout.prop(d, "source")
        layout.prop(d, "name")
        layout.operator("paintbridge.download_model", icon="IMPORT")
        for row in controller.downloads():
            frac = row.fraction
            wrapped(layout, row.describe(), icon="ERROR" if row.state in ("failed", "refused") else
                    ("CHECKMARK" if row.state == "done" else "SORTTIME"), alert=row.state in ("failed", "refused"))
            if row.active and frac is not None and hasattr(layout, "progress"):   # Blender 4.0+
                layout.progress(factor=frac, type="BAR", text=f"{100 * frac:.0f}%")


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
            wrapped(layout, form.description, icon="INFO")
        col = layout.column()
        active = _active_image(context)
        for it in form.fields:
            workflow_form.draw_field(col, it, active)
        layout.operator("paintbridge.workflow_run", icon="PLAY")
        if form.error:
            wrapped(layout, form.error, icon="ERROR", alert=True)


CLASSES = (PAINTBRIDGE_OT_connect, PAINTBRIDGE_OT_sign_in, PAINTBRIDGE_OT_sign_out, PAINTBRIDGE_OT_generate,
           PAINTBRIDGE_OT_cancel, PAINTBRIDGE_OT_reuse_seed, PAINTBRIDGE_OT_gallery_refresh,
           PAINTBRIDGE_OT_gallery_recall, PAINTBRIDGE_OT_gallery_open, PAINTBRIDGE_OT_gallery_star,
           PAINTBRIDGE_OT_workflows_refresh, PAINTBRIDGE_OT_workflow_select, PAINTBRIDGE_OT_workflow_run,
           PAINTBRIDGE_UL_images, PAINTBRIDGE_PT_panel, PAINTBRIDGE_PT_gallery, PAINTBRIDGE_PT_workflows,
           PAINTBRIDGE_OT_download_model, PAINTBRIDGE_PT_models)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

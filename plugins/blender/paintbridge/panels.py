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


# ---- controls, references, regions, live ------------------------------------------------------------------------
class PAINTBRIDGE_OT_steer_add(bpy.types.Operator):
    bl_idname = "paintbridge.steer_add"
    bl_label = "Add"
    bl_description = "Add a control (ControlNet / T2I-Adapter) or a reference (IP-Adapter)"

    kind: EnumProperty(name="Kind", items=[("CONTROL", "Control", ""), ("REFERENCE", "Reference", "")])
    source: EnumProperty(name="Source", items=settings.STEER_SOURCES)
    image: StringProperty(name="Image", default="", options={"SKIP_SAVE"},
                          description="Image datablock (default: the Image Editor's image)")

    def execute(self, context):
        s = context.scene.paintbridge
        it = s.steer.add()
        it.kind, it.source = self.kind, self.source
        if self.source == "IMAGE":
            img = bpy.data.images.get(self.image) if self.image else _active_image(context)
            it.image = img.name if img is not None else ""
        catalog = context.window_manager.paintbridge_catalog
        names = catalog.controls if self.kind == "CONTROL" else catalog.references
        if len(names):
            it.model = names[0].name   # its preset sets strength and range
        s.steer_index = len(s.steer) - 1
        return {"FINISHED"}


class PAINTBRIDGE_OT_steer_remove(bpy.types.Operator):
    bl_idname = "paintbridge.steer_remove"
    bl_label = "Remove"
    bl_description = "Remove the selected control or reference"

    def execute(self, context):
        s = context.scene.paintbridge
        if not 0 <= s.steer_index < len(s.steer):
            return {"CANCELLED"}
        s.steer.remove(s.steer_index)
        s.steer_index = max(0, min(s.steer_index, len(s.steer) - 1))
        return {"FINISHED"}


class PAINTBRIDGE_OT_region_add(bpy.types.Operator):
    bl_idname = "paintbridge.region_add"
    bl_label = "Add region"
    bl_description = "Add a region: a mask image (white = here) with its own prompt"

    image: StringProperty(name="Mask", default="", options={"SKIP_SAVE"})
    prompt: StringProperty(name="Prompt", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        s = context.scene.paintbridge
        it = s.regions.add()
        it.image, it.prompt = self.image, self.prompt
        s.region_index = len(s.regions) - 1
        return {"FINISHED"}


class PAINTBRIDGE_OT_region_remove(bpy.types.Operator):
    bl_idname = "paintbridge.region_remove"
    bl_label = "Remove region"

    def execute(self, context):
        s = context.scene.paintbridge
        if not 0 <= s.region_index < len(s.regions):
            return {"CANCELLED"}
        s.regions.remove(s.region_index)
        s.region_index = max(0, min(s.region_index, len(s.regions) - 1))
        return {"FINISHED"}


class PAINTBRIDGE_OT_live_start(bpy.types.Operator):
    bl_idname = "paintbridge.live_start"
    bl_label = "Start live"
    bl_description = "Re-generate the image being painted each time a stroke ends"

    image: StringProperty(name="Image", default="", options={"SKIP_SAVE"})

    def execute(self, context):
        img = bpy.data.images.get(self.image) if self.image else _active_image(context)
        if img is not None and img.name == controller.Live.IMAGE:
            img = None   # the live result is never the canvas
        try:
            controller.LIVE.start(img)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class PAINTBRIDGE_OT_live_stop(bpy.types.Operator):
    bl_idname = "paintbridge.live_stop"
    bl_label = "Stop live"
    bl_description = "Stop live mode: nothing of it stays queued or running"

    def execute(self, context):
        controller.LIVE.stop()
        return {"FINISHED"}


class PAINTBRIDGE_OT_live_apply(bpy.types.Operator):
    bl_idname = "paintbridge.live_apply"
    bl_label = "Apply"
    bl_description = "The newest live result as a new image, or into the painted image (one undo step)"

    into: BoolProperty(name="Into the painted image", default=False, options={"SKIP_SAVE"})

    def execute(self, context):
        if controller.LIVE.apply(self.into) is None:
            self.report({"ERROR"}, "no live result yet")
            return {"CANCELLED"}
        return {"FINISHED"}


SOURCE_LABELS = {key: label for key, label, _ in settings.STEER_SOURCES}


class PAINTBRIDGE_UL_steer(bpy.types.UIList):
    bl_idname = "PAINTBRIDGE_UL_steer"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        what = item.image if item.source == "IMAGE" else SOURCE_LABELS[item.source]
        row.label(text=f"{what or '(no image)'} → {item.model or '(no model)'}",
                  icon="MOD_HUE_SATURATION" if item.kind == "CONTROL" else "IMAGE_REFERENCE")


class PAINTBRIDGE_UL_regions(bpy.types.UIList):
    bl_idname = "PAINTBRIDGE_UL_regions"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=f"{item.image or '(no mask)'}: {item.prompt or '(base prompt)'}", icon="MOD_MASK")


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


class PAINTBRIDGE_PT_steer(_Sub, bpy.types.Panel):
    """Controls and references: image datablocks or the scene's render passes."""
    bl_idname = "PAINTBRIDGE_PT_steer"
    bl_label = "Controls and references"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.paintbridge
        catalog = context.window_manager.paintbridge_catalog
        row = layout.row()
        row.template_list("PAINTBRIDGE_UL_steer", "", s, "steer", s, "steer_index", rows=3)
        col = row.column(align=True)
        col.operator_menu_enum("paintbridge.steer_add", "source", text="", icon="ADD")   # a control
        col.operator("paintbridge.steer_remove", text="", icon="REMOVE")
        row = layout.row(align=True)
        row.operator("paintbridge.steer_add", text="Add image as reference").kind = "REFERENCE"
        if not 0 <= s.steer_index < len(s.steer):
            if not len(catalog.controls) and not len(catalog.references):
                wrapped(layout, "The engine has no ControlNet, T2I-Adapter or IP-Adapter for this model", icon="INFO")
            return
        it = s.steer[s.steer_index]
        box = layout.box()
        box.prop(it, "kind")
        box.prop(it, "source")
        if it.source == "IMAGE":
            box.prop_search(it, "image", bpy.data, "images")
        else:
            wrapped(box, "Rendered from the scene's camera at the generation size when you Generate")
        box.prop_search(it, "model", catalog, "controls" if it.kind == "CONTROL" else "references")
        if it.kind == "CONTROL":
            box.prop(it, "preprocess")
        col = box.column(align=True)
        col.prop(it, "strength")
        row = col.row(align=True)
        row.prop(it, "start")
        row.prop(it, "end")


class PAINTBRIDGE_PT_regions(_Sub, bpy.types.Panel):
    """Regions: mask images, each with its own prompt."""
    bl_idname = "PAINTBRIDGE_PT_regions"
    bl_label = "Regions"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.paintbridge
        row = layout.row()
        row.template_list("PAINTBRIDGE_UL_regions", "", s, "regions", s, "region_index", rows=3)
        col = row.column(align=True)
        col.operator("paintbridge.region_add", text="", icon="ADD")
        col.operator("paintbridge.region_remove", text="", icon="REMOVE")
        if 0 <= s.region_index < len(s.regions):
            it = s.regions[s.region_index]
            box = layout.box()
            box.prop_search(it, "image", bpy.data, "images")
            box.prop(it, "prompt")
            box.prop(it, "negative_prompt")
        wrapped(layout, "White (and opaque) in a mask is its region; a later region takes its area from earlier "
                        "ones; the main prompt covers the rest")


class PAINTBRIDGE_PT_live(_Sub, bpy.types.Panel):
    """Live mode on the image being painted."""
    bl_idname = "PAINTBRIDGE_PT_live"
    bl_label = "Live"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        s = context.scene.paintbridge
        live = controller.LIVE
        layout.prop(s, "live_prompt")
        layout.prop(s, "live_strength")
        layout.prop(s, "live_preset")
        if live.on:
            layout.label(text=f"Painting: {live.name}", icon="BRUSH_DATA")
            layout.operator("paintbridge.live_stop", icon="PAUSE")
        else:
            layout.operator("paintbridge.live_start", icon="PLAY")
        wrapped(layout, live.describe(), icon="TIME" if live.live is not None and live.live.busy else "INFO",
                alert=live.live is not None and bool(live.live.paused))
        if live.shown_job:
            layout.label(text=f"Newest result: image “{controller.Live.IMAGE}”", icon="IMAGE_DATA")
            row = layout.row(align=True)
            row.operator("paintbridge.live_apply", text="Apply as new image").into = False
            row.operator("paintbridge.live_apply", text="Apply into painted").into = True


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
           PAINTBRIDGE_OT_steer_add, PAINTBRIDGE_OT_steer_remove, PAINTBRIDGE_OT_region_add,
           PAINTBRIDGE_OT_region_remove, PAINTBRIDGE_OT_live_start, PAINTBRIDGE_OT_live_stop,
           PAINTBRIDGE_OT_live_apply, PAINTBRIDGE_UL_steer, PAINTBRIDGE_UL_regions,
           PAINTBRIDGE_UL_images, PAINTBRIDGE_PT_panel, PAINTBRIDGE_PT_steer, PAINTBRIDGE_PT_regions,
           PAINTBRIDGE_PT_live, PAINTBRIDGE_PT_gallery, PAINTBRIDGE_PT_workflows,
           PAINTBRIDGE_OT_download_model, PAINTBRIDGE_PT_models)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)


def unregister():
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

"""Preferences, scene settings, operators and the Image Editor sidebar panel ("Paintbridge" tab)."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

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


class PaintbridgeSettings(bpy.types.PropertyGroup):
    model: StringProperty(name="Model", default="")
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
    replace_active: BoolProperty(name="Replace active image", default=False,
                                 description="Write the result into the active image (undoable) instead of a new one")
    width: IntProperty(name="Width", default=512, min=8, max=4096, step=8)
    height: IntProperty(name="Height", default=512, min=8, max=4096, step=8)
    steps: IntProperty(name="Steps", default=20, min=1, max=200)
    guidance: FloatProperty(name="Guidance", default=7.0, min=0.0, max=30.0)
    seed: IntProperty(name="Seed", default=0, min=0, description="0 = random")


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
        layout.prop(s, "model")
        if st["models"]:
            layout.label(text="Available: " + ", ".join(st["models"][:4]))
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


CLASSES = (PAINTBRIDGE_AP_prefs, PaintbridgeSettings, PAINTBRIDGE_OT_connect, PAINTBRIDGE_OT_sign_in,
           PAINTBRIDGE_OT_sign_out, PAINTBRIDGE_OT_generate, PAINTBRIDGE_OT_cancel, PAINTBRIDGE_PT_panel)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.paintbridge = bpy.props.PointerProperty(type=PaintbridgeSettings)
    bpy.types.Scene.paintbridge_image = StringProperty(name="Paintbridge source image", default="")


def unregister():
    del bpy.types.Scene.paintbridge_image
    del bpy.types.Scene.paintbridge
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

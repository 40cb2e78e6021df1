"""What is kept: the add-on preferences (server, username), the scene's generate form, and the window manager's
lists the pickers and the gallery draw from (not saved in .blend). No password or token is ever kept here: the
token lives in the shared client's TokenStore (keyring or a 0600 file).

Property update callbacks call the controller through `HOOKS` (set by the controller when it registers), so this
module imports nothing of the add-on's own.
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from ._vendor.protocol import default_url, generate

PACKAGE = __package__
# panel mode -> protocol mode (protocol.generate.MODES)
MODES = {"GENERATE": "txt2img", "REFINE": "img2img", "INPAINT": "inpaint", "OUTPAINT": "outpaint",
         "UPSCALE": "upscale"}
MODE_OF = {v: k for k, v in MODES.items()}
INT_MIN, INT_MAX = -2 ** 31, 2 ** 31 - 1   # Blender IntProperty range
HOOKS = {"model_changed": None, "scheduler_changed": None, "gallery_filter_changed": None, "steer_model_changed": None,
         "live_settings_changed": None}


def _hook(name):
    def call(self, context):
        fn = HOOKS.get(name)
        if fn is not None:
            fn(self, context)
    return call


class PAINTBRIDGE_AP_prefs(bpy.types.AddonPreferences):
    bl_idname = PACKAGE
    server: StringProperty(name="Server", default="127.0.0.1:9180",
                           description="Paintbridge engine address: host:port or ws://host:port/v1/ws")
    username: StringProperty(name="Username", default="")
    auto_connect: BoolProperty(name="Connect on start", default=True,
                               description="Connect with the stored sign-in when Blender starts")

    def draw(self, context):
        self.layout.prop(self, "server")
        self.layout.prop(self, "username")
        self.layout.prop(self, "auto_connect")


def prefs():
    addon = bpy.context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon else None


def server_url() -> str:
    p = prefs()
    addr = (p.server if p else "").strip() or default_url()
    if "://" not in addr:
        host, _, port = addr.partition(":")
        return default_url(host or "127.0.0.1", int(port) if port else 9180)
    return addr


def config_dir() -> str:
    return bpy.utils.user_resource("CONFIG", path="paintbridge", create=True)


_MODE_ITEMS = [(key, generate.MODES[mode].label, desc) for key, mode, desc in (
    ("GENERATE", "txt2img", "A new image from the prompt"),
    ("REFINE", "img2img", "Redraw the active image with a strength"),
    ("INPAINT", "inpaint", "Regenerate the masked part of the active image"),
    ("OUTPAINT", "outpaint", "Fill the transparent part of the active image, or margins added around it"),
    ("UPSCALE", "upscale", "Enlarge the active image"),
)]


# What a control or reference shows the model: an image datablock, or one of the active scene's render passes,
# rendered at the generation size when the request is sent (host.render_passes).
STEER_SOURCES = [
    ("IMAGE", "Image", "An image datablock (scaled to the generation size)"),
    ("DEPTH", "Scene depth", "The active scene's Z pass from its camera, normalised: near = white, far = black"),
    ("NORMAL", "Scene normals", "The active scene's normal pass, in camera space (RGB = XYZ, blue towards the "
                                "camera)"),
    ("LINES", "Scene lines", "The active scene's Freestyle lines as white lines on black"),
]


class PaintbridgeSteer(bpy.types.PropertyGroup):
    """One control (ControlNet / T2I-Adapter) or reference (IP-Adapter) of the scene's form."""
    kind: EnumProperty(name="Kind", default="CONTROL", items=[
        ("CONTROL", "Control", "ControlNet or T2I-Adapter: steers the composition"),
        ("REFERENCE", "Reference", "IP-Adapter: steers the style and content")])
    enabled: BoolProperty(name="On", default=True, description="Send this control with the request")
    source: EnumProperty(name="Source", default="IMAGE", items=STEER_SOURCES)
    image: StringProperty(name="Image", default="")
    model: StringProperty(name="Model", default="", update=_hook("steer_model_changed"),
                          description="The ControlNet, T2I-Adapter or IP-Adapter on the engine")
    preprocess: EnumProperty(name="Preprocess", default="none",
                             items=[(p, p.capitalize(), "") for p in generate.PREPROCESSORS])
    strength: FloatProperty(name="Strength", default=1.0, min=0.0, max=2.0)
    start: FloatProperty(name="Start", default=0.0, min=0.0, max=1.0,
                         description="Acts from this fraction of the steps")
    end: FloatProperty(name="End", default=1.0, min=0.0, max=1.0, description="Acts until this fraction of the steps")


class PaintbridgeRegion(bpy.types.PropertyGroup):
    """A region: a mask image (white = here) with its own prompt."""
    enabled: BoolProperty(name="On", default=True)
    image: StringProperty(name="Mask", default="",
                          description="White (and opaque) where this region's prompt applies")
    prompt: StringProperty(name="Prompt", default="")
    negative_prompt: StringProperty(name="Negative", default="")


LIVE_PRESETS = [("NONE", "None (the model's own sampling)", ""), ("lcm", "LCM", ""), ("hyper-sd", "Hyper-SD", ""),
                ("lightning", "Lightning (SDXL)", ""), ("turbo", "Turbo", "")]


class PaintbridgeSettings(bpy.types.PropertyGroup):
    """The scene's generate form (saved with the .blend)."""
    model: StringProperty(name="Model", default="", update=_hook("model_changed"))
    prompt: StringProperty(name="Prompt", default="")
    negative_prompt: StringProperty(name="Negative", default="")
    mode: EnumProperty(name="Mode", default="GENERATE", items=_MODE_ITEMS)
    strength: FloatProperty(name="Strength", default=0.6, min=0.0, max=1.0)
    mask_source: EnumProperty(name="Mask", default="ALPHA", items=[
        ("ALPHA", "Image alpha", "Transparent pixels are regenerated"),
        ("IMAGE", "Mask image", "White in the chosen image is regenerated"),
    ])
    mask_image: StringProperty(name="Mask image", default="")
    extend_left: IntProperty(name="Left", default=0, min=0, max=4096, description="Outpaint: add this many pixels")
    extend_top: IntProperty(name="Top", default=0, min=0, max=4096, description="Outpaint: add this many pixels")
    extend_right: IntProperty(name="Right", default=0, min=0, max=4096, description="Outpaint: add this many pixels")
    extend_bottom: IntProperty(name="Bottom", default=0, min=0, max=4096,
                               description="Outpaint: add this many pixels")
    upscale_factor: EnumProperty(name="Factor", default="2", items=[("2", "2×", ""), ("4", "4×", "")])
    upscaler: StringProperty(name="Upscaler", default="",
                             description="Upscaler model on the engine (empty: a plain resize)")
    refine: BoolProperty(name="Refine with the model", default=False,
                         description="Upscale: then add detail with the model, tile by tile at its native size")
    refine_strength: FloatProperty(name="Refine strength", default=0.3, min=0.0, max=1.0,
                                   description="Upscale: how much each tile may change")
    lora: StringProperty(name="LoRA", default="", description="A LoRA on the engine to apply (empty: none)")
    lora_weight: FloatProperty(name="Weight", default=0.8, min=-2.0, max=2.0, step=5,
                               description="How strongly the LoRA applies")
    replace_active: BoolProperty(name="Replace active image", default=False,
                                 description="Write the result into the active image (undoable) instead of a new one")
    width: IntProperty(name="Width", default=512, min=8, max=8192, description="Generate: image width")
    height: IntProperty(name="Height", default=512, min=8, max=8192, description="Generate: image height")
    steps: IntProperty(name="Steps", default=20, min=1, max=1000)
    guidance: FloatProperty(name="Guidance", default=7.0, min=0.0, max=30.0)
    seed: IntProperty(name="Seed", default=generate.RANDOM, min=generate.RANDOM, max=INT_MAX,
                      description="-1: a random seed, shown after Generate (Reuse puts it here)")
    # the engine's pickers (protocol.generate): the sampler by its A1111 label, the schedules it takes, clip skip,
    # a VAE that fits the model
    scheduler: StringProperty(name="Sampler", default="Euler", update=_hook("scheduler_changed"),
                              description="The sampler (A1111 names), as the engine lists them")
    schedule: EnumProperty(name="Schedule", default=generate.DEFAULT_SCHEDULE,
                           items=[(k, v, "") for k, v in generate.SCHEDULE_LABELS.items()])
    clip_skip: IntProperty(name="Clip skip", default=1, min=generate.CLIP_SKIP_MIN, max=generate.CLIP_SKIP_MAX,
                           description="Use the text encoder's N-th last layer (A1111's Clip skip; 1 = off)")
    vae: StringProperty(name="VAE", default="", description="A VAE on the engine instead of the model's own "
                                                            "(empty: the model's own)")
    # controls and references, regions (bottom first: a later region takes its area from the earlier ones)
    steer: CollectionProperty(type=PaintbridgeSteer)
    steer_index: IntProperty(name="Control", default=0)
    regions: CollectionProperty(type=PaintbridgeRegion)
    region_index: IntProperty(name="Region", default=0)
    # live mode on the image being painted
    live_prompt: StringProperty(name="Prompt", default="", update=_hook("live_settings_changed"))
    live_strength: FloatProperty(name="Strength", default=0.3, min=0.0, max=1.0,
                                 update=_hook("live_settings_changed"))
    live_preset: EnumProperty(name="Preset", default="NONE", items=LIVE_PRESETS, update=_hook("live_settings_changed"),
                              description="A few-step sampling set-up on the engine")


def form_values(s: PaintbridgeSettings) -> dict:
    """The scene form as protocol.generate field values."""
    return {"model": s.model, "prompt": s.prompt, "negative_prompt": s.negative_prompt, "steps": s.steps,
            "guidance": round(s.guidance, 4), "seed": s.seed, "batch": 1, "lora": s.lora,
            "lora_weight": round(s.lora_weight, 4), "strength": round(s.strength, 4), "width": s.width,
            "height": s.height, "scale": float(s.upscale_factor), "upscaler": s.upscaler, "scheduler": s.scheduler,
            "schedule": s.schedule, "clip_skip": s.clip_skip, "vae": s.vae, "refine": s.refine,
            "refine_strength": round(s.refine_strength, 4)}


class PaintbridgeName(bpy.types.PropertyGroup):
    """One name in a picker list (the engine's main models, upscalers, LoRAs) for prop_search."""


class PaintbridgeCatalog(bpy.types.PropertyGroup):
    """What the engine offers, refilled on every models update."""
    models: CollectionProperty(type=PaintbridgeName)
    upscalers: CollectionProperty(type=PaintbridgeName)
    loras: CollectionProperty(type=PaintbridgeName)
    samplers: CollectionProperty(type=PaintbridgeName)   # by label
    vaes: CollectionProperty(type=PaintbridgeName)       # the ones that fit the chosen model
    controls: CollectionProperty(type=PaintbridgeName)   # ControlNets / T2I-Adapters that fit the chosen model
    references: CollectionProperty(type=PaintbridgeName)   # IP-Adapters


class PaintbridgeDownload(bpy.types.PropertyGroup):
    """An admin's model download: what to fetch (not saved in .blend)."""
    source: StringProperty(name="Source", default="",
                           description="A URL, a Hugging Face OWNER/REPO/FILE, or starter:NAME")
    name: StringProperty(name="Name", default="", description="The model's name on the engine (empty: from the file)")


class PaintbridgeImageItem(bpy.types.PropertyGroup):
    """One gallery row (name = the prompt, for the UIList's own filter)."""
    image_id: StringProperty(name="Image id")
    prompt: StringProperty(name="Prompt")
    seed: StringProperty(name="Seed")   # text: engine seeds go up to 2**53, beyond Blender's int
    app: StringProperty(name="App")
    mode: StringProperty(name="Mode")
    model: StringProperty(name="Model")
    starred: BoolProperty(name="Starred")
    width: IntProperty(name="Width")
    height: IntProperty(name="Height")
    created: StringProperty(name="Created")   # formatted (protocol.gallery.format_date)


class PaintbridgeGallery(bpy.types.PropertyGroup):
    items: CollectionProperty(type=PaintbridgeImageItem)
    index: IntProperty(name="Image", default=0)
    starred_only: BoolProperty(name="Starred only", default=False, update=_hook("gallery_filter_changed"),
                               description="List only starred images")
    search: StringProperty(name="Search", default="", update=_hook("gallery_filter_changed"),
                           description="Words that must all appear in the prompt")


CLASSES = (PAINTBRIDGE_AP_prefs, PaintbridgeSteer, PaintbridgeRegion, PaintbridgeSettings, PaintbridgeName,
           PaintbridgeCatalog, PaintbridgeImageItem,
           PaintbridgeGallery, PaintbridgeDownload)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.paintbridge = PointerProperty(type=PaintbridgeSettings)
    bpy.types.Scene.paintbridge_image = StringProperty(name="Paintbridge source image", default="")
    bpy.types.WindowManager.paintbridge_gallery = PointerProperty(type=PaintbridgeGallery)
    bpy.types.WindowManager.paintbridge_catalog = PointerProperty(type=PaintbridgeCatalog)
    bpy.types.WindowManager.paintbridge_download = PointerProperty(type=PaintbridgeDownload)


def unregister():
    del bpy.types.WindowManager.paintbridge_download
    del bpy.types.WindowManager.paintbridge_catalog
    del bpy.types.WindowManager.paintbridge_gallery
    del bpy.types.Scene.paintbridge_image
    del bpy.types.Scene.paintbridge
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)

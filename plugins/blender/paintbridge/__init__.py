"""Paintbridge for Blender: an Image Editor sidebar panel that drives a local Paintbridge engine.

One package, two ways to install: a Blender 4.2+ extension (blender_manifest.toml) and a legacy add-on
(bl_info) for Blender 3.x-4.1. The shared client (protocol/, with msgpack and websockets) is bundled as the
private package _vendor/ by `paintbridge plugin build blender` and imported as `._vendor.protocol`: Blender runs
every add-on in one interpreter, so we take no top-level module names. keyring lives in _vendor/site, appended to
sys.path last.

Modules (the same roles as in the Krita and GIMP plug-ins): this entry point; host (all image and pixel access);
controller (owns the Session, drains it, the state the panels draw); settings (preferences and the scene form);
panels (operators and panels: widgets only); workflow_form (a workflow's parameters as a form); png (thumbnails).
"""

bl_info = {
    "name": "Paintbridge",
    "author": "Paintbridge developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Image Editor > Sidebar > Paintbridge",
    "description": "Generate, refine, inpaint, outpaint and upscale images with a local Paintbridge engine",
    "category": "Paint",
}

import os
import sys

_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor", "site")
if os.path.isdir(_SITE) and _SITE not in sys.path:
    sys.path.append(_SITE)

if "controller" in locals():  # F8 / script reload: bottom floor first
    import importlib

    for _mod in (png, host, settings, workflow_form, controller, panels):  # noqa: F821
        importlib.reload(_mod)
else:
    from . import controller, host, panels, png, settings, workflow_form  # noqa: F401

drain = controller.drain


def register():
    settings.register()
    workflow_form.register()
    panels.register()
    controller.register()


def unregister():
    controller.unregister()
    panels.unregister()
    workflow_form.unregister()
    settings.unregister()

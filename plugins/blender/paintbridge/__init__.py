"""Paintbridge for Blender: an Image Editor sidebar panel that drives a local Paintbridge engine.

One package, two ways to install: a Blender 4.2+ extension (blender_manifest.toml) and a legacy add-on
(bl_info) for Blender 3.x-4.1. The shared client (protocol/, with msgpack and websockets) is bundled as the
private package _vendor/ by `paintbridge plugin build blender` and imported as `._vendor.protocol`: Blender runs
every add-on in one interpreter, so we take no top-level module names. keyring lives in _vendor/site, appended to
sys.path last.
"""

bl_info = {
    "name": "Paintbridge",
    "author": "Paintbridge developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "Image Editor > Sidebar > Paintbridge",
    "description": "Generate, refine, inpaint and upscale images with a local Paintbridge engine",
    "category": "Paint",
}

import os
import sys

_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor", "site")
if os.path.isdir(_SITE) and _SITE not in sys.path:
    sys.path.append(_SITE)

if "core" in locals():  # F8 / script reload
    import importlib

    importlib.reload(png)  # noqa: F821
    importlib.reload(core)  # noqa: F821
    importlib.reload(ui)  # noqa: F821
else:
    from . import core, png, ui  # noqa: F401  (png: imported for the reload above)

drain = core.drain


def register():
    ui.register()
    core.register()


def unregister():
    core.unregister()
    ui.unregister()

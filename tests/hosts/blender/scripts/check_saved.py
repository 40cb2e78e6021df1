"""Reopened .blend: the result image is still there, packed, with the same pixels."""
import bpy
from _util import addon, pattern

pkg, core = addon(ADDON_MODULE)
img = bpy.data.images[PARAMS["name"]]
assert img.packed_file is not None
assert core.image_to_pixels(img).data == pattern(7, 5)
RESULT["ok"] = True

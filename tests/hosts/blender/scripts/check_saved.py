"""Reopened .blend: the result image is still there, packed, with the same pixels."""
import bpy
from _util import addon, pattern

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
img = bpy.data.images[PARAMS["name"]]
assert img.packed_file is not None
assert host.image_to_pixels(img).data == pattern(7, 5)
RESULT["ok"] = True

"""The add-on without an engine: registration, pixel conversion, placing results, undo, deleted images."""

import importlib
import os
from array import array

import bpy
from _util import addon, pattern, vendored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
Pixels = vendored(ADDON_MODULE, "protocol.pixels").Pixels
ResultLayer = vendored(ADDON_MODULE, "protocol.session").ResultLayer

R = RESULT
R["addon_file"] = pkg.__file__
R["drain_without_session"] = pkg.drain()
assert hasattr(bpy.types, "PAINTBRIDGE_PT_panel") and bpy.types.PAINTBRIDGE_PT_panel.bl_category == "Paintbridge"
assert sett.prefs() is not None and sett.server_url() == "ws://127.0.0.1:9180/v1/ws"
R["numpy"] = host.np is not None
W, H = 7, 5
pat = pattern(W, H)

# byte image: wire -> Blender -> wire is exact and the right way up
img = bpy.data.images.new("src", W, H, alpha=True)
host.write_pixels(img, Pixels(pat, W, H))
a = array("f", bytes(W * H * 4 * 4))   # no numpy: Debian's Blender has none
img.pixels.foreach_get(a)
assert round(a[-4] * 255) == pat[(W - 1) * 4], "Blender's last pixel is the wire's top-right"  # top row last
got = bytes(round(v * 255) for v in a)
assert b"".join(reversed([got[i:i + 4 * W] for i in range(0, len(got), 4 * W)])) == pat
assert host.image_to_pixels(img).data == pat

# float image: written as linear premultiplied, read back to the same bytes
fimg = bpy.data.images.new("srcf", W, H, alpha=True, float_buffer=True)
host.write_pixels(fimg, Pixels(pat, W, H))
back = host.image_to_pixels(fimg).data
diff = max(abs(x - y) for x, y in zip(back, pat))
R["float_roundtrip_maxdiff"] = diff
assert diff <= 1, diff

# a new result: packed, fake user, right pixels
tag = {"mode": "GENERATE", "target": "new", "uid": None, "name": None}
name = host.place_result(tag, ResultLayer("r", Pixels(pat, W, H)))
res = bpy.data.images[name]
assert res.packed_file is not None and not res.is_dirty and res.use_fake_user
assert host.image_to_pixels(res).data == pat

# replace in place with an undo step; undo brings the old pixels back (undo_post handler reloads)
uid = host.ensure_uid(img)
img.pack()
bpy.ops.ed.undo_push(message="before")
inv = bytes(255 - v if i % 4 != 3 else v for i, v in enumerate(pat))
name2 = host.place_result({"mode": "REFINE", "target": "replace", "uid": uid, "name": "src"},
                          ResultLayer("r", Pixels(inv, W, H)))
assert name2 == "src" and host.image_to_pixels(bpy.data.images["src"]).data == inv
# ...and its packed file is the PNG the add-on encoded off the main thread: Blender did not encode the changed
# pixels on the main thread (image.pack() of a 4K image: seconds; issue 15 items 7 and 17)
png = importlib.import_module(f"{ADDON_MODULE}.png")
R["replace_packed_own_png"] = bytes(bpy.data.images["src"].packed_file.data) == png.encode_rgba(W, H, inv, level=1)
win = bpy.context.window_manager.windows[0]
with bpy.context.temp_override(window=win):
    bpy.ops.ed.undo()
R["after_undo_equals_original"] = host.image_to_pixels(bpy.data.images["src"]).data == pat
with bpy.context.temp_override(window=win):
    bpy.ops.ed.redo()
R["after_redo_equals_result"] = host.image_to_pixels(bpy.data.images["src"]).data == inv
assert R["after_undo_equals_original"] and R["after_redo_equals_result"]

# the source image was deleted while its job ran: the result becomes a new image, no error
gone = bpy.data.images.new("gone", W, H, alpha=True)
guid = host.ensure_uid(gone)
bpy.data.images.remove(gone)
name3 = host.place_result({"mode": "REFINE", "target": "replace", "uid": guid, "name": "gone"},
                          ResultLayer("r", Pixels(pat, W, H)))
assert name3 in bpy.data.images and host.image_to_pixels(bpy.data.images[name3]).data == pat
R["deleted_source_result"] = name3

# results survive save + reload (checked by the next run)
path = os.path.join(WORK_DIR, "smoke.blend")
bpy.ops.wm.save_as_mainfile(filepath=path)
R["blend"] = path
R["result_name"] = name

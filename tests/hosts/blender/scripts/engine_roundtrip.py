"""Against a real engine: Blender -> engine -> Blender pixel round trip, generate, inpaint.

PARAMS: url, token, model.
"""

from array import array

import bpy
from _util import addon, pattern, pump, vendored

pkg, A = addon(ADDON_MODULE)
ctl, host, sett = A.controller, A.host, A.settings
Pixels = vendored(ADDON_MODULE, "protocol.pixels").Pixels

R = RESULT
url, token, model = PARAMS["url"], PARAMS["token"], PARAMS["model"]
sett.prefs().server = url
s = ctl.get_session()
s.tokens.set(url, token)              # as if signed in earlier: the token comes from the store
R["token_backend"] = s.tokens.backend
bpy.ops.paintbridge.connect()
pump(ctl, lambda: ctl.STATE["state"] == "connected", 30, "connected")
pump(ctl, lambda: bool(ctl.STATE["models"]), 30, "models")
R["models"] = ctl.STATE["models"]
settings = bpy.context.scene.paintbridge
assert settings.model in ctl.STATE["models"], (settings.model, ctl.STATE["models"])
settings.model = model

# 1. round trip through the engine's blob store, via the add-on's own image <-> wire conversion
W, H = 13, 9
src = bpy.data.images.new("pattern", W, H, alpha=True)
host.write_pixels(src, Pixels(pattern(W, H), W, H))
px = host.image_to_pixels(src)
sha = s.client.upload(px.data)
data = s.client.download(sha)
back = bpy.data.images.new("back", W, H, alpha=True)
host.write_pixels(back, Pixels(data, W, H))
a = array("f", bytes(W * H * 4 * 4))   # no numpy: Debian's Blender has none
b = array("f", bytes(W * H * 4 * 4))
src.pixels.foreach_get(a)
back.pixels.foreach_get(b)
assert a == b, "round trip changed pixels"
assert host.image_to_pixels(back).data == pattern(W, H)
R["roundtrip"] = "exact"

# 2. generate a new image of the requested size, through the operator and drain()
settings.mode, settings.prompt, settings.steps, settings.seed = "GENERATE", "a red cube", 2, 7
settings.width, settings.height = 64, 48
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.generate()
pump(ctl, lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, "generate result")
assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
gen = bpy.data.images[ctl.STATE["results"][-1]]
R["generate"] = {"name": gen.name, "size": list(gen.size), "packed": gen.packed_file is not None}
assert tuple(gen.size) == (64, 48) and gen.packed_file is not None

# 3. inpaint from image alpha: the opaque (unmasked) pixels come back unchanged
W, H = 64, 64
base = bytearray(pattern(W, H))
for y in range(16, 40):
    for x in range(20, 44):
        base[(y * W + x) * 4 + 3] = 0          # transparent = generate here
for i in range(3, len(base), 4):
    if base[i] != 0:
        base[i] = 255                          # everything else opaque
base = bytes(base)
ip = bpy.data.images.new("inpaint-src", W, H, alpha=True)
host.write_pixels(ip, Pixels(base, W, H))
settings.mode, settings.mask_source, settings.strength, settings.replace_active = "INPAINT", "ALPHA", 1.0, False
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.generate(image="inpaint-src")
pump(ctl, lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, "inpaint result")
assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
out = host.image_to_pixels(bpy.data.images[ctl.STATE["results"][-1]]).data
assert len(out) == len(base)
changed_outside = sum(1 for i in range(0, len(base), 4) if base[i + 3] == 255 and out[i:i + 4] != base[i:i + 4])
changed_inside = sum(1 for i in range(0, len(base), 4) if base[i + 3] == 0 and out[i:i + 3] != base[i:i + 3])
R["inpaint"] = {"changed_outside_mask": changed_outside, "changed_inside_mask": changed_inside}
assert changed_outside == 0, changed_outside
assert changed_inside > 0

# 4. upscale through an upscaler model picked from the engine's list (main models and upscalers kept apart)
catalog = bpy.context.window_manager.paintbridge_catalog
R["catalog"] = {"models": [i.name for i in catalog.models], "upscalers": [i.name for i in catalog.upscalers]}
settings.mode, settings.upscale_factor, settings.replace_active = "UPSCALE", "2", False
settings.upscaler = "no-such-upscaler"
try:
    ctl.build_request(settings, gen)
    R["bad_upscaler"] = None
except ValueError as exc:
    R["bad_upscaler"] = str(exc)
settings.upscaler = R["catalog"]["upscalers"][0]
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.generate(image=gen.name)
pump(ctl, lambda: len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"], 300, "upscale result")
assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
R["upscale"] = list(bpy.data.images[ctl.STATE["results"][-1]].size)

# 5. upscale refined with the model (issue 20): in tiles, counted on the job; Generate above native asks hires
settings.upscaler, settings.refine, settings.refine_strength, settings.steps = "", True, 0.5, 2
n0 = len(ctl.STATE["results"])
assert "FINISHED" in bpy.ops.paintbridge.generate(image=gen.name)
tiles_seen = set()


def refined():
    job = s.jobs.latest()
    if job is not None and job.tiles:
        tiles_seen.add((job.tile, job.tiles))
    return len(ctl.STATE["results"]) > n0 or ctl.STATE["last_error"]


pump(ctl, refined, 300, "refined upscale result")
assert not ctl.STATE["last_error"], ctl.STATE["last_error"]
R["refined"] = list(bpy.data.images[ctl.STATE["results"][-1]].size)
R["refined_tiles"] = sorted(tiles_seen)
R["refined_job"] = s.jobs.latest().job
settings.refine = False
settings.mode, settings.width, settings.height = "GENERATE", 128, 96
R["hires"] = ctl.build_request(settings, None)[0].get("hires")
s.close()

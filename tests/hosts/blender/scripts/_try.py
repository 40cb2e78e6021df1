import bpy, time
from _util import addon
pkg, A = addon(ADDON_MODULE)
h = A.host
t = time.perf_counter()
kinds = PARAMS.get("kinds", ["DEPTH", "NORMAL", "LINES"])
try:
    snap = h.render_passes(bpy.context.scene, 64, 48, kinds)
    RESULT["render_s"] = time.perf_counter() - t
    for k in kinds:
        t = time.perf_counter()
        px = snap.pixels(k)
        RESULT[k] = [px.w, px.h, sorted(set(px.data[0::4]))[:3], sorted(set(px.data[0::4]))[-3:], len(set(px.data[0::4])), time.perf_counter() - t]
except Exception as e:
    import traceback
    RESULT["err"] = traceback.format_exc()
RESULT["nodes"] = [n.bl_idname for n in bpy.context.scene.node_tree.nodes] if bpy.context.scene.node_tree else None
RESULT["engine"] = bpy.context.scene.render.engine

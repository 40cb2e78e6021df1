# Runs inside GIMP (python-fu-eval) after _prelude.py: control and reference layers chosen by layer, and regions
# from layers whose prompt the Region Prompt procedure stored (issues 18 and 19); then "Use settings" on the result
# in a copy of the image without the region prompts (the plug-in's own modules, imported here).
W, H = 64, 48
conn = dict(model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"], steps=2)
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)

def layer(name, w, h, x, y, data, visible=True):
    lay = Gimp.Layer.new(img, name, w, h, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
    img.insert_layer(lay, None, 0)    # on top: the last one made is the top of the stack
    lay.set_offsets(x, y)
    put(lay, data)
    lay.set_visible(visible)
    return lay

def alpha_rows(w, h, rows):
    px = bytearray(opaque(pattern(w, h, 9)))
    for y in range(h):
        if y not in rows:
            for x in range(w):
                px[(y * w + x) * 4 + 3] = 0
    return bytes(px)

base = layer("base", W, H, 0, 0, opaque(pattern(W, H, 1)))
sketch = layer("sketch", 48, 32, 8, 8, opaque(pattern(48, 32, 2)))
ref = layer("ref", W, H, 0, 0, opaque(pattern(W, H, 3)))
off = layer("off", W, H, 0, 0, opaque(pattern(W, H, 4)), visible=False)   # a hidden control is off
sky = layer("sky", W, H, 0, 0, alpha_rows(W, H, range(0, 24)))
knight = layer("knight", 24, 24, 30, 20, opaque(pattern(24, 24, 5)))

import hashlib
OUT["sketch_sha"], OUT["ref_sha"] = (hashlib.sha256(get(lay)).hexdigest() for lay in (sketch, ref))
OUT["ids"] = {lay.get_name(): lay.get_id() for lay in (base, sketch, ref, off, sky, knight)}
OUT["region_sky"] = run("paintbridge-region-prompt", img, [sky], prompt="stormy sky", negative_prompt="sun")
knight.set_color_tag(Gimp.ColorTag.BLUE)    # the person's own colour tag: kept
OUT["region_knight"] = run("paintbridge-region-prompt", img, [knight], prompt="a knight")
OUT["region_ref"] = run("paintbridge-region-prompt", img, [ref], prompt="not for long")
OUT["region_ref_cleared"] = run("paintbridge-region-prompt", img, [ref], prompt="", negative_prompt="")
OUT["tags"] = {lay.get_name(): lay.get_color_tag().value_nick for lay in (base, ref, sky, knight)}
OUT["parasites"] = {lay.get_name(): (bytes(lay.get_parasite("paintbridge-region").get_data()).decode()
                                     if lay.get_parasite("paintbridge-region") else None)
                    for lay in (base, sketch, ref, sky, knight)}
OUT["bad_model"] = run("paintbridge-generate", img, [base], prompt="oil painting", seed=5, control_layer=sketch,
                       control_model="no-such-controlnet", **conn)
OUT["generate"] = run("paintbridge-generate", img, [base], prompt="oil painting", seed=5, control_layer=sketch,
                      control_preprocess="invert", control_strength=0.8, control_2_layer=off, reference_layer=ref,
                      **conn)

# "Use settings" (the gallery's button) in a copy without the region prompts: the controls are found again by
# their pixels, the region prompts go back onto the layers whose alpha was their mask
HERE = os.path.join(Gimp.directory(), "plug-ins", "paintbridge")
for p in (os.path.join(HERE, "_vendor"), HERE):
    sys.path.insert(0, p)
import paintbridge as pb, settings as pbs, controller as pbc
from protocol import forms
from protocol.client import Client
from protocol.updates import Recalled

dup = img.duplicate()
for lay in dup.get_layers():
    if lay.get_parasite("paintbridge-region"):
        lay.detach_parasite("paintbridge-region")
OUT["dup_ids"] = {lay.get_name(): lay.get_id() for lay in dup.get_layers()}
# the knight layer moved: its region cannot be matched any more
[k2] = [lay for lay in dup.get_layers() if lay.get_name() == "knight"]
k2.set_offsets(31, 20)
OUT["recall"] = None
if OUT["generate"]["status"] == "success":
    c = Client(os.environ["PB_URL"], os.environ["PAINTBRIDGE_TOKEN"], app="gimp", app_version="test")
    c.connect(timeout=30)
    try:
        job = c.call("job.get", {"job": OUT["generate"]["result"]["job"]})
        got = c.call("images.get", {"image": job["layers"][0]["image_id"]})
    finally:
        c.close()
    rec = Recalled(got["id"], got.get("params"), forms.recalled(got.get("params")), None, got)
    OUT["recall_text"], kept = pb.use_settings(rec, dup)
    OUT["recall"] = pbs.load(pbc.config_dir()).get("recall")
    OUT["dup_parasites"] = {lay.get_name(): (bytes(lay.get_parasite("paintbridge-region").get_data()).decode()
                                             if lay.get_parasite("paintbridge-region") else None)
                            for lay in dup.get_layers()}

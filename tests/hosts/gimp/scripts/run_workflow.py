# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
img = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
src = Gimp.Layer.new(img, "src", 40, 20, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(src, None, 0)
src.set_offsets(6, 4)
put(src, bytes([200, 30, 90, 255]) * (40 * 20))
conn = dict(server_url=os.environ["PB_URL"])
def wf(name, values, drawables=None):
    return run("paintbridge-workflow", img, [src] if drawables is None else drawables, workflow=name,
               values=values, **conn)
# the failures first: none may queue a job
img.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 8, 5, 3)
OUT["bad_source"] = wf("GimpShrink", '{"source": "selection"}')
OUT["unknown"] = wf("GimpShrink", '{"source": "active", "bogus": 3}')
OUT["no_such"] = wf("NoSuchFlow", '{}')
OUT["not_json"] = wf("GimpShrink", 'source=active')
Gimp.Selection.none(img)
OUT["no_selection"] = wf("GimpMasked", '{"source": "active", "area": "selection"}')
OUT["missing"] = wf("GimpShrink", '{}')
OUT["layers_after_failures"] = [l.get_name() for l in img.get_layers()]
OUT["ok"] = wf("GimpShrink", '{"source": "active"}')
l = img.get_layers()[0]
ok, x, y = l.get_offsets()
OUT["placed"] = [l.get_name(), x, y, l.get_width(), l.get_height()]
OUT["uniform"] = get(l) == bytes([200, 30, 90, 255]) * (32 * 16)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 10, 8, 5, 3)
OUT["masked"] = wf("GimpMasked", '{"source": "active", "area": "selection"}')

# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
W, H = 40, 24
SX, SY, SW, SH = 5, 3, 23, 11
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, pattern(W, H, 11))        # partial alpha: the composite over nothing keeps it (straight alpha)
expected = get(base, SX, SY, SW, SH)
img.select_rectangle(Gimp.ChannelOps.REPLACE, SX, SY, SW, SH)
OUT["run"] = run("paintbridge-refine", img, [base], strength=0.0, steps=1, model=os.environ["PB_MODEL"],
                 server_url=os.environ["PB_URL"])
top = img.get_layers()[0]
ok, x, y = top.get_offsets()
OUT["placed"] = [x, y, top.get_width(), top.get_height()]
got = get(top)
OUT["exact"] = got == expected
OUT["first_diff"] = next((i for i in range(min(len(got), len(expected))) if got[i] != expected[i]), None)

# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
img = Gimp.Image.new(16, 16, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(img, "base", 16, 16, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(layer, None, 0)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 4, 4, 8, 8)
OUT["run"] = run("paintbridge-inpaint", img, [layer], server_url="ws://127.0.0.1:9/v1/ws")
OUT["layers"] = [l.get_name() for l in img.get_layers()]

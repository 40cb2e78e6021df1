# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
W, H = 13, 7
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
layer = Gimp.Layer.new(img, "p", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(layer, None, 0)
data = pattern(W, H, 5)
put(layer, data)
OUT["same"] = get(layer) == data
OUT["sub_same"] = get(layer, 3, 2, 4, 3) == b"".join(data[((2 + r) * W + 3) * 4:((2 + r) * W + 7) * 4] for r in range(3))
img.select_rectangle(Gimp.ChannelOps.REPLACE, 2, 1, 5, 3)
OUT["bounds"] = list(Gimp.Selection.bounds(img))
m = bytes(img.get_selection().get_buffer().get(Gegl.Rectangle.new(0, 0, W, H), 1.0, "Y u8", Gegl.AbyssPolicy.NONE))
OUT["mask_rows"] = [list(m[r * W:(r + 1) * W]) for r in range(H)]

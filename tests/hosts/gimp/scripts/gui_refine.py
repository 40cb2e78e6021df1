# Runs inside GIMP with its GUI (gimp-3.0 under Xvfb) after _prelude.py: Refine on a displayed image.
W, H = 40, 24
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, pattern(W, H, 5))
display = Gimp.Display.new(img)
try:
    OUT["display"] = display.is_valid()
    expected = get(base, 4, 2, 20, 12)
    img.select_rectangle(Gimp.ChannelOps.REPLACE, 4, 2, 20, 12)
    OUT["run"] = run("paintbridge-refine", img, [base], strength=0.0, steps=1, model=os.environ["PB_MODEL"],
                     server_url=os.environ["PB_URL"])
    top = img.get_layers()[0]
    ok, x, y = top.get_offsets()
    OUT["placed"] = [x, y, top.get_width(), top.get_height()]
    OUT["exact"] = get(top) == expected
    OUT["display_after"] = display.is_valid()
finally:
    display.delete()

# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
img = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
conn = dict(server_url=os.environ["PB_URL"])
def top():
    l = img.get_layers()[0]
    ok, x, y = l.get_offsets()
    return {"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(), "hex": get(l).hex()}
OUT["older"] = run("paintbridge-gallery", img, [base], image_id=os.environ["PB_OLDER"], **conn)
OUT["older_layer"] = top()
OUT["newest"] = run("paintbridge-gallery", img, [base], image_id="", **conn)
OUT["newest_layer"] = top()
OUT["missing"] = run("paintbridge-gallery", img, [base], image_id="0123456789abcdef", **conn)
OUT["layers"] = len(img.get_layers())
OUT["undo"] = img.undo_is_enabled()

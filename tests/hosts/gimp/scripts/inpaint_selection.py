# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
W, H = 64, 48
SX, SY, SW, SH = 21, 13, 18, 14
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, opaque(pattern(W, H, 3)))
before_base = get(base)
before_vis = visible(img)
img.select_rectangle(Gimp.ChannelOps.REPLACE, SX, SY, SW, SH)
OUT["run"] = run("paintbridge-inpaint", img, [base], prompt="a red square", steps=2, strength=1.0,
                 model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"])
OUT["layers"] = []
for l in img.get_layers():
    ok, x, y = l.get_offsets()
    OUT["layers"].append({"name": l.get_name(), "x": x, "y": y, "w": l.get_width(), "h": l.get_height(),
                          "id": l.get_id(), "mask": l.get_mask() is not None})
OUT["base_unchanged"] = get(base) == before_base
after = visible(img)
diff_out, diff_in = 0, 0
for y in range(H):
    for x in range(W):
        i = (y * W + x) * 4
        changed = after[i:i + 4] != before_vis[i:i + 4]
        if SX <= x < SX + SW and SY <= y < SY + SH:
            diff_in += changed
        else:
            diff_out += changed
OUT["changed_outside"] = diff_out
OUT["changed_inside"] = diff_in
OUT["undo_enabled"] = img.undo_is_enabled()

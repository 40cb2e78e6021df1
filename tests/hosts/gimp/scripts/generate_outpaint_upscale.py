# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
W, H = 48, 32
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
put(base, opaque(pattern(W, H, 1)))
conn = dict(model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"], steps=1)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 8, 4, 20, 16)     # 20 is not a multiple of 8: clipped back
OUT["generate"] = run("paintbridge-generate", img, [base], prompt="x", seed=3, lora="tiny-lora-sd15", lora_weight=1.0,
                      **conn)
OUT["bad_lora"] = run("paintbridge-generate", img, [base], prompt="x", lora="no-such-lora", **conn)
Gimp.Selection.none(img)
# an outpaint that fails changes nothing: the canvas keeps its size (issue 15 item 11)
OUT["bad_outpaint"] = run("paintbridge-outpaint", img, [base], extend_right=16, extend_bottom=8, lora="no-such-lora",
                          **conn)
OUT["size_after_bad_outpaint"] = [img.get_width(), img.get_height()]
OUT["layers_after_bad_outpaint"] = len(img.get_layers())
OUT["outpaint"] = run("paintbridge-outpaint", img, [base], extend_right=16, extend_bottom=8, **conn)
OUT["size_after_outpaint"] = [img.get_width(), img.get_height()]
top = img.get_layers()[0]
mask = top.get_mask()
OUT["outpaint_mask"] = None
if mask is not None:
    ok, mx, my = top.get_offsets()
    m = bytes(mask.get_buffer().get(Gegl.Rectangle.new(0, 0, top.get_width(), top.get_height()), 1.0, "Y u8",
                                    Gegl.AbyssPolicy.NONE))
    tw = top.get_width()
    old = [m[y * tw + x] for y in range(32) for x in range(48)]                 # the image as it was
    new = [m[y * tw + x] for y in range(top.get_height()) for x in range(tw) if x >= 48 or y >= 32]
    OUT["outpaint_mask"] = {"at": [mx, my, tw, top.get_height()], "old_max": max(old), "new_min": min(new)}
# the old area shows the layers below (edit the base: it shows through, except under Generate's layer)
put(base, bytes([10, 200, 30, 255]) * (48 * 32))
vis = visible(img)
OUT["old_area_shows_base"] = all(vis[(y * 64 + x) * 4:(y * 64 + x) * 4 + 4] == bytes([10, 200, 30, 255])
                                 for y in range(32) for x in range(48) if not (8 <= x < 28 and 4 <= y < 20))
OUT["upscale"] = run("paintbridge-upscale", img, [base], scale=2, server_url=os.environ["PB_URL"])
up = Gimp.Image.get_by_id(OUT["upscale"]["result"]["image"]) if OUT["upscale"]["status"] == "success" else None
OUT["upscaled_size"] = [up.get_width(), up.get_height()] if up else None
OUT["esrgan"] = run("paintbridge-upscale", img, [base], scale=2, upscaler="tiny-esrgan",
                    server_url=os.environ["PB_URL"])
up2 = Gimp.Image.get_by_id(OUT["esrgan"]["result"]["image"]) if OUT["esrgan"]["status"] == "success" else None
OUT["esrgan_size"] = [up2.get_width(), up2.get_height()] if up2 else None
# refined with the model (issue 20): the new image's size, in tiles (the job's progress is read by the test)
OUT["refined"] = run("paintbridge-upscale", img, [base], scale=2, refine=True, refine_strength=0.5, steps=2,
                     prompt="detail", seed=3, model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"])
up3 = Gimp.Image.get_by_id(OUT["refined"]["result"]["image"]) if OUT["refined"]["status"] == "success" else None
OUT["refined_size"] = [up3.get_width(), up3.get_height()] if up3 else None
# Generate over an area above the model's native size (128 x 96 > 64²) asks for hires
big = Gimp.Image.new(128, 96, Gimp.ImageBaseType.RGB)
big_base = Gimp.Layer.new(big, "base", 128, 96, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
big.insert_layer(big_base, None, 0)
OUT["hires"] = run("paintbridge-generate", big, [big_base], prompt="hires", seed=4, **conn)
n_images = len(Gimp.get_images())
OUT["bad_upscaler"] = run("paintbridge-upscale", img, [base], scale=2, upscaler="no-such-upscaler",
                          server_url=os.environ["PB_URL"])
OUT["images_after_bad"] = len(Gimp.get_images()) - n_images
OUT["settings"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="")

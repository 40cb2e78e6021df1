# Runs inside GIMP with its GUI (gimp-3.0 under Xvfb) after _prelude.py: Generate on a displayed image through a
# link the test cuts while the job runs and restores once the engine has finished it (tests/hosts/cut_link.py).
# The procedure holds its session through the cut: the run must end with the result placed, not time out.
W, H = 64, 48
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
display = Gimp.Display.new(img)
try:
    import time
    t0 = time.monotonic()
    OUT["run"] = run("paintbridge-generate", img, [base], prompt="a fox", seed=12, steps=int(os.environ["PB_STEPS"]),
                     model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"])
    OUT["run_s"] = round(time.monotonic() - t0, 1)
    top = img.get_layers()[0]
    OUT["layers"] = len(img.get_layers())
    OUT["top"] = [top.get_name(), top.get_width(), top.get_height()]
finally:
    display.delete()

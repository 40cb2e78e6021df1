# Runs inside GIMP (python-fu-eval) after _prelude.py, with DISPLAY set: one procedure's dialog, interactively
# ($PB_PROC); the test closes it by killing the plug-in.
img = Gimp.Image.new(64, 48, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", 64, 48, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
img.select_rectangle(Gimp.ChannelOps.REPLACE, 8, 8, 16, 16)     # Inpaint needs a selection
OUT["run"] = run(os.environ["PB_PROC"], img, [base], run_mode=Gimp.RunMode.INTERACTIVE)

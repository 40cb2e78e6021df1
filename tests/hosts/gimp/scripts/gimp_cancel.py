# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
# A long Generate (200 steps: the demo model renders at its native 64 px, a step is fast); the test kills the plug-in process the way GIMP's own Cancel does (SIGKILL) while it runs.
img = Gimp.Image.new(64, 64, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", 64, 64, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
OUT["run"] = run("paintbridge-generate", img, [base], prompt=os.environ["PB_PROMPT"], steps=200,
                 model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"])
OUT["layers"] = [l.get_name() for l in img.get_layers()]

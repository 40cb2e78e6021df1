# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
# Issue 16 deliverable 5: Generate with the engine's pickers (sampler by its A1111 name, schedule, clip skip, VAE);
# a sampler the engine does not have is refused before anything is sent; an admin's Settings download follows the
# model download to the end (its progress lines), a bad source fails with the engine's reason; a user's is refused.
W, H = 32, 32
img = Gimp.Image.new(W, H, Gimp.ImageBaseType.RGB)
base = Gimp.Layer.new(img, "base", W, H, Gimp.ImageType.RGBA_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
img.insert_layer(base, None, 0)
conn = dict(model=os.environ["PB_MODEL"], server_url=os.environ["PB_URL"], steps=1)
OUT["generate"] = run("paintbridge-generate", img, [base], prompt="a picked kite", seed=5, scheduler="DPM++ 2M",
                      schedule="karras", clip_skip=2, vae=os.environ["PB_VAE"], **conn)
OUT["bad_sampler"] = run("paintbridge-generate", img, [base], prompt="x", scheduler="plms", **conn)
OUT["download"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="",
                      download=os.environ["PB_DOWNLOAD"])
OUT["bad_download"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="",
                          download=os.environ["PB_MISSING"])

# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
pdb = Gimp.get_pdb()
for name in ("paintbridge-generate", "paintbridge-refine", "paintbridge-inpaint", "paintbridge-outpaint",
             "paintbridge-upscale", "paintbridge-sign-in", "paintbridge-settings", "paintbridge-gallery",
             "paintbridge-workflow", "paintbridge-region-prompt", "paintbridge-live"):
    proc = pdb.lookup_procedure(name)
    OUT[name] = None if proc is None else {"menu": proc.get_menu_paths(),
                                           "args": [a.name for a in proc.get_arguments()]}

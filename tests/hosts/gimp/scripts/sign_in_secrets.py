# Runs inside GIMP (python-fu-eval) after _prelude.py; writes its findings to OUT.
# Sign in from a script (the password from $PAINTBRIDGE_PASSWORD, "remember me"), run a procedure with the stored
# sign-in, then look for the password and the token in every file of GIMP's profile except the token store.
img = Gimp.Image.new(16, 16, Gimp.ImageBaseType.RGB)
OUT["sign_in"] = run("paintbridge-sign-in", img, [], server_url=os.environ["PB_URL"], username=os.environ["PB_USER"],
                     remember_me=True)
OUT["settings"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="")
OUT["gallery"] = run("paintbridge-gallery", img, [], image_id="0123456789abcdef", server_url=os.environ["PB_URL"])
profile = Gimp.directory()
tokens_file = os.path.join(profile, "paintbridge", "paintbridge-tokens.json")
token = json.load(open(tokens_file))[os.environ["PB_URL"]] if os.path.exists(tokens_file) else None
OUT["token_stored"] = bool(token)
OUT["files_checked"] = 0
OUT["leaks"] = []
for folder, _, files in os.walk(profile):
    for f in files:
        path = os.path.join(folder, f)
        if path == tokens_file or "/plug-ins/" in path:
            continue
        data = open(path, "rb").read()
        OUT["files_checked"] += 1
        for what, secret in (("password", os.environ["PB_PASSWORD"]), ("token", token)):
            if secret and secret.encode() in data:
                OUT["leaks"].append([what, os.path.relpath(path, profile)])
OUT["plugin_settings"] = sorted(os.listdir(os.path.join(profile, "plug-in-settings"))) \
    if os.path.isdir(os.path.join(profile, "plug-in-settings")) else []
OUT["sign_out"] = run("paintbridge-settings", img, [], server_url=os.environ["PB_URL"], model="", sign_out=True)
OUT["after_sign_out"] = run("paintbridge-gallery", img, [], image_id="0123456789abcdef", server_url=os.environ["PB_URL"])
OUT["token"] = token   # the test asks the engine whether it still accepts it

"""Runs inside `blender -b --factory-startup --python bootstrap.py -- CONFIG.json`, or as
`python bootstrap.py -- CONFIG.json` with bpy as a module (host "bpy42", see blender_host.py).

Installs and enables the add-on zip (if any) into the isolated user directory that the harness set up through
BLENDER_USER_SCRIPTS / BLENDER_USER_CONFIG / BLENDER_USER_RESOURCES (as a legacy add-on, or as an extension
when the config says install_as="extension"), runs the test script, writes a JSON result file and exits
Blender with a status (0 ok, 1 the script failed, 2 the add-on could not be installed or enabled).

The test script runs with these globals:
  RESULT        dict; whatever the script puts in it is returned to pytest (must be JSON-serialisable)
  PARAMS        dict of parameters passed to run_in_blender(params=...)
  ADDON_MODULE  module name of the enabled add-on (None when no add-on was installed)
  WORK_DIR      a scratch directory private to this run
and `__name__ == "__main__"`. An uncaught exception (including AssertionError) fails the run; its traceback is
in the result's "traceback".

With the UI (config "gui", Blender started without -b), a script may define STEPS, a generator: after the script
body it is stepped from a bpy.app.timers timer while Blender's event loop runs (the add-on's own timers fire in
between); each `yield` returns control for the seconds yielded (None: at once). When it ends, or raises, the
result is written and Blender exits.
"""

import json
import os
import sys
import time
import traceback

T_PYTHON = time.time()  # first moment our Python runs inside Blender: start-up time = this - launch time


def _main() -> int:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    with open(argv[0], encoding="utf-8") as fh:
        config = json.load(fh)
    out = {
        "ok": False,
        "stage": "start",
        "error": None,
        "traceback": None,
        "result": {},
        "t_python": T_PYTHON,
        "timings": {},
    }

    def write():
        tmp = config["result_path"] + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(out, fh, default=repr, indent=1)
        os.replace(tmp, config["result_path"])

    status = 1
    try:
        import bpy

        if config.get("bpy_module"):
            # bpy as a Python module: Blender starts inside `import bpy`, so start-up ends here
            out["t_python"] = time.time()
        out["blender_version"] = bpy.app.version_string
        out["python_version"] = sys.version.split()[0]
        out["user_scripts"] = bpy.utils.user_resource("SCRIPTS")
        out["user_config"] = bpy.utils.user_resource("CONFIG")
        module = config.get("module")
        if config.get("blend_file"):
            out["stage"] = "open"
            bpy.ops.wm.open_mainfile(filepath=config["blend_file"])
        if config.get("addon_zip"):
            out["stage"] = "install"
            t = time.time()
            if config.get("install_as") == "extension":
                # 4.2+: unpacks into the repository's directory (under BLENDER_USER_RESOURCES/extensions) after
                # checking the manifest; the add-on is then bl_ext.<repo>.<id>. Enabled below, like a legacy
                # add-on, so that an install failure and an enable failure stay apart.
                res = bpy.ops.extensions.package_install_files(
                    repo=config["extension_repo"], filepath=config["addon_zip"], enable_on_install=False,
                    overwrite=True)
            else:
                res = bpy.ops.preferences.addon_install(filepath=config["addon_zip"], overwrite=True)
            if "FINISHED" not in res:
                raise RuntimeError(f"install returned {res}")
            if config.get("install_as") == "extension":
                # A rejected manifest (e.g. blender_version_min too new) is only printed, and FINISHED returned.
                ext_dir = f"{config['extension_repo']}/{module.rsplit('.', 1)[1]}"
                where = bpy.utils.user_resource("EXTENSIONS", path=ext_dir)
                if not os.path.isfile(os.path.join(where, "__init__.py")):
                    raise RuntimeError(f"package_install_files installed nothing at {where} (manifest rejected? "
                                       "see Blender's output)")
            out["timings"]["install"] = time.time() - t
            out["stage"] = "enable"
            t = time.time()
            try:
                res = bpy.ops.preferences.addon_enable(module=module)
            except RuntimeError as exc:  # 4.x raises the operator's error report; 3.4 only prints it
                res = {repr(exc)}
            if "FINISHED" not in res or module not in bpy.context.preferences.addons:
                # Enable again directly to get the real traceback.
                import addon_utils

                addon_utils.enable(module, default_set=True, handle_error=_raise)
                raise RuntimeError(f"add-on {module!r} did not enable (addon_enable returned {res})")
            out["timings"]["enable"] = time.time() - t
        out["stage"] = "script"
        globs = {
            "__name__": "__main__",
            "__file__": config["script_path"],
            "RESULT": out["result"],
            "PARAMS": config.get("params") or {},
            "ADDON_MODULE": module,
            "WORK_DIR": config["work_dir"],
        }
        sys.path.insert(0, os.path.dirname(config["script_path"]))  # helpers next to the script import
        t = time.time()
        with open(config["script_path"], encoding="utf-8") as fh:
            code = compile(fh.read(), config["script_path"], "exec")
        exec(code, globs)
        if config.get("gui") and globs.get("STEPS") is not None:
            out["stage"] = "event loop"
            _step_in_event_loop(globs["STEPS"], out, write, t)
            return None
        out["timings"]["script"] = time.time() - t
        out["stage"] = "done"
        out["ok"] = True
        status = 0
    except BaseException as exc:  # noqa: BLE001 - everything must land in the result file
        if isinstance(exc, SystemExit) and not exc.code:
            out["stage"] = "done"
            out["ok"] = True
            status = 0
        else:
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = traceback.format_exc()
            status = 2 if out["stage"] in ("install", "enable") else 1
    out["t_end"] = time.time()
    try:
        write()
    except Exception:
        traceback.print_exc()
        status = status or 1
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def _raise(exc):
    raise exc


def _step_in_event_loop(steps, out, write, t_script):
    import bpy

    def tick():
        try:
            delay = next(steps)
            return 0.0 if delay is None else float(delay)
        except StopIteration:
            out["stage"], out["ok"], status = "done", True, 0
        except BaseException as exc:  # noqa: BLE001
            out["error"] = f"{type(exc).__name__}: {exc}"
            out["traceback"] = traceback.format_exc()
            status = 1
        out["timings"]["script"] = time.time() - t_script
        out["t_end"] = time.time()
        write()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)   # at once: no "save changes?" on quit, no wait for the add-on's threads

    bpy.app.timers.register(tick, first_interval=0.0)


_status = _main()
if _status is not None:
    sys.exit(_status)

"""Runs inside `blender -b --factory-startup --python bootstrap.py -- CONFIG.json`.

Installs and enables the add-on zip (if any) into the isolated user scripts directory that the harness set up
through BLENDER_USER_SCRIPTS / BLENDER_USER_CONFIG, runs the test script, writes a JSON result file and exits
Blender with a status (0 ok, 1 the script failed, 2 the add-on could not be installed or enabled).

The test script runs with these globals:
  RESULT        dict; whatever the script puts in it is returned to pytest (must be JSON-serialisable)
  PARAMS        dict of parameters passed to run_in_blender(params=...)
  ADDON_MODULE  module name of the enabled add-on (None when no add-on was installed)
  WORK_DIR      a scratch directory private to this run
and `__name__ == "__main__"`. An uncaught exception (including AssertionError) fails the run; its traceback is
in the result's "traceback".
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

        out["blender_version"] = bpy.app.version_string
        out["python_version"] = sys.version.split()[0]
        out["user_scripts"] = bpy.utils.user_resource("SCRIPTS")
        out["user_config"] = bpy.utils.user_resource("CONFIG")
        module = config.get("module")
        if config.get("addon_zip"):
            out["stage"] = "install"
            t = time.time()
            res = bpy.ops.preferences.addon_install(filepath=config["addon_zip"], overwrite=True)
            if "FINISHED" not in res:
                raise RuntimeError(f"addon_install returned {res}")
            out["timings"]["install"] = time.time() - t
            out["stage"] = "enable"
            t = time.time()
            res = bpy.ops.preferences.addon_enable(module=module)
            if "FINISHED" not in res or module not in bpy.context.preferences.addons:
                # The operator only reports failures; enable again directly to get the real traceback.
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


sys.exit(_main())

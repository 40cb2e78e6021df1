"""Run scripts inside a real Blender with a Paintbridge add-on installed: headless, or with its UI under Xvfb.

    result = run_in_blender(addon_zip, script_path, timeout=120, params={...})
    result = run_in_blender(addon_zip, script_path, gui=True, ...)       # the UI and its event loop, timers firing

starts `blender -b --factory-startup` (or, with gui=True, `blender --factory-startup` under xvfb-run) with an isolated user configuration (BLENDER_USER_CONFIG,
BLENDER_USER_SCRIPTS, BLENDER_USER_DATAFILES point into a temporary directory, so nothing of the real user's
Blender set-up is read or written), installs the add-on zip with bpy.ops.preferences.addon_install, enables it
with bpy.ops.preferences.addon_enable, runs the script (see bootstrap.py for the globals it gets) and returns
the JSON result as a dict:

    ok, stage, error, traceback   outcome ("stage" says how far it got: [open,] install, enable, script, done)
    result                        the dict the script filled in (RESULT)
    returncode, stdout, stderr    of the Blender process
    startup_s                     launch -> first line of our Python inside Blender
    elapsed_s                     launch -> process exit
    timings                       install / enable / script seconds
    user_dir                      the isolated user directory (pass it back as user_dir= to reuse it)

No pytest dependency: usable from a plain Python prompt too. Blender is found through $PAINTBRIDGE_BLENDER or
`blender` on PATH (find_blender()).

Three hosts run the same scripts (host=...):
  "blender"  `blender -b --factory-startup` (Debian 12's 3.4); the zip is installed as a legacy add-on, so its
             module is the zip's top-level package ("paintbridge").
  "blender43" the Blender 4.3 program from the trixie host chroot (tests/hosts/chroot/setup_chroot.sh), Debian 13's
             package: no numpy, like every Debian/Ubuntu Blender. The zip is installed as a 4.2+ extension (see
             "bpy42"). The run's files are bound into the chroot at their own paths (tests/hosts/chroot/trixie.py).
  "bpy42"    Blender 4.2 LTS as a Python module (`python bootstrap.py` with `import bpy`) from the venv that
             setup_bpy.sh makes (find_bpy42()); the zip is installed as a 4.2 *extension* with
             bpy.ops.extensions.package_install_files into the "user_default" repository, so its manifest is
             validated and its module is "bl_ext.user_default.<manifest id>". BLENDER_USER_RESOURCES (4.2+)
             keeps config, scripts and extensions in the isolated user directory.

gui=True ("blender" and "blender43"): Blender starts without -b under Xvfb, so its window manager runs, timers
fire and the add-on drains its session on its own. bootstrap.py runs the script at start-up; a script that
defines STEPS (a generator) is then stepped from a bpy.app.timers timer - each `yield` gives the event loop
control for the number of seconds yielded - and Blender exits when it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BOOTSTRAP = HERE / "bootstrap.py"
SCRIPTS = HERE / "scripts"
sys.path.insert(0, str(HERE.parent / "chroot"))
import trixie  # noqa: E402

HOSTS = ("blender", "blender43", "bpy42")
GUI_HOSTS = ("blender", "blender43")            # bpy as a module has no window
CHROOT_BLENDER = "/usr/bin/blender"
BPY42_VENV = "/var/cache/paintbridge/bpy-4.2"   # made by setup_bpy.sh
EXTENSION_REPO = "user_default"                 # the local repository 4.2 creates by default


def find_blender() -> str | None:
    exe = os.environ.get("PAINTBRIDGE_BLENDER") or shutil.which("blender")
    return exe if exe and os.path.exists(exe) else None


def find_bpy42() -> str | None:
    """The python of the bpy 4.2 venv ($PAINTBRIDGE_BPY_VENV or /var/cache/paintbridge/bpy-4.2), if it exists."""
    exe = Path(os.environ.get("PAINTBRIDGE_BPY_VENV") or BPY42_VENV) / "bin" / "python"
    return str(exe) if exe.exists() else None


def find_host(host: str) -> str | None:
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}: choose one of {', '.join(HOSTS)}")
    if host == "blender43":
        return None if trixie.unavailable_reason(CHROOT_BLENDER) else CHROOT_BLENDER
    return find_blender() if host == "blender" else find_bpy42()


def unavailable_reason(host: str, gui: bool = False) -> str | None:
    """Why `host` cannot run here (None when it can)."""
    if gui and not shutil.which("xvfb-run"):
        return "xvfb-run not installed (apt-get install xvfb xauth)"
    if find_host(host):
        return None
    return {"blender": "Blender not installed (apt-get install blender, or set PAINTBRIDGE_BLENDER)",
            "blender43": trixie.unavailable_reason(CHROOT_BLENDER),
            "bpy42": "bpy 4.2 venv missing (run tests/hosts/blender/setup_bpy.sh)"}[host]


def extension_module_name(addon_zip: str | os.PathLike) -> str:
    """The module a 4.2 extension zip is enabled as: bl_ext.<repository>.<manifest id>."""
    import tomllib

    with zipfile.ZipFile(addon_zip) as zf:
        manifests = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "blender_manifest.toml"]
        if len(manifests) != 1:
            raise ValueError(f"{addon_zip}: expected one blender_manifest.toml, found {manifests}")
        ext_id = tomllib.loads(zf.read(manifests[0]).decode("utf-8"))["id"]
    return f"bl_ext.{EXTENSION_REPO}.{ext_id}"


def addon_module_name(addon_zip: str | os.PathLike) -> str:
    """The package name an add-on zip installs as: its single top-level directory (or .py file)."""
    with zipfile.ZipFile(addon_zip) as zf:
        tops = {n.split("/", 1)[0] for n in zf.namelist() if n and not n.startswith("__MACOSX")}
    if len(tops) != 1:
        raise ValueError(f"{addon_zip}: expected one top-level package, found {sorted(tops)}")
    top = tops.pop()
    return top[:-3] if top.endswith(".py") else top


def run_in_blender(
    addon_zip: str | os.PathLike | None,
    script_path: str | os.PathLike,
    timeout: float = 120,
    *,
    params: dict | None = None,
    blend_file: str | os.PathLike | None = None,
    user_dir: str | os.PathLike | None = None,
    env: dict | None = None,
    blender: str | None = None,
    host: str = "blender",
    gui: bool = False,
) -> dict:
    """Run `script_path` in headless Blender; see the module docstring for the returned dict.

    addon_zip: zip to install and enable, or None to run the script in bare Blender.
    host: "blender" (legacy add-on in `blender -b`) or "bpy42" (extension in bpy 4.2); `blender` overrides the
      executable (the Blender binary, or the bpy venv's python).
    gui: run with the UI under Xvfb (not -b); see the module docstring.
    blend_file: a .blend to open before the script runs (e.g. one saved by an earlier run).
    user_dir: reuse an isolated user directory from an earlier run (token files, installed add-on); by default a
      fresh temporary one is made and removed afterwards unless the run failed or PAINTBRIDGE_KEEP_TMP=1.
    """
    exe = blender or find_host(host)
    if not exe:
        raise FileNotFoundError(unavailable_reason(host))
    if gui and host not in GUI_HOSTS:
        raise ValueError(f"{host} has no UI to run")
    bpy_module = host == "bpy42"
    extension = host in ("bpy42", "blender43")
    own_dir = user_dir is None
    root = Path(user_dir) if user_dir else Path(tempfile.mkdtemp(prefix="pb-blender-"))
    for sub in ("config", "scripts", "datafiles", "work"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    result_path = root / "work" / "result.json"
    if result_path.exists():
        result_path.unlink()
    if not addon_zip:
        module = None
    else:
        module = extension_module_name(addon_zip) if extension else addon_module_name(addon_zip)
    config = {
        "addon_zip": str(Path(addon_zip).resolve()) if addon_zip else None,
        "module": module,
        "install_as": "extension" if extension else "addon",
        "bpy_module": bpy_module,
        "gui": gui,
        "extension_repo": EXTENSION_REPO,
        # bpy as a module opens no file from the command line: bootstrap.py opens it
        "blend_file": str(Path(blend_file).resolve()) if blend_file and bpy_module else None,
        "script_path": str(Path(script_path).resolve()),
        "result_path": str(result_path),
        "work_dir": str(root / "work"),
        "params": params or {},
    }
    config_path = root / "work" / "run.json"
    config_path.write_text(json.dumps(config, indent=1), encoding="utf-8")

    run_env = dict(os.environ)
    run_env.update(
        BLENDER_USER_CONFIG=str(root / "config"),
        BLENDER_USER_SCRIPTS=str(root / "scripts"),
        BLENDER_USER_DATAFILES=str(root / "datafiles"),
        # 4.2+: the root of all user resources, extensions included (3.4 ignores it)
        BLENDER_USER_RESOURCES=str(root),
        # Blender must not pick up the test runner's virtualenv or PYTHONPATH.
        PYTHONNOUSERSITE="1",
    )
    for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
        run_env.pop(var, None)
    if env:
        run_env.update(env)

    if bpy_module:
        # `import bpy` starts Blender; it reads no userpref.blend (checked on 4.2), and the user dirs are isolated
        cmd = [exe, str(BOOTSTRAP), "--", str(config_path)]
    else:
        cmd = [exe, *([] if gui else ["-b"]), "--factory-startup", "--python-exit-code", "1"]
        if blend_file:
            cmd.append(str(Path(blend_file).resolve()))
        cmd += ["--python", str(BOOTSTRAP), "--", str(config_path)]
    if host == "blender43":
        # Blender gets only our variables; the run's files are bound into the chroot at their own paths
        ours = {k: run_env[k] for k in ("BLENDER_USER_CONFIG", "BLENDER_USER_SCRIPTS", "BLENDER_USER_DATAFILES",
                                        "BLENDER_USER_RESOURCES", "PYTHONNOUSERSITE")}
        ours.update(env or {})
        binds = [HERE, Path(script_path).resolve().parent, root]
        binds += [Path(p).resolve().parent for p in (addon_zip, blend_file) if p]
        cmd = trixie.command(cmd, env=trixie.base_env(home=root / "work", **ours), binds=binds, display=gui)
    if gui:
        # -noreset: a resetting Xvfb can drop the next connection while a program opens and closes some
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24 -nolisten tcp -noreset", *cmd]

    t_launch = time.time()
    proc = subprocess.Popen(
        cmd, env=run_env, cwd=str(root / "work"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True, text=True, errors="replace",
    )
    timed_out = False
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        stdout, stderr = proc.communicate()
    t_exit = time.time()

    if result_path.exists():
        out = json.loads(result_path.read_text(encoding="utf-8"))
    else:
        out = {"ok": False, "stage": "launch", "error": "Blender wrote no result file", "traceback": None,
               "result": {}, "timings": {}}
    if timed_out:
        out["ok"] = False
        out["error"] = f"timed out after {timeout} s (stage {out.get('stage')})"
    out.update(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        elapsed_s=t_exit - t_launch,
        startup_s=(out["t_python"] - t_launch) if out.get("t_python") else None,
        user_dir=str(root),
        command=cmd,
        module=module,
        host=host,
    )
    if out["ok"] and proc.returncode != 0:
        out["ok"] = False
        out["error"] = f"Blender exited with status {proc.returncode}"
    if own_dir and out["ok"] and os.environ.get("PAINTBRIDGE_KEEP_TMP") != "1":
        shutil.rmtree(root, ignore_errors=True)
        out["user_dir"] = None
    return out


def describe_failure(out: dict) -> str:
    """A readable failure message for assertions: error, traceback and the tail of Blender's output."""
    parts = [f"stage={out.get('stage')} error={out.get('error')} returncode={out.get('returncode')}"]
    if out.get("traceback"):
        parts.append(out["traceback"])
    for name in ("stdout", "stderr"):
        text = (out.get(name) or "")[-3000:]
        if text.strip():
            parts.append(f"--- blender {name} (tail) ---\n{text}")
    if out.get("user_dir"):
        parts.append(f"(kept {out['user_dir']})")
    return "\n".join(parts)

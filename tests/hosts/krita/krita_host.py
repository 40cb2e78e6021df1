"""Run real Krita (under Xvfb) with a Paintbridge plug-in zip installed and enabled, and a test script.

Two hosts (host=...):
  "krita"    the machine's own Krita (Debian 12: 5.1), or $PAINTBRIDGE_KRITA
  "krita52"  Krita 5.2 from the trixie host chroot (tests/hosts/chroot/setup_chroot.sh), on the machine's Xvfb

Next to the plug-in, the test-only plug-in in driver/ is installed (the shipped one has no test entry point): it
runs the file named by PAINTBRIDGE_TEST_SCRIPT on Krita's main thread once the window exists; the script writes
JSON to PAINTBRIDGE_TEST_RESULT and Krita exits.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
DRIVER = HERE / "driver"
sys.path.insert(0, str(HERE.parent / "chroot"))
import trixie  # noqa: E402

HOSTS = ("krita", "krita52")
CHROOT_KRITA = "/usr/bin/krita"


def find_krita(host: str = "krita") -> str | None:
    """The Krita to run for `host`, or None when it (or xvfb-run) is missing."""
    if not shutil.which("xvfb-run"):
        return None
    if host == "krita52":
        return None if trixie.unavailable_reason(CHROOT_KRITA) else CHROOT_KRITA
    return os.environ.get("PAINTBRIDGE_KRITA") or shutil.which("krita")


def unavailable_reason(host: str) -> str | None:
    if not shutil.which("xvfb-run"):
        return "xvfb-run not installed (apt-get install xvfb xauth)"
    if host == "krita52":
        return trixie.unavailable_reason(CHROOT_KRITA)
    return None if find_krita(host) else "krita not installed (apt-get install krita python3-pyqt5)"


def write_blank_png(path: Path, w: int, h: int) -> Path:
    """A transparent RGBA PNG, for documents=... below."""
    raw = b"".join(b"\x00" + bytes(4 * w) for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return Path(path)


def run_in_krita(plugin_zip: Path, script: Path, timeout: float = 300, params: dict | None = None,
                 host: str = "krita", documents=(), opengl: bool = True) -> dict:
    """documents: image files Krita opens at start-up, as from its command line (`krita FILE`), before the
    script runs (the way File > Open makes a document, for the tests that need that path). opengl=False: Krita's
    raster canvas instead of its OpenGL one (Settings ▸ Display ▸ Canvas acceleration off)."""
    krita = find_krita(host)
    if krita is None:
        raise RuntimeError(unavailable_reason(host) or "krita not found")
    home = Path(tempfile.mkdtemp(prefix="pb-krita-"))
    cfg, data = home / "config", home / "data"
    pykrita = data / "krita" / "pykrita"
    pykrita.mkdir(parents=True)
    cfg.mkdir()
    with zipfile.ZipFile(plugin_zip) as zf:      # what "Import Python Plugin from File" does
        zf.extractall(pykrita)
    shutil.copytree(DRIVER, pykrita, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    # -noreset below matters as much as this: Krita opens and closes X connections while starting, and a
    # resetting Xvfb drops the next one ("could not connect to display", abort) in about half of all starts.
    (cfg / "kritarc").write_text("[General]\nAutoSaveInterval=0\nsessionOnStartup=0\nsaveSessionOnQuit=false\n"
                                 "FetchNews=false\n\n[python]\nenable_paintbridge=true\n"
                                 "enable_paintbridge_test_driver=true\n")
    if not opengl:
        (cfg / "kritadisplayrc").write_text("[General]\nOpenGLRenderer=none\n")
    result = home / "result.json"
    runtime = home / "runtime"
    runtime.mkdir(mode=0o700)
    script = Path(script).resolve()
    documents = [str(Path(d).resolve()) for d in documents]
    ours = dict(XDG_CONFIG_HOME=str(cfg), XDG_DATA_HOME=str(data), HOME=str(home),
                XDG_CACHE_HOME=str(home / "cache"), XDG_RUNTIME_DIR=str(runtime),
                PAINTBRIDGE_TEST_SCRIPT=str(script), PAINTBRIDGE_TEST_RESULT=str(result),
                PAINTBRIDGE_TEST_PARAMS=json.dumps(params or {}), PYTHONDONTWRITEBYTECODE="1",
                PAINTBRIDGE_TEST_T0=repr(time.time()))   # scripts report how long Krita took to bring its window up
    if host == "krita52":
        env = dict(os.environ)   # for xvfb-run; Krita itself gets only `ours` (and the display)
        argv = trixie.command([krita, "--nosplash", *documents], env=trixie.base_env(**ours),
                              binds=[home, script.parent, *{str(Path(d).parent) for d in documents}], display=True)
    else:
        env = dict(os.environ, **ours)
        for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(var, None)
        argv = [krita, "--nosplash", *documents]
        if os.environ.get("PAINTBRIDGE_KRITA_GDB"):   # diagnosis: a crash prints Krita's C++ backtrace in the log
            argv = ["gdb", "-q", "-batch", "-ex", "set pagination off", "-ex", "run", "-ex", "thread apply all bt 25",
                    "--args", *argv]
    start = time.monotonic()
    xvfb = ["xvfb-run", "-a", "-s", "-screen 0 1600x1200x24 -nolisten tcp -noreset"]
    proc = subprocess.Popen([*xvfb, *argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        partial = result.read_text() if result.exists() else "nothing"   # scripts may record where they were
        return {"ok": False, "error": f"Krita did not finish within {timeout}s; the script had written: {partial}",
                "log": out[-4000:]}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)   # Xvfb and anything else left behind
        except ProcessLookupError:
            pass
    if not result.exists():
        return {"ok": False, "error": "the test script wrote no result (plug-in not loaded?)", "log": out[-4000:]}
    res = json.loads(result.read_text())
    res["elapsed_s"] = round(time.monotonic() - start, 1)
    res["log"] = out[-(40000 if os.environ.get("PAINTBRIDGE_KRITA_GDB") else 2000):]
    shutil.rmtree(home, ignore_errors=True)
    return res

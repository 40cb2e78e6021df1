#!/usr/bin/env python3
"""Run GIMP 3 inside the trixie host chroot (tests/hosts/chroot/setup_chroot.sh): batch mode without a display
(gimp-console-3.0), or GIMP's GUI under Xvfb (gimp-3.0, gui=True).

Library use (tests)::

    from tests.hosts.gimp.gimp_host import GimpHost
    host = GimpHost()                       # $PAINTBRIDGE_HOST_ROOT or /var/cache/paintbridge/trixie-root
    if not host.available(): pytest.skip(host.unavailable_reason())
    res = host.run_batch(script, plugins=["plugins/gimp/paintbridge"], timeout=120)
    res = host.run_batch(script, plugins=[...], gui=True)    # the same script in GIMP with its windows
    res.stdout, res.stderr, res.returncode, res.result   # result: JSON the script wrote to $PAINTBRIDGE_RESULT

Command line::

    tests/hosts/gimp/gimp_host.py [--plugin DIR]... [--timeout S] [--env K=V]... SCRIPT.py|-

The script is Python run by GIMP's python-fu-eval batch interpreter (``Gimp``, ``Gegl``... must be imported
by the script itself). It runs inside the chroot as root with HOME=/root; the chroot shares the host's
network namespace, so a server on 127.0.0.1 is reachable. The environment variable PAINTBRIDGE_RESULT names a
file where the script may write JSON; it is read back into ``BatchResult.result``.

With gui=True GIMP starts with its windows on the machine's Xvfb and runs the batch script from its own main
loop once the GUI is up, so procedures run the way a menu click runs them (progress in the image window's status
bar when the image has a display).

Runs are serialized with a lock file (they share one GIMP profile). Each run has its own mount namespace
(proc, /dev/shm, /tmp: see tests/hosts/chroot/trixie.py), gone when the run ends, even on timeout.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chroot"))
import trixie  # noqa: E402

GIMP = "/usr/bin/gimp-console-3.0"
GIMP_GUI = "/usr/bin/gimp-3.0"
PLUGIN_DIR = "root/.config/GIMP/3.0/plug-ins"


@dataclasses.dataclass
class BatchResult:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float
    timed_out: bool = False
    result: object = None  # JSON written by the script to $PAINTBRIDGE_RESULT, if any

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def check(self) -> "BatchResult":
        if self.timed_out or self.returncode != 0:
            raise RuntimeError(
                f"GIMP batch run failed (rc={self.returncode}, timed_out={self.timed_out}, "
                f"{self.elapsed:.1f}s)\n--- stdout ---\n{self.stdout[-6000:]}\n--- stderr ---\n{self.stderr[-6000:]}"
            )
        return self


class GimpHost:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root else trixie.root()

    # --- availability -------------------------------------------------------------------------------
    def unavailable_reason(self, gui: bool = False) -> str | None:
        if gui and not shutil.which("xvfb-run"):
            return "xvfb-run not installed (apt-get install xvfb xauth)"
        return trixie.unavailable_reason(GIMP_GUI if gui else GIMP, self.root)

    def available(self) -> bool:
        return self.unavailable_reason() is None

    @property
    def plugin_root(self) -> Path:
        return self.root / PLUGIN_DIR

    # --- plug-ins -----------------------------------------------------------------------------------
    def install_plugin(self, src: str | os.PathLike, name: str | None = None) -> Path:
        """Copy a plug-in folder (containing NAME.py) into the chroot's GIMP profile; returns its path."""
        src = Path(src)
        name = name or src.name
        dst = self.plugin_root / name
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        main = dst / f"{name}.py"
        if main.exists():
            main.chmod(0o755)
        return dst

    def remove_plugin(self, name: str) -> None:
        shutil.rmtree(self.plugin_root / name, ignore_errors=True)

    # --- running ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _session(self):
        lock_path = self.root.parent / f".{self.root.name}.gimp.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)   # one GIMP profile: one run at a time
            yield

    def run_in_root(self, argv: list[str], *, stdin: str | None = None, timeout: float = 120,
                    env: dict | None = None, binds=(), gui: bool = False) -> BatchResult:
        """Run any command inside the chroot; with gui=True on a fresh Xvfb display (xvfb-run)."""
        why = self.unavailable_reason(gui)
        if why:
            raise RuntimeError(why)
        cmd = trixie.command(argv, env=trixie.base_env(PYTHONUNBUFFERED=1, GIO_USE_VFS="local", **(env or {})),
                             binds=binds, display=gui, chroot=self.root)
        if gui:
            cmd = ["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24 -nolisten tcp -noreset", *cmd]
        with self._session():
            t0 = time.monotonic()
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, start_new_session=True)
            timed_out = False
            try:
                out, err = proc.communicate(stdin, timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                self._kill(proc)
                out, err = proc.communicate()
            return BatchResult(proc.returncode, out, err, time.monotonic() - t0, timed_out)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        # GIMP starts plug-ins as children in the same session: kill the whole group.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue

    def run_batch(self, script: str, *, plugins=(), timeout: float = 180, env: dict | None = None,
                  extra_args: list[str] | None = None, gui: bool = False) -> BatchResult:
        """Run `script` through GIMP's python-fu-eval batch interpreter: gimp-console-3.0 without a display, or
        with gui=True gimp-3.0 with its windows under Xvfb. Plug-in folders in `plugins` are installed first.
        Does not raise on failure: call ``.check()``."""
        for p in plugins:
            self.install_plugin(p)
        work = Path(tempfile.mkdtemp(prefix="pb-gimp-"))
        result = work / "result.json"
        env = dict(env or {})
        env["PAINTBRIDGE_RESULT"] = str(result)
        argv = [GIMP_GUI if gui else GIMP, *([] if gui else ["-i"]), "--no-splash", *(extra_args or []),
                "--batch-interpreter", "python-fu-eval", "-b", "-", "--quit"]
        try:
            res = self.run_in_root(argv, stdin=script, timeout=timeout, env=env, binds=[work], gui=gui)
            if result.exists():
                try:
                    res.result = json.loads(result.read_text())
                except ValueError as e:
                    res.result = {"_unparsable": str(e), "_text": result.read_text()[:2000]}
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("script", help="python-fu-eval script file, or - for stdin")
    ap.add_argument("--plugin", action="append", default=[], help="plug-in folder to install (repeatable)")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--gui", action="store_true", help="gimp-3.0 with its windows under Xvfb")
    ap.add_argument("--root", default=None)
    a = ap.parse_args(argv)
    host = GimpHost(a.root)
    why = host.unavailable_reason(a.gui)
    if why:
        print(why, file=sys.stderr)
        return 2
    script = sys.stdin.read() if a.script == "-" else Path(a.script).read_text()
    env = dict(kv.split("=", 1) for kv in a.env)
    res = host.run_batch(script, plugins=a.plugin, timeout=a.timeout, env=env, gui=a.gui)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.result is not None:
        print("PAINTBRIDGE_RESULT " + json.dumps(res.result))
    print(f"[gimp_host] rc={res.returncode} timed_out={res.timed_out} elapsed={res.elapsed:.1f}s", file=sys.stderr)
    return 124 if res.timed_out else res.returncode


if __name__ == "__main__":
    sys.exit(main())

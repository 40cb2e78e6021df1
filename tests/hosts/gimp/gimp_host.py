#!/usr/bin/env python3
"""Run GIMP 3 (batch, no display) inside the Debian 13 chroot built by setup_chroot.sh.

Library use (tests)::

    from tests.hosts.gimp.gimp_host import GimpHost
    host = GimpHost()                       # $PAINTBRIDGE_GIMP_ROOT or /var/cache/paintbridge/gimp3-root
    if not host.available(): pytest.skip(host.unavailable_reason())
    res = host.run_batch(script, plugins=["plugins/gimp/paintbridge"], timeout=120)
    res.stdout, res.stderr, res.returncode, res.result   # result: JSON the script wrote to $PAINTBRIDGE_RESULT

Command line::

    tests/hosts/gimp/gimp_host.py [--plugin DIR]... [--timeout S] [--env K=V]... SCRIPT.py|-

The script is Python run by GIMP's python-fu-eval batch interpreter (``Gimp``, ``Gegl``... must be imported
by the script itself). It runs inside the chroot as root with HOME=/root; the chroot shares the host's
network namespace, so a server on 127.0.0.1 is reachable. The environment variable PAINTBRIDGE_RESULT names a
file (inside the chroot) where the script may write JSON; it is read back into ``BatchResult.result``.

Runs are serialized with a lock file (they share one GIMP profile). proc and a tmpfs /dev/shm are mounted for
the run and unmounted afterwards, even on timeout.
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
import time
import uuid
from pathlib import Path

DEFAULT_ROOT = "/var/cache/paintbridge/gimp3-root"
GIMP = "/usr/bin/gimp-console-3.0"
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


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == target for line in f if len(line.split()) > 1)


class GimpHost:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root or os.environ.get("PAINTBRIDGE_GIMP_ROOT") or DEFAULT_ROOT)

    # --- availability -------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        if os.geteuid() != 0:
            return "GIMP host tests need root (chroot)"
        if not (self.root / ".paintbridge-ready").is_file() or not (self.root / GIMP.lstrip("/")).exists():
            return (f"GIMP 3 chroot not found at {self.root}; build it with "
                    f"`sudo tests/hosts/gimp/setup_chroot.sh` (or set PAINTBRIDGE_GIMP_ROOT)")
        return None

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
        lock_path = self.root.parent / f".{self.root.name}.run.lock"
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            mounted = []
            try:
                for target, args in ((self.root / "proc", ["-t", "proc", "proc"]),
                                     (self.root / "dev/shm", ["-t", "tmpfs", "-o", "mode=1777,size=2g", "shm"])):
                    target.mkdir(parents=True, exist_ok=True)
                    if not _mounted(target):
                        subprocess.run(["mount", *args, str(target)], check=True)
                        mounted.append(target)
                yield
            finally:
                for target in reversed(mounted):
                    if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
                        subprocess.run(["umount", "-l", str(target)], capture_output=True)

    def _env(self, extra: dict | None) -> list[str]:
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "HOME": "/root",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "GIO_USE_VFS": "local",
            "NO_AT_BRIDGE": "1",
        }
        env.update({k: str(v) for k, v in (extra or {}).items()})
        return [f"{k}={v}" for k, v in env.items()]

    def run_in_root(self, argv: list[str], *, stdin: str | None = None, timeout: float = 120,
                    env: dict | None = None) -> BatchResult:
        """Run any command inside the chroot (proc and /dev/shm mounted)."""
        why = self.unavailable_reason()
        if why:
            raise RuntimeError(why)
        cmd = ["chroot", str(self.root), "/usr/bin/env", "-i", *self._env(env), *argv]
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
                  extra_args: list[str] | None = None) -> BatchResult:
        """Run `script` through gimp-console-3.0's python-fu-eval batch interpreter; plug-in folders in
        `plugins` are installed first. Does not raise on failure: call ``.check()``."""
        for p in plugins:
            self.install_plugin(p)
        token = uuid.uuid4().hex
        result_in_root = f"/tmp/pb-result-{token}.json"
        result_host = self.root / result_in_root.lstrip("/")
        env = dict(env or {})
        env["PAINTBRIDGE_RESULT"] = result_in_root
        argv = [GIMP, "-i", "--no-splash", *(extra_args or []),
                "--batch-interpreter", "python-fu-eval", "-b", "-", "--quit"]
        res = self.run_in_root(argv, stdin=script, timeout=timeout, env=env)
        if result_host.exists():
            try:
                res.result = json.loads(result_host.read_text())
            except ValueError as e:
                res.result = {"_unparsable": str(e), "_text": result_host.read_text()[:2000]}
            result_host.unlink()
        return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("script", help="python-fu-eval script file, or - for stdin")
    ap.add_argument("--plugin", action="append", default=[], help="plug-in folder to install (repeatable)")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--env", action="append", default=[], metavar="K=V")
    ap.add_argument("--root", default=None)
    a = ap.parse_args(argv)
    host = GimpHost(a.root)
    why = host.unavailable_reason()
    if why:
        print(why, file=sys.stderr)
        return 2
    script = sys.stdin.read() if a.script == "-" else Path(a.script).read_text()
    env = dict(kv.split("=", 1) for kv in a.env)
    res = host.run_batch(script, plugins=a.plugin, timeout=a.timeout, env=env)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    if res.result is not None:
        print("PAINTBRIDGE_RESULT " + json.dumps(res.result))
    print(f"[gimp_host] rc={res.returncode} timed_out={res.timed_out} elapsed={res.elapsed:.1f}s", file=sys.stderr)
    return 124 if res.timed_out else res.returncode


if __name__ == "__main__":
    sys.exit(main())

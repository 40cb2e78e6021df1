"""Run a program inside the trixie host chroot (tests/hosts/chroot/setup_chroot.sh): GIMP 3.0, Krita 5.2 and the
Blender 4.3 program from Debian 13.

    argv = command(["krita", "--nosplash"], env={...}, binds=[home, scripts_dir], display=True)
    subprocess.Popen(["xvfb-run", ..., *argv])        # or any other launcher

The command enters a private mount namespace (unshare), mounts proc, sysfs, a fresh /dev/shm and /tmp there, binds
each path in `binds` at the same path inside the chroot (a bound path outside /tmp leaves an empty directory
behind in the chroot as its mount point), and with display=True also the X server's sockets
(/tmp/.X11-unix) and the Xauthority file of the launcher's $DISPLAY, then runs the program with exactly `env`
(plus DISPLAY/XAUTHORITY). Everything it mounted goes away with the last process of the run, so a killed test
leaves no mount behind and runs do not share any. The network namespace is the machine's own: an engine
listening on 127.0.0.1 is reachable from inside.

No pytest dependency; needs root (unshare, chroot).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_ROOT = "/var/cache/paintbridge/trixie-root"
SETUP = "tests/hosts/chroot/setup_chroot.sh"

# Runs as `sh -c ENTER sh ROOT BIND... -- PROGRAM...` inside the new mount namespace.
ENTER = r'''
set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys" 2>/dev/null || true
mkdir -p "$root/dev/shm"
mount -t tmpfs -o mode=1777,size=4g tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
bind() { mkdir -p "$root$1"; mount --bind "$1" "$root$1"; }
while [ "$1" != "--" ]; do bind "$1"; shift; done; shift
if [ -n "$PB_DISPLAY" ]; then
    [ -d /tmp/.X11-unix ] && bind /tmp/.X11-unix
    if [ -n "$XAUTHORITY" ]; then
        bind "$(dirname "$XAUTHORITY")"
        set -- "XAUTHORITY=$XAUTHORITY" "$@"
    fi
    set -- "DISPLAY=$DISPLAY" "$@"
fi
exec chroot "$root" /usr/bin/env -i "$@"
'''


def root() -> Path:
    # PAINTBRIDGE_GIMP_ROOT: the older name, from when only GIMP lived in the chroot
    return Path(os.environ.get("PAINTBRIDGE_HOST_ROOT") or os.environ.get("PAINTBRIDGE_GIMP_ROOT") or DEFAULT_ROOT)


def unavailable_reason(program: str, chroot: os.PathLike | None = None) -> str | None:
    """Why `program` (an absolute path inside the chroot) cannot be run there, or None."""
    if os.geteuid() != 0:
        return "the trixie host chroot needs root (unshare, chroot)"
    r = Path(chroot) if chroot else root()
    if not (r / ".paintbridge-ready").is_file() or not (r / program.lstrip("/")).exists():
        return (f"{program} not found in the trixie host chroot at {r}; build it with `sudo {SETUP}` "
                f"(or set PAINTBRIDGE_HOST_ROOT)")
    return None


def base_env(home: str | os.PathLike = "/root", **extra) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(home), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "NO_AT_BRIDGE": "1"}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def command(argv: list[str], *, env: dict, binds=(), display: bool = False,
            chroot: os.PathLike | None = None) -> list[str]:
    """The argv that runs `argv` inside the chroot (`chroot`, default root()); see the module docstring."""
    paths = sorted({str(Path(b).resolve()) for b in binds})
    # a path under another bound path is already visible
    paths = [p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths)]
    # PB_DISPLAY is read by ENTER in the namespace, before env -i; the launcher (xvfb-run) sets DISPLAY there
    prefix = ["env", "PB_DISPLAY=1"] if display else []
    return [*prefix, "unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", ENTER, "sh",
            str(chroot or root()), *paths, "--", *[f"{k}={v}" for k, v in env.items()], *argv]

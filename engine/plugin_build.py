"""`paintbridge plugin build krita|blender|gimp -o FILE.zip`: one installable zip per host.

Each zip holds the host's thin adapter (plugins/HOST/) plus, under `paintbridge/_vendor/`, the shared client
(`protocol`) and its pure-Python dependencies. Compiled extension modules are left out on purpose: msgpack and
websockets fall back to their pure-Python code, so one zip works on every host's Python (Krita's 3.10, Blender's,
GIMP's 3.13).

`_vendor` is a package: Krita and Blender run every add-on in one interpreter, so their adapters import
`paintbridge._vendor.protocol`, which reaches its msgpack and websockets as siblings (protocol.dependency); no
top-level name is taken, and another add-on's websockets (krita-ai-diffusion bundles one) can't replace ours.
keyring and its helpers import each other by top-level name, so they sit in `_vendor/site`, which adapters append
to the end of sys.path: a copy the host already has wins. GIMP runs each plug-in in its own process and simply
puts `_vendor` first on sys.path.
"""

from __future__ import annotations

import importlib.util
import stat
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ROOT / "plugins"
PROTOCOL = ROOT / "protocol"

# Pure-Python packages bundled with every plug-in. keyring and its helpers are optional: when a host lacks a
# keyring backend the token store falls back to a 0600 file.
VENDORED = ["msgpack", "websockets"]
OPTIONAL_VENDORED = ["keyring", "jaraco", "more_itertools", "importlib_metadata", "zipp", "jeepney"]
SKIP_SUFFIXES = (".so", ".pyd", ".dylib", ".c", ".h", ".pyx", ".pxd", ".pyc")

HOSTS = {
    # host: (files from plugins/HOST copied to the zip root, package folder that receives _vendor)
    "krita": (["paintbridge.desktop", "paintbridge"], "paintbridge"),
    "blender": (["paintbridge"], "paintbridge"),
    "gimp": (["paintbridge"], "paintbridge"),
}


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(spec.origin) if spec.origin else None


def _add_tree(zf: zipfile.ZipFile, src: Path, arc: str):
    if src.is_file():
        _add_file(zf, src, arc)
        return
    for f in sorted(src.rglob("*")):
        if f.is_dir() or "__pycache__" in f.parts or f.suffix in SKIP_SUFFIXES or f.name.endswith(".dist-info"):
            continue
        _add_file(zf, f, f"{arc}/{f.relative_to(src).as_posix()}")


def _add_file(zf: zipfile.ZipFile, f: Path, arc: str):
    info = zipfile.ZipInfo(arc, date_time=time.localtime(f.stat().st_mtime)[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    mode = stat.S_IMODE(f.stat().st_mode)
    info.external_attr = (stat.S_IFREG | (mode if mode & 0o111 else 0o644)) << 16   # keep exec bits (GIMP)
    zf.writestr(info, f.read_bytes())


def build(host: str, out: Path) -> Path:
    if host not in HOSTS:
        raise ValueError(f"unknown host {host!r}: choose one of {', '.join(HOSTS)}")
    files, package = HOSTS[host]
    src = PLUGINS / host
    missing = [f for f in files if not (src / f).exists()]
    if missing:
        raise FileNotFoundError(f"plugins/{host} lacks {', '.join(missing)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w") as zf:
        for f in files:
            _add_tree(zf, src / f, f)
        vendor = f"{package}/_vendor"
        zf.writestr(f"{vendor}/__init__.py", '"""Paintbridge\'s private copies: see engine/plugin_build.py."""\n')
        _add_tree(zf, PROTOCOL, f"{vendor}/protocol")
        for name in VENDORED + OPTIONAL_VENDORED:
            path = _package_dir(name)
            if path is None:
                if name in VENDORED:
                    raise RuntimeError(f"{name} is not installed; it must be bundled into the plug-in")
                continue
            _add_tree(zf, path, f"{vendor}/{path.name}" if name in VENDORED else f"{vendor}/site/{path.name}")
    return out


def cmd_build(args) -> int:
    hosts = list(HOSTS) if args.host == "all" else [args.host]
    for host in hosts:
        out = Path(args.output)
        if args.host == "all" or out.is_dir():
            out = out / f"paintbridge-{host}.zip"
        try:
            path = build(host, out)
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
    return 0


def register_cli(sub):
    p = sub.add_parser("plugin", help="build the host plug-ins")
    ps = p.add_subparsers(dest="plugin_cmd", required=True)
    b = ps.add_parser("build", help="make an installable zip")
    b.add_argument("host", choices=[*HOSTS, "all"])
    b.add_argument("-o", "--output", required=True, help="zip file (or a folder for 'all')")
    b.set_defaults(func=cmd_build)

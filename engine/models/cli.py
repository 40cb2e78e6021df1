"""`paintbridge models ...`: make-demo (and the model manager commands)."""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_make_demo(args) -> int:
    from .demo import make_demo

    dest = Path(args.dir).expanduser()
    name = args.name or f"tiny-{args.arch}" + ("" if args.format == "diffusers" else "-single")
    final = dest / (name if args.format == "diffusers" else f"{name}.safetensors")
    if final.exists():
        print(f"error: {final} exists", file=sys.stderr)
        return 1
    try:
        made = make_demo(dest, args.arch, args.format)
        path = made.rename(final)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (random weights: it produces noise; for trying and testing only)")
    return 0


def register_cli(sub):
    p = sub.add_parser("models", help="model files: demo models, probe, scan, install, list, remove")
    ms = p.add_subparsers(dest="models_cmd", required=True)
    d = ms.add_parser("make-demo", help="write a tiny random-weight model (produces noise) for trying and tests")
    d.add_argument("dir")
    d.add_argument("--arch", choices=["sd15", "sdxl", "flux"], default="sd15")
    d.add_argument("--format", choices=["diffusers", "single-file"], default="diffusers")
    d.add_argument("--name", help="model name (default tiny-ARCH)")
    d.set_defaults(func=cmd_make_demo)

"""`paintbridge models ...`: make-demo, probe, scan, install, list, remove, download, starter.

The manager commands work on the data folder's database (--data-dir / $PAINTBRIDGE_DATA_DIR, like every other
command), also while an engine runs on it: a running engine sees the change with its next request.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_make_demo(args) -> int:
    from .demo import make_demo

    dest = Path(args.dir).expanduser()
    one_file = args.format == "single-file" or args.arch in ("esrgan", "lora-sd15", "ipadapter-sd15")
    name = args.name or f"tiny-{args.arch}" + ("-single" if args.format == "single-file" and not
                                               args.arch.startswith(("esrgan", "lora")) else "")
    final = dest / (f"{name}.safetensors" if one_file else name)
    # an IP-Adapter comes with its CLIP image encoder (a clip_vision model), named NAME-encoder
    encoder = None
    if args.arch == "ipadapter-sd15":
        encoder = dest / (f"{name}-encoder.safetensors" if args.format == "single-file" else f"{name}-encoder")
    for f in (final, encoder):
        if f is not None and f.exists():
            print(f"error: {f} exists", file=sys.stderr)
            return 1
    try:
        made = make_demo(dest, args.arch, args.format)
        path = made.rename(final)
        if encoder is not None:
            made_enc = dest / ("demo-clip-vision.safetensors" if args.format == "single-file" else "demo-clip-vision")
            made_enc.rename(encoder)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path} (random weights: it produces noise; for trying and testing only)")
    if encoder is not None:
        print(f"wrote {encoder} (its image encoder, a clip_vision model)")
    if args.arch in ("controlnet-sd15", "t2i-sd15", "ipadapter-sd15", "controlnet-sdxl"):
        print(f"for the {'sdxl' if args.arch.endswith('sdxl') else 'sd15'} demo model (`models make-demo --arch "
              f"{'sdxl' if args.arch.endswith('sdxl') else 'sd15'}`)")
    elif not args.arch.startswith(("esrgan", "lora")):
        from .registry import native_size_hint

        size = native_size_hint(path)
        print(f"made for {size}×{size} images (its native_size): larger ones only take longer (a 512×512 request "
              f"is {(512 // size) ** 2}× the work on CPU)")
    return 0


def _fail(exc: BaseException) -> int:
    msg = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    print(f"error: {msg}", file=sys.stderr)
    return 1


def _registry(args):
    from ..config import load_config
    from .registry import ModelRegistry

    cfg = load_config(getattr(args, "data_dir", None))
    return ModelRegistry([], db_path=cfg.db_path, install_dir=cfg.data_dir / "models", scan=False)


def _hash_now(reg, quiet: bool = False) -> None:
    from tqdm import tqdm

    pending = [e for e in reg.list() if e.sha256 is None and not e.missing]
    if not pending:
        return
    bar = tqdm(total=len(pending), desc="hashing", unit="model", file=sys.stderr, disable=quiet)
    reg.hash_pending(progress=lambda name: bar.update(1))
    bar.close()


def cmd_probe(args) -> int:
    from .probe import probe

    try:
        info = probe(Path(args.path).expanduser())
    except Exception as exc:   # ModelError for unknown/unreadable files; anything else still gets one line
        return _fail(exc)
    if args.json:
        print(json.dumps(info))
    else:
        base = info["base"] or "-"
        print(f"{info['type']}  base={base}  variant={info['variant']}  prediction={info['prediction_type'] or '?'}"
              f"  format={info['format']}")
    return 0


def cmd_scan(args) -> int:
    from tqdm import tqdm

    from .registry import candidates

    try:
        reg = _registry(args)
        root = Path(args.dir).expanduser()
        total = len(candidates(root)) if root.is_dir() else 0
        bar = tqdm(total=total, desc="scanning", unit="file", file=sys.stderr, disable=args.quiet)
        rep = reg.scan(root, progress=lambda p: bar.update(1))
        bar.close()
        if args.hash:
            _hash_now(reg, args.quiet)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(rep.public()))
        return 0
    print(f"{len(rep.added)} added, {len(rep.updated)} updated, {len(rep.unchanged)} unchanged, "
          f"{len(rep.removed)} removed, {len(rep.skipped)} skipped")
    for path, reason in rep.skipped:
        print(f"  skipped {path}: {reason}")
    return 0


def cmd_install(args) -> int:
    try:
        reg = _registry(args)
        entry = reg.install(Path(args.path), copy=args.copy, name=args.name)
        if args.hash:
            _hash_now(reg, True)
            entry = reg.get(entry.name)
    except Exception as exc:
        return _fail(exc)
    print(f"installed {entry.name}: {entry.type} {entry.family or ''} ({entry.path})")
    return 0


def cmd_list(args) -> int:
    try:
        reg = _registry(args)
        entries = reg.list(args.type, args.base)
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps([e.public(admin=True) for e in entries]))
        return 0
    if not entries:
        print("no models registered: `paintbridge models scan DIR` or `paintbridge models install PATH`")
        return 0
    w = max(len(e.name) for e in entries)
    for e in entries:
        flag = "  MISSING" if e.missing else ""
        sha = (e.sha256 or "hash pending")[:12]
        print(f"{e.name:<{w}}  {e.type:<10} {e.family or '-':<5} {e.variant:<8} {e.format:<10} "
              f"{e.size / 1e6:>9.1f} MB  {sha:<12}  {e.path}{flag}")
    return 0


def cmd_remove(args) -> int:
    try:
        entry = _registry(args).remove(args.name)
    except Exception as exc:
        return _fail(exc)
    where = {"scan": f"hidden; the file stays in place ({entry.path})", "copy": "its copy was deleted",
             "install": f"the file stays in place ({entry.path})"}[entry.source]
    print(f"removed {entry.name}: {where}")
    return 0


def _read_token(args) -> str | None:
    """A token from --token-file (`-`: stdin) or $PAINTBRIDGE_DOWNLOAD_TOKEN; never from the command line, where
    every user of the machine could read it in the process list. Hub downloads also use HF_TOKEN or a stored
    `hf auth login` when none is given here."""
    import os

    if args.token_file:
        text = sys.stdin.read() if args.token_file == "-" else Path(args.token_file).expanduser().read_text()
        return text.strip() or None
    return os.environ.get("PAINTBRIDGE_DOWNLOAD_TOKEN") or None


def cmd_download(args) -> int:
    from tqdm import tqdm

    from .download import Download, parse_source

    bar = None

    def progress(p):
        nonlocal bar
        if args.quiet:
            return
        if p.state in ("downloading", "verifying"):
            if bar is None:
                bar = tqdm(total=p.total, initial=p.bytes, unit="B", unit_scale=True, unit_divisor=1024,
                           desc=p.name or "download", file=sys.stderr)
            if p.total is not None and bar.total != p.total:
                bar.total = p.total
            bar.update(p.bytes - bar.n)

    try:
        source = parse_source(args.source, args.sha256, args.revision)
        reg = _registry(args)
        d = Download(source, reg.install_dir, reg, args.name, _read_token(args), progress)
        try:
            result = d.run()
        except KeyboardInterrupt:   # the partial file stays in DATA_DIR/models/.downloads/
            print("\ninterrupted: run the same command again to resume", file=sys.stderr)
            return 130
        finally:
            if bar is not None:
                bar.close()
    except Exception as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(result))
    elif "model" in result:
        m = result["model"]
        print(f"installed {m['name']}: {m['type']} {m['base'] or ''} ({m['path']}, sha256 {result['sha256']})")
    else:
        print(f"saved {result['path']} (sha256 {result['sha256']}; a support file, not a listed model)")
    return 0


def cmd_starter(args) -> int:
    from .download import starter_list

    entries = starter_list()
    if args.json:
        print(json.dumps(entries))
        return 0
    w = max(len(e["name"]) for e in entries)
    for e in entries:
        size = f"{e['size'] / 1e9:6.2f} GB" if e.get("size") else "     ? GB"
        where = e.get("url") or f"{e['repo']}/{e['file']}"
        print(f"{e['name']:<{w}}  {e['type']:<12} {e.get('base') or '-':<5} {size}  {e['title']}\n"
              f"{'':<{w}}  {where}")
    print("\nfetch one with: paintbridge models download starter:NAME")
    return 0


def register_cli(sub):
    p = sub.add_parser("models", help="model files: demo models, probe, scan, install, list, remove, download")
    ms = p.add_subparsers(dest="models_cmd", required=True)
    d = ms.add_parser("make-demo", help="write a tiny random-weight model (produces noise) for trying and tests")
    d.add_argument("dir")
    d.add_argument("--arch", choices=["sd15", "sd2", "sdxl", "flux", "esrgan", "lora-sd15", "controlnet-sd15",
                                      "controlnet-sdxl", "t2i-sd15", "ipadapter-sd15"], default="sd15",
                   help="esrgan: a 2× upscaler; lora-sd15: a LoRA for the sd15 demo (each one .safetensors file); "
                        "controlnet-sd15/-sdxl, t2i-sd15: control models for the sd15/sdxl demos; ipadapter-sd15: an "
                        "IP-Adapter for the sd15 demo and its image encoder (NAME-encoder)")
    d.add_argument("--format", choices=["diffusers", "single-file"], default="diffusers")
    d.add_argument("--name", help="model name (default tiny-ARCH)")
    d.set_defaults(func=cmd_make_demo)

    def data_dir(q):
        q.add_argument("--data-dir", default=argparse.SUPPRESS,
                       help="data folder (default: $PAINTBRIDGE_DATA_DIR or the platform's user data dir)")

    pr = ms.add_parser("probe", help="what a model file/folder is (type, base, variant, prediction, format)")
    pr.add_argument("path")
    pr.add_argument("--json", action="store_true", help="print the probe result as one JSON object")
    pr.set_defaults(func=cmd_probe)

    sc = ms.add_parser("scan", help="register every model found in a folder (recursively)")
    sc.add_argument("dir")
    sc.add_argument("--hash", action="store_true", help="compute content hashes now (else the engine does it "
                                                        "in the background)")
    sc.add_argument("--json", action="store_true")
    sc.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir(sc)
    sc.set_defaults(func=cmd_scan)

    ins = ms.add_parser("install", help="register one model file or folder")
    ins.add_argument("path")
    ins.add_argument("--copy", action="store_true", help="copy it into DATA_DIR/models/TYPE/ first")
    ins.add_argument("--name", help="model name (default: the file's stem or the folder's name)")
    ins.add_argument("--hash", action="store_true", help="compute its content hash now")
    data_dir(ins)
    ins.set_defaults(func=cmd_install)

    ls = ms.add_parser("list", help="registered models")
    ls.add_argument("--json", action="store_true")
    ls.add_argument("--type", choices=["main", "lora", "embedding", "vae", "controlnet", "t2i_adapter", "ip_adapter",
                                       "clip_vision", "upscaler"])
    ls.add_argument("--base", choices=["sd1", "sd2", "sdxl", "flux"])
    data_dir(ls)
    ls.set_defaults(func=cmd_list)

    dl = ms.add_parser("download", help="download a model (URL, Hugging Face OWNER/REPO[/FILE] or starter:NAME), "
                                        "check it and register it")
    dl.add_argument("source", help="https://... | OWNER/REPO[/FILE] | starter:NAME (see `models starter`)")
    dl.add_argument("--name", help="model name (default: the file's stem)")
    dl.add_argument("--sha256", help="expected content hash (checked; a hub file's own hash is always checked)")
    dl.add_argument("--revision", help="hub branch, tag or commit (default main)")
    dl.add_argument("--token-file", metavar="FILE", help="read an access token from FILE (- for stdin), for gated "
                    "hub repos or sites that need one; or set $PAINTBRIDGE_DOWNLOAD_TOKEN (hub: also HF_TOKEN)")
    dl.add_argument("--json", action="store_true", help="print the result as one JSON object")
    dl.add_argument("--quiet", action="store_true", help="no progress bar")
    data_dir(dl)
    dl.set_defaults(func=cmd_download)

    st = ms.add_parser("starter", help="the starter list: a few well-known models to begin with")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_starter)

    rm = ms.add_parser("remove", help="unregister a model (deletes it only if it was installed with --copy)")
    rm.add_argument("name")
    data_dir(rm)
    rm.set_defaults(func=cmd_remove)

"""`paintbridge blobs gc|stats`: the blob store on the data folder, whether or not an engine runs."""

from __future__ import annotations

import json

from ..config import load_config
from .common import add_data_dir


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def cmd_blobs(args) -> int:
    """Blob store statistics and garbage collection on the data folder, whether or not an engine runs."""
    # sqlite_utils (and numpy under it) load for the subcommands that open the database, not for every call
    from ..store import gc
    from ..store.blobs import BlobStore

    cfg = load_config(args.data_dir)
    store = BlobStore(cfg.blob_dir, clean_tmp=False)   # an engine may be writing temp files right now
    if args.blobs_cmd == "stats":
        st = gc.stats(store, cfg.db_path, cfg.blobs)
        if args.json:
            print(json.dumps(st))
        else:
            print(f"blobs: {st['blobs']} ({_mib(st['bytes'])})\n"
                  f"  referenced (gallery, jobs, workflows): {st['referenced']} ({_mib(st['referenced_bytes'])})\n"
                  f"  unreferenced, within {st['upload_retention_h']:g} h: {st['recent']} "
                  f"({_mib(st['recent_bytes'])})\n"
                  f"  garbage (a gc would delete): {st['garbage']} ({_mib(st['garbage_bytes'])})\n"
                  f"  uploads in progress: {st['uploads_in_progress']} ({_mib(st['uploads_in_progress_bytes'])})")
        return 0
    report = gc.collect(store, cfg.db_path, cfg.blobs, dry_run=args.dry_run)
    if args.json:
        print(json.dumps({**report, "dry_run": args.dry_run}))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {report['deleted']} blob(s), {_mib(report['bytes'])}; kept {report['kept']}")
        print(f"deleted={report['deleted']} bytes={report['bytes']} kept={report['kept']}")
    return 0


def register(sub):
    p = sub.add_parser("blobs", help="blob store: stats, garbage collection")
    add_data_dir(p)
    bs = p.add_subparsers(dest="blobs_cmd", required=True)
    a = bs.add_parser("gc", help="delete blobs nothing references any more (safe while an engine runs)")
    a.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    a.add_argument("--json", action="store_true", help='print {"deleted", "bytes", "kept", "dry_run"}')
    a = bs.add_parser("stats", help="what the blob store holds and what a gc would delete")
    a.add_argument("--json", action="store_true")
    for a in bs.choices.values():
        add_data_dir(a, nested=True)
    p.set_defaults(func=cmd_blobs)

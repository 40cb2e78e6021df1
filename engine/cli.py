"""The `paintbridge` command: serve, token, users, blobs, and (from other modules) generate, models, plugin."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import ipaddress
import json
import logging
import signal
import ssl
import sys
from pathlib import Path

from .config import load_config


def _add_data_dir(p: argparse.ArgumentParser, nested: bool = False):
    # A nested parser must not overwrite a --data-dir given before its subcommand with its own default.
    p.add_argument("--data-dir", default=argparse.SUPPRESS if nested else None,
                   help="data folder (default: $PAINTBRIDGE_DATA_DIR or the platform's user data dir)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- serve ------------------------------------------------------------------------------------------------
def cmd_serve(args) -> int:
    from aiohttp import web

    from .server import Server

    cfg = load_config(args.data_dir, host=args.host, port=args.port,
                      model_dirs=args.models or None, allow_origins=args.allow_origin or None,
                      tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                      tls_key=Path(args.tls_key) if args.tls_key else None)
    if args.frame_limit:
        cfg.limits.frame_limit = args.frame_limit
    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ssl_ctx = None
    if cfg.tls_cert or cfg.tls_key:
        if not (cfg.tls_cert and cfg.tls_key):
            print("error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key)
    if not _is_loopback(cfg.host) and ssl_ctx is None:
        print("WARNING: listening on a non-loopback address WITHOUT TLS: tokens and images cross the network in\n"
              "WARNING: clear text. Use --tls-cert/--tls-key, or bind 127.0.0.1 and tunnel.", file=sys.stderr)
    server = Server(cfg)
    from .queue import install as install_generation
    install_generation(server, cfg)   # job queue, model registry and cache behind the generation ops
    scheme = "wss" if ssl_ctx else "ws"

    async def run():
        runner = web.AppRunner(server.app(), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port, ssl_context=ssl_ctx, reuse_address=True)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else cfg.port
        print(f"Paintbridge listening on {scheme}://{cfg.host}:{port}/v1/ws (data: {cfg.data_dir})", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await runner.cleanup()

    asyncio.run(run())
    server.db.close()
    return 0


# ---- token / users ----------------------------------------------------------------------------------------
def _open_db(args):
    from . import auth
    from .store.db import Database

    cfg = load_config(args.data_dir)
    db = Database(cfg.db_path)
    db.sync(auth.ensure_admin)
    return cfg, db


def cmd_token(args) -> int:
    from .auth import mint_token
    from .errors import EngineError

    try:
        token, exp, name = mint_token(load_config(args.data_dir), args.user, args.ttl, args.remember)
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"# token for {name}, valid until {_fmt_time(exp)}", file=sys.stderr)
    print(token)
    return 0


def _fmt_time(ts: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _password(args, confirm: bool = True) -> str:
    if args.password is not None:
        return args.password
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    pw = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != pw:
        raise SystemExit("error: passwords differ")
    return pw


def cmd_users(args) -> int:
    from . import auth
    from .errors import EngineError

    _, db = _open_db(args)
    try:
        if args.users_cmd == "add":
            user = db.sync(auth.create_user, args.name, _password(args), args.admin)
            print(f"created {'admin ' if user['admin'] else ''}user {user['name']}")
        elif args.users_cmd == "list":
            users = db.sync(auth.list_users)
            if args.json:
                print(json.dumps(users, indent=2))
            for u in [] if args.json else users:
                flags = ",".join(f for f in ("admin" if u["admin"] else "", "disabled" if u["disabled"] else "") if f)
                print(f"{u['name']}\t{flags}")
        elif args.users_cmd == "passwd":
            db.sync(auth.set_password, args.name, _password(args))
            print(f"password changed for {args.name}; older tokens no longer work")
        elif args.users_cmd == "disable":
            db.sync(auth.set_disabled, args.name, not args.enable)
            print(f"{'enabled' if args.enable else 'disabled'} {args.name}")
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        db.close()
    return 0


# ---- blobs ------------------------------------------------------------------------------------------------
def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def cmd_blobs(args) -> int:
    """Blob store statistics and garbage collection on the data folder, whether or not an engine runs."""
    from .store import gc
    from .store.blobs import BlobStore

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


# ---- parser -----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paintbridge", description="Paintbridge local AI image engine")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("serve", help="run the engine")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 9180; 0 picks a free one)")
    _add_data_dir(p)
    p.add_argument("--models", action="append", metavar="DIR", help="a folder of models (repeatable)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="a browser Origin allowed to connect (repeatable; default none)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--frame-limit", type=int, help="largest accepted frame in bytes (default 16 MiB)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("token", help="print a token (last word on stdout) for the admin or --user")
    _add_data_dir(p)
    p.add_argument("--user")
    p.add_argument("--ttl", type=int, help="lifetime in seconds (scripts)")
    p.add_argument("--remember", action="store_true", help="long-lived (remember me) token")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("users", help="manage users")
    _add_data_dir(p)
    us = p.add_subparsers(dest="users_cmd", required=True)
    a = us.add_parser("add")
    a.add_argument("name")
    a.add_argument("--password", help="(else read from the terminal or stdin)")
    a.add_argument("--admin", action="store_true")
    a = us.add_parser("list")
    a.add_argument("--json", action="store_true")
    a = us.add_parser("passwd")
    a.add_argument("name")
    a.add_argument("--password")
    a = us.add_parser("disable")
    a.add_argument("name")
    a.add_argument("--enable", action="store_true", help="re-enable instead")
    for a in us.choices.values():
        _add_data_dir(a, nested=True)
    p.set_defaults(func=cmd_users)

    p = sub.add_parser("blobs", help="blob store: stats, garbage collection")
    _add_data_dir(p)
    bs = p.add_subparsers(dest="blobs_cmd", required=True)
    a = bs.add_parser("gc", help="delete blobs nothing references any more (safe while an engine runs)")
    a.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    a.add_argument("--json", action="store_true", help='print {"deleted", "bytes", "kept", "dry_run"}')
    a = bs.add_parser("stats", help="what the blob store holds and what a gc would delete")
    a.add_argument("--json", action="store_true")
    for a in bs.choices.values():
        _add_data_dir(a, nested=True)
    p.set_defaults(func=cmd_blobs)

    for register in _extensions():
        register(sub)
    return parser


def _extensions():
    """Subcommands defined next to the code they drive (generate, models, plugin, workflows)."""
    from . import cli_generate, cli_workflows, plugin_build
    from .models import cli as models_cli

    return [cli_generate.register_cli, models_cli.register_cli, plugin_build.register_cli, cli_workflows.register_cli]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())

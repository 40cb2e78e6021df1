"""`paintbridge serve`: run the engine (the composition root builds it, the server carries it)."""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import os
import signal
import ssl
import sys
from pathlib import Path

from .. import netguard
from ..config import load_config
from .common import add_data_dir


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args) -> int:
    # aiohttp, numpy, Pillow and the node types load here, not for every other subcommand
    from aiohttp import web

    from ..app import build
    from ..server import Server

    cfg = load_config(args.data_dir, host=args.host, port=args.port,
                      model_dirs=args.models or None, allow_origins=args.allow_origin or None,
                      tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                      tls_key=Path(args.tls_key) if args.tls_key else None)
    if args.frame_limit:
        cfg.limits.frame_limit = args.frame_limit
    if args.workers is not None:
        cfg.pool_workers = args.workers
    if args.ray_address:
        cfg.pool_address = args.ray_address
    if args.pool_port is not None:
        cfg.pool_port = args.pool_port
    if cfg.pool_workers < 0:
        print("error: --workers must be 1 or more", file=sys.stderr)
        return 2
    if (cfg.pool_workers or cfg.pool_address) and importlib.util.find_spec("ray") is None:
        print("error: --workers/--ray-address need Ray: pip install 'paintbridge[ray]'", file=sys.stderr)
        return 2
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
    fds = netguard.raise_descriptor_limit()
    if fds and fds < cfg.limits.max_connections + 64:
        logging.getLogger("paintbridge").warning("only %d file descriptors: lowering max_connections to %d", fds,
                                                 max(16, fds - 64))
        cfg.limits.max_connections = max(16, fds - 64)
    services = build(cfg)   # storage, auth, hub, models, job queue, gallery
    server = Server(services)
    scheme = "wss" if ssl_ctx else "ws"

    async def run():
        loop = asyncio.get_running_loop()
        netguard.quiet_loop_errors(loop)
        runner = web.AppRunner(server.app(), handle_signals=False, access_log=None, keepalive_timeout=15)
        await runner.setup()
        # Our own listener instead of web.TCPSite: every accepted socket passes the connection guard first.
        listener = await loop.create_server(
            server.guard.wrap(runner.server), cfg.host, cfg.port, ssl=ssl_ctx, reuse_address=True,
            ssl_handshake_timeout=cfg.limits.header_timeout_s if ssl_ctx else None)
        port = listener.sockets[0].getsockname()[1]
        print(f"Paintbridge listening on {scheme}://{cfg.host}:{port}/v1/ws (data: {cfg.data_dir})", flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        listener.close()
        await runner.cleanup()

    asyncio.run(run())   # on SIGINT/SIGTERM: the running job stops at its next step (JobQueue.stop)
    if services.queue.stuck:
        # a job step or an archive outlasted the grace period: exit without joining its thread; everything
        # finished is in SQLite and the blob store, and the next start marks that job interrupted / archives
        logging.getLogger("paintbridge.server").warning("exiting with a job step or an archive still running")
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    services.db.close()
    return 0


def register(sub):
    p = sub.add_parser("serve", help="run the engine")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 9180; 0 picks a free one)")
    add_data_dir(p)
    p.add_argument("--models", action="append", metavar="DIR", help="a folder of models (repeatable)")
    p.add_argument("--allow-origin", action="append", metavar="ORIGIN",
                   help="a browser Origin allowed to connect (repeatable; default none)")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--frame-limit", type=int, help="largest accepted frame in bytes (default 16 MiB)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="run jobs on N pool workers (Ray Serve, one GPU each); alone: start a local Ray cluster "
                        "(on a machine with fewer GPUs, workers run on the CPU). Needs paintbridge[ray]")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="run jobs on the workers of this Ray cluster (default: one worker per GPU in it); see "
                        "`paintbridge worker`")
    p.add_argument("--pool-port", type=int, metavar="PORT",
                   help="port of the internal blob route pool workers use (default: any free one)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_serve)

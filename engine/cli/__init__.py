"""The `paintbridge` command (console script and `python -m engine.cli`): one module per subcommand.

serve.py      serve                       users.py      token, users add|list|passwd|disable
blobs.py      blobs gc|stats              generate.py   generate (a client of a running engine)
workflows.py  workflows list|import|export|delete  worker.py   worker (a node of a worker pool)
engine/models/cli.py  models ...          engine/plugin_build.py  plugin ...
"""

from __future__ import annotations

import argparse

from .. import plugin_build
from ..models import cli as models_cli
from . import blobs, generate, serve, users, worker, workflows


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="paintbridge", description="Paintbridge local AI image engine")
    sub = parser.add_subparsers(dest="cmd", required=True)
    for register in (serve.register, users.register, blobs.register, generate.register, models_cli.register_cli,
                     plugin_build.register_cli, workflows.register, worker.register):
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args) or 0

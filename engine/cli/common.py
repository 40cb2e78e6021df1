"""What several subcommands share: the --data-dir option and opening the data folder's database."""

from __future__ import annotations

import argparse

from ..config import load_config


def add_data_dir(p: argparse.ArgumentParser, nested: bool = False):
    # A nested parser must not overwrite a --data-dir given before its subcommand with its own default.
    p.add_argument("--data-dir", default=argparse.SUPPRESS if nested else None,
                   help="data folder (default: $PAINTBRIDGE_DATA_DIR or the platform's user data dir)")


def open_db(args):
    """(config, Database) of the data folder, with the admin user created if there is none yet."""
    # sqlite_utils (and numpy under it) load for the subcommands that open the database, not for every call
    from .. import auth
    from ..store.db import Database

    cfg = load_config(args.data_dir)
    db = Database(cfg.db_path)
    db.sync(auth.ensure_admin)
    return cfg, db

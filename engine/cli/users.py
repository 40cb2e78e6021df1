"""`paintbridge token` and `paintbridge users add|list|passwd|disable`: on the data folder, engine running or not."""

from __future__ import annotations

import datetime
import getpass
import json
import sys

from ..config import load_config
from ..errors import EngineError
from .common import add_data_dir, open_db


def cmd_token(args) -> int:
    # sqlite_utils (and numpy under it) load for the subcommands that open the database, not for every call
    from .. import auth

    try:
        token, exp, name = auth.mint_token(load_config(args.data_dir), args.user, args.ttl, args.remember)
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    print(f"# token for {name}, valid until {_fmt_time(exp)}", file=sys.stderr)
    print(token)
    return 0


def _fmt_time(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _password(args, confirm: bool = True) -> str:
    if args.password is not None:
        print("warning: --password is visible to other users in the process list; leave it out to be asked, "
              "or pipe the password on standard input", file=sys.stderr)
        return args.password
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    pw = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != pw:
        raise SystemExit("error: passwords differ")
    return pw


def cmd_users(args) -> int:
    from .. import auth   # see cmd_token

    _, db = open_db(args)
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


def register(sub):
    p = sub.add_parser("token", help="print a token (last word on stdout) for the admin or --user")
    add_data_dir(p)
    p.add_argument("--user")
    p.add_argument("--ttl", type=int, help="lifetime in seconds (scripts)")
    p.add_argument("--remember", action="store_true", help="long-lived (remember me) token")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("users", help="manage users")
    add_data_dir(p)
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
        add_data_dir(a, nested=True)
    p.set_defaults(func=cmd_users)

"""`paintbridge workflows list|import FILE|export NAME -o FILE|delete NAME`: workflow JSON files in and out.

Works on the data dir directly (like `paintbridge users`), whether or not an engine is running: a running
engine sees imported workflows at once. `--user` picks whose workflows (default: the first admin).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EngineError
from .common import add_data_dir, open_db


def _open(args):
    from .. import auth   # sqlite_utils: see common.open_db

    cfg, db = open_db(args)
    if args.user:
        user = db.sync(auth.get_user, None, args.user)
    else:
        admins = [u for u in db.sync(auth.list_users) if u["admin"] and not u["disabled"]]
        user = admins[0]
    return db, user


def cmd_workflows(args) -> int:
    # the node types (numpy, Pillow) load for this subcommand only, not for every `paintbridge` call
    from .. import nodes  # noqa: F401  (registers the node types that workflows are checked against)
    from .. import workflows as wfs

    db = None
    try:
        db, user = _open(args)
        if args.wf_cmd == "list":
            items = db.sync(wfs.list_, user["id"])
            if args.json:
                print(json.dumps(items, indent=2))
            for w in [] if args.json else items:
                params = ", ".join(f"{p['name']}:{p['type']}" for p in w["params"])
                print(f"{w['name']}\t{params}")
        elif args.wf_cmd == "import":
            try:
                data = json.loads(Path(args.file).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                print(f"error: cannot read {args.file}: {exc}", file=sys.stderr)
                return 1
            wf = wfs.from_file(data, args.name)
            name, graph, params = wfs.prepare(wf)
            saved = db.sync(wfs.save, user["id"], name, wf.description, graph, params, not args.no_replace)
            print(f"{'replaced' if saved['replaced'] else 'imported'} workflow {name!r} "
                  f"({len(params)} parameter{'s' if len(params) != 1 else ''}) for {user['name']}")
        elif args.wf_cmd == "export":
            row = db.sync(wfs.get, user["id"], args.name)
            text = json.dumps(wfs.to_file(row), indent=2, ensure_ascii=False) + "\n"
            if args.output == "-":
                sys.stdout.write(text)
            else:
                Path(args.output).write_text(text, encoding="utf-8")
                print(f"exported {args.name!r} to {args.output}")
        elif args.wf_cmd == "delete":
            db.sync(wfs.delete, user["id"], args.name)
            print(f"deleted workflow {args.name!r}")
    except EngineError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        if db is not None:
            db.close()
    return 0


def register(sub):
    p = sub.add_parser("workflows", help="import, export and list saved workflows (graphs with parameters)")
    add_data_dir(p)
    ws = p.add_subparsers(dest="wf_cmd", required=True)
    a = ws.add_parser("list", help="list workflows and their parameters")
    a.add_argument("--json", action="store_true")
    a = ws.add_parser("import", help="save a workflow from a JSON file (replaces one with the same name)")
    a.add_argument("file")
    a.add_argument("--name", help="save under this name instead of the file's")
    a.add_argument("--no-replace", action="store_true", help="refuse if the name is taken")
    a = ws.add_parser("export", help="write a workflow to a JSON file")
    a.add_argument("name")
    a.add_argument("-o", "--output", required=True, help="file to write ('-': stdout)")
    a = ws.add_parser("delete", help="delete a workflow")
    a.add_argument("name")
    for a in ws.choices.values():
        add_data_dir(a, nested=True)
        a.add_argument("--user", help="whose workflows (default: the first admin)")
    p.set_defaults(func=cmd_workflows)

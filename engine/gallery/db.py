"""The gallery's SQL (tables images, boards): queries and changes for the images.* and boards.* ops and the
job hook. Every function takes a sqlite connection (run it through Database.run/sync); another user's image or
board is NotFound, admins reach everyone's."""

from __future__ import annotations

import secrets
import time

from ..errors import BadRequest, NotFound


def image_by_sha(db, uid: int, shas: list[str]) -> str | None:
    marks = ",".join("?" * len(shas))
    # the first image with these pixels: later identical ones are recalls of it
    hit = db.execute(f"SELECT id FROM images WHERE user_id = ? AND sha256 IN ({marks}) ORDER BY seq LIMIT 1",
                     [uid, *shas]).fetchone()
    return hit[0] if hit else None


def summary(row: dict) -> dict:
    return {"id": row["id"], "job": row["job_id"], "created": row["created"], "app": row["app"],
            "document": row["document"], "board": row["board_id"], "starred": bool(row["starred"]),
            "mode": row["mode"], "prompt": row["prompt"], "negative_prompt": row["negative_prompt"],
            "seed": row["seed"], "steps": row["steps"], "guidance": row["guidance"], "model": row["model"],
            "model_hash": row["model_hash"], "name": row["name"], "w": row["w"], "h": row["h"], "x": row["x"],
            "y": row["y"], "parent": row["parent"], "owner": row["user_id"],
            "layer": {"sha256": row["sha256"], "w": row["w"], "h": row["h"], "format": "rgba8", "x": row["x"],
                      "y": row["y"], "name": row["name"]},
            "thumbnail": ({"sha256": row["thumb_sha256"], "w": row["thumb_w"], "h": row["thumb_h"],
                           "format": "webp"} if row["thumb_sha256"] else None)}


def get_row(db, image_id: str, uid: int, admin: bool) -> dict:
    rows = list(db.query("SELECT * FROM images WHERE id = ?", [image_id]))
    if not rows or (rows[0]["user_id"] != uid and not admin):
        raise NotFound(f"no image {image_id}")     # another user's image looks like a missing one
    return rows[0]


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def list_images(db, uid: int, admin: bool, *, everyone: bool = False, app: str | None = None,
                document: str | None = None, board: str | None = None, unsorted: bool = False,
                starred: bool | None = None, q: str | None = None, limit: int = 50, offset: int = 0,
                cursor: int | None = None) -> tuple[list[dict], int]:
    where, params = ["1=1"], []
    if not (admin and everyone):
        where.append("user_id = ?")
        params.append(uid)
    if app:
        where.append("app = ?")
        params.append(app)
    if document:
        where.append("document = ?")
        params.append(document)
    if board:
        where.append("board_id = ?")
        params.append(board)
    if unsorted:
        where.append("board_id IS NULL")
    if starred is not None:
        where.append("starred = ?")
        params.append(int(starred))
    for word in (q or "").split():
        where.append("prompt LIKE ? ESCAPE '\\'")   # LIKE is case-insensitive for ASCII
        params.append(_like(word))
    total = db.execute(f"SELECT COUNT(*) FROM images WHERE {' AND '.join(where)}", params).fetchone()[0]
    if cursor is not None:
        where.append("seq < ?")
        params.append(cursor)
    rows = list(db.query(f"SELECT * FROM images WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ? OFFSET ?",
                         [*params, limit, offset]))
    return rows, total


def delete_image(db, image_id: str, uid: int, admin: bool) -> dict:
    row = get_row(db, image_id, uid, admin)
    db.execute("DELETE FROM images WHERE id = ?", [image_id])
    db.execute("UPDATE images SET parent = NULL WHERE parent = ?", [image_id])
    return row


def star(db, image_id: str, uid: int, admin: bool, starred: bool) -> None:
    get_row(db, image_id, uid, admin)
    db.execute("UPDATE images SET starred = ? WHERE id = ?", [int(starred), image_id])


# boards ---------------------------------------------------------------------------------------------------------
def board_public(row: dict, count: int = 0) -> dict:
    return {"id": row["id"], "name": row["name"], "created": row["created"], "owner": row["user_id"],
            "count": count}


def get_board(db, board_id: str, uid: int, admin: bool) -> dict:
    rows = list(db.query("SELECT * FROM boards WHERE id = ?", [board_id]))
    if not rows or (rows[0]["user_id"] != uid and not admin):
        raise NotFound(f"no board {board_id}")
    return rows[0]


def _name_free(db, owner: int, name: str, except_id: str | None = None):
    hit = db.execute("SELECT id FROM boards WHERE user_id = ? AND name = ? AND id IS NOT ?",
                     [owner, name, except_id]).fetchone()
    if hit:
        raise BadRequest(f"you already have a board named {name!r}", details={"field": "name", "board": hit[0]})


def create_board(db, uid: int, name: str) -> dict:
    _name_free(db, uid, name)
    row = {"id": secrets.token_hex(6), "user_id": uid, "name": name, "created": time.time()}
    db["boards"].insert(row)
    return board_public(row)


def list_boards(db, uid: int, admin: bool, everyone: bool) -> list[dict]:
    sql = ("SELECT b.*, (SELECT COUNT(*) FROM images i WHERE i.board_id = b.id) AS n FROM boards b")
    params: list = []
    if not (admin and everyone):
        sql += " WHERE b.user_id = ?"
        params.append(uid)
    sql += " ORDER BY b.name COLLATE NOCASE, b.created"
    return [board_public(r, r["n"]) for r in db.query(sql, params)]


def rename_board(db, board_id: str, uid: int, admin: bool, name: str) -> dict:
    row = get_board(db, board_id, uid, admin)
    _name_free(db, row["user_id"], name, board_id)
    db.execute("UPDATE boards SET name = ? WHERE id = ?", [name, board_id])
    n = db.execute("SELECT COUNT(*) FROM images WHERE board_id = ?", [board_id]).fetchone()[0]
    return board_public({**row, "name": name}, n)


def delete_board(db, board_id: str, uid: int, admin: bool) -> int:
    """Delete a board; its images stay in the gallery, on no board. Returns how many were moved out."""
    get_board(db, board_id, uid, admin)
    n = db.execute("UPDATE images SET board_id = NULL WHERE board_id = ?", [board_id]).rowcount
    db.execute("DELETE FROM boards WHERE id = ?", [board_id])
    return n


def move_images(db, image_ids: list[str], board_id: str | None, uid: int, admin: bool) -> int:
    rows = [get_row(db, i, uid, admin) for i in image_ids]
    if board_id is not None:
        board = get_board(db, board_id, uid, admin)
        for r in rows:
            if r["user_id"] != board["user_id"]:
                raise BadRequest(f"image {r['id']} and board {board_id} belong to different users",
                                 details={"image": r["id"]})
    marks = ",".join("?" * len(image_ids))
    return db.execute(f"UPDATE images SET board_id = ? WHERE id IN ({marks})", [board_id, *image_ids]).rowcount

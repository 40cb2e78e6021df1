"""Boards (named groups of gallery images): boards.create|list|rename|delete. Names are unique per user; another
user's board is `not_found`; admins reach everyone's (boards.list needs everyone=true for that)."""

from __future__ import annotations

from pydantic import Field

from .. import names
from ..gallery import db as gallery
from ..opspec import Args, op

ID = Field(pattern=r"^[0-9a-f]{8,32}$")
BoardName = Field(min_length=1, max_length=128)


def board_name(name: str) -> str:
    return names.visible_name(name, "board")


class BoardCreateArgs(Args):
    name: str = BoardName


@op("boards.create", BoardCreateArgs, mutating=True)
async def boards_create(ctx, args: BoardCreateArgs):
    """A new board (names are unique per user): {board}."""
    return {"board": await ctx.app.db.run(gallery.create_board, ctx.conn.uid, board_name(args.name))}


class BoardListArgs(Args):
    everyone: bool = False


@op("boards.list", BoardListArgs)
async def boards_list(ctx, args: BoardListArgs):
    """Your boards with their image counts (admins: everyone's with everyone=true)."""
    return {"boards": await ctx.app.db.run(gallery.list_boards, ctx.conn.uid, ctx.conn.is_admin, args.everyone)}


class BoardArgs(Args):
    board: str = ID


class BoardRenameArgs(BoardArgs):
    name: str = BoardName


@op("boards.rename", BoardRenameArgs, mutating=True)
async def boards_rename(ctx, args: BoardRenameArgs):
    """Rename a board: {board}."""
    return {"board": await ctx.app.db.run(gallery.rename_board, args.board, ctx.conn.uid, ctx.conn.is_admin,
                                          board_name(args.name))}


@op("boards.delete", BoardArgs, mutating=True)
async def boards_delete(ctx, args: BoardArgs):
    """Delete a board; its images stay in the gallery on no board: {unsorted: how many}."""
    n = await ctx.app.db.run(gallery.delete_board, args.board, ctx.conn.uid, ctx.conn.is_admin)
    return {"unsorted": n}

"""The gallery browser every plug-in shows: filters, pages, "has more", stars, and how a summary is labelled.

One GalleryBrowser per gallery view. It asks the Session for pages (`images.list`, SPEC §10) and takes the
ImagesPage updates back on the host's main thread; the host draws `items` with its own widgets.
"""

from __future__ import annotations

import time
from typing import Any

PAGE_SIZE = 24
THUMB_SIZE = 96


class GalleryBrowser:
    """The shown list: filters, the summaries loaded so far (newest first), the cursor for the next page.

    Every request carries the tag ("gallery", generation); a new search bumps the generation, so a page that
    arrives for an older search is dropped instead of being mixed into the new list."""

    def __init__(self, session, page_size: int = PAGE_SIZE, thumb_size: int = THUMB_SIZE):
        self.session = session
        self.page_size = page_size
        self.thumb_size = thumb_size
        # filters (images.list arguments): words of the prompt, starred only, one board, one document, one app
        self.query = ""
        self.starred_only = False
        self.board: str | None = None
        self.document: str | None = None
        self.app: str | None = None
        self.items: list[dict] = []
        self.total = 0
        self.next_cursor: str | None = None
        self.generation = 0
        self.loading = False
        self.error = ""

    # -- requests --
    def filters(self) -> dict:
        f: dict[str, Any] = {}
        if self.query.strip():
            f["q"] = self.query.strip()
        if self.starred_only:
            f["starred"] = True
        if self.board:
            f["board"] = self.board
        if self.document:
            f["document"] = self.document
        if self.app:
            f["app"] = self.app
        return f

    def reload(self, query: str | None = None, starred_only: bool | None = None, **filters) -> None:
        """The first page again, with changed filters if given (board=, document=, app=; None clears one)."""
        if query is not None:
            self.query = query
        if starred_only is not None:
            self.starred_only = bool(starred_only)
        for name, value in filters.items():
            if name not in ("board", "document", "app"):
                raise TypeError(f"unknown gallery filter {name!r}")
            setattr(self, name, value or None)
        self.generation += 1
        self.items, self.total, self.next_cursor, self.error = [], 0, None, ""
        self._request()

    def load_more(self) -> bool:
        """Ask for the next page, if there is one and none is on its way."""
        if not self.has_more or self.loading:
            return False
        self._request(cursor=self.next_cursor)
        return True

    def _request(self, **extra) -> None:
        self.loading = True
        self.session.list_images(thumb_size=self.thumb_size, limit=self.page_size,
                                 tag=("gallery", self.generation), **self.filters(), **extra)

    @property
    def has_more(self) -> bool:
        """The one rule: the engine gave a cursor and fewer than `total` summaries are loaded (the engine hands a
        cursor after every full page, the last one too; an empty page ends the list)."""
        return self.next_cursor is not None and len(self.items) < self.total

    # -- updates (from Session.poll, on the host's main thread) --
    def owns(self, tag: Any) -> bool:
        return tag == ("gallery", self.generation)

    def accept(self, page) -> list[dict] | None:
        """An ImagesPage update (or its data dict): the summaries to append to the view, or None for a page of
        an older search or of another view."""
        data = page if isinstance(page, dict) else page.data
        if not self.owns(data.get("tag")):
            return None
        self.loading = False
        known = {it.get("id") for it in self.items}
        new = [im for im in data.get("images") or [] if im.get("id") not in known]
        self.items.extend(new)
        self.total = int(data.get("total") or 0)
        self.next_cursor = data.get("next_cursor") if new else None
        return new

    def failed(self, error) -> bool:
        """An ErrorUpdate (or its data): True, and the list stops loading, when it is about this view's page."""
        data = error if isinstance(error, dict) else error.data
        if not self.owns(data.get("tag")):
            return False
        self.loading = False
        self.error = data.get("message") or "the gallery could not be loaded"
        return True

    def find(self, image_id: str) -> dict | None:
        return next((it for it in self.items if it.get("id") == image_id), None)

    def star(self, image_id: str, starred: bool = True) -> None:
        """Star/unstar on the engine; the Reply update is applied with replied()."""
        self.session.call("images.star", {"image": image_id, "starred": bool(starred)}, tag=("star", image_id))

    def replied(self, reply) -> bool:
        """A Reply update (or its data) to star(): the item shows the engine's answer. True if it was one."""
        data = reply if isinstance(reply, dict) else reply.data
        tag = data.get("tag")
        if not (isinstance(tag, tuple) and len(tag) == 2 and tag[0] == "star"):
            return False
        it = self.find(tag[1])
        if it is not None:
            it["starred"] = bool((data.get("result") or {}).get("starred"))
        return True

    def status(self) -> str:
        if self.error:
            return self.error
        if self.loading and not self.items:
            return "Loading…"
        if not self.items:
            return "No images" + (" match" if self.filters() else " yet")
        return f"{len(self.items)} of {self.total} image{'s' if self.total != 1 else ''}"


def format_date(epoch, now: float | None = None) -> str:
    """A summary's "created" (seconds since the epoch) in local time: "14:05" today, "3 Dec 14:05" this year,
    "3 Dec 2025" before; "" when missing."""
    if not isinstance(epoch, (int, float)) or isinstance(epoch, bool):
        return ""
    t = time.localtime(epoch)
    today = time.localtime(time.time() if now is None else now)
    if t[:3] == today[:3]:
        return time.strftime("%H:%M", t)
    if t.tm_year == today.tm_year:
        return f"{t.tm_mday} {time.strftime('%b %H:%M', t)}"
    return f"{t.tm_mday} {time.strftime('%b %Y', t)}"


def caption(summary: dict, width: int = 28) -> str:
    """Two short lines under a thumbnail: the prompt, then star/seed/size/app."""
    prompt = (summary.get("prompt") or summary.get("name") or summary.get("mode") or "").strip()
    if len(prompt) > width:
        prompt = prompt[:width - 1] + "…"
    bits = []
    if summary.get("starred"):
        bits.append("★")
    if summary.get("seed") is not None:
        bits.append(f"#{summary['seed']}")
    layer = summary.get("layer") or {}
    w, h = summary.get("w") or layer.get("w"), summary.get("h") or layer.get("h")
    if w and h:
        bits.append(f"{w}×{h}")
    if summary.get("app"):
        bits.append(str(summary["app"]))
    return prompt + "\n" + " ".join(bits)


def tooltip(summary: dict) -> str:
    lines = [summary.get("prompt") or "(no prompt)"]
    for key in ("negative_prompt", "model", "mode", "seed", "steps", "guidance", "created", "app", "document"):
        value = summary.get(key)
        if value in (None, ""):
            continue
        lines.append(f"{key.replace('_', ' ')}: {format_date(value) if key == 'created' else value}")
    return "\n".join(lines)


def layer_name(summary: dict) -> str:
    """A layer name for a gallery image: its prompt (shortened) and seed."""
    prompt = (summary.get("prompt") or "Paintbridge").strip()
    name = prompt if len(prompt) <= 40 else prompt[:39] + "…"
    return f"{name} [{summary['seed']}]" if summary.get("seed") is not None else name

"""Model downloads an admin starts from a plug-in, as its host shows them: state, bytes, a clear error.

A Session keeps one DownloadTable (`session.downloads`) and applies every DownloadProgress to it in poll(), on the
host's main thread, so a panel only reads it. Rows are keyed by the local request id download_model() returns;
the engine's download id arrives with the reply, and the engine's events (which may come before the reply) are
matched to the row by it. Downloads this Session did not start (another admin's) get rows of their own, keyed by
the download id, so an admin sees what the engine is fetching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import updates as u

# Download.state values: "sending" (asked, no answer yet), "started" (accepted, no event yet), then the engine's
# resolving / verifying / downloading, and a final one.
SENDING = "sending"
STARTED = "started"
DONE, FAILED, CANCELED, REFUSED = "done", "failed", "canceled", "refused"
FINAL = (DONE, FAILED, CANCELED, REFUSED)


@dataclass
class Download:
    key: str                          # the request id, or the download id for one this Session did not start
    source: str = ""
    download: str | None = None
    state: str = SENDING
    name: str | None = None
    bytes: int = 0
    total: int | None = None
    error: dict | None = None
    model: dict | None = None
    mine: bool = False
    tag: Any = None

    @property
    def active(self) -> bool:
        return self.state not in FINAL

    @property
    def fraction(self) -> float | None:
        """Share done, None while the size is unknown."""
        if self.state == DONE:
            return 1.0
        return min(1.0, self.bytes / self.total) if self.total else None

    def describe(self) -> str:
        """One line for a status label, e.g. "tiny.safetensors: 1.2 of 4.0 MB (30%)", "failed: …"."""
        what = self.name or self.source or "the download"
        if self.state == SENDING:
            return f"asking the engine to download {self.source}…"
        if self.state == REFUSED:
            return f"could not download {self.source}: {(self.error or {}).get('message', 'refused')}"
        if self.state in (STARTED, "resolving"):
            return f"{what}: starting…"
        if self.state == "verifying":
            return f"{what}: checking ({_mb(self.bytes)} so far)…" if self.bytes else f"{what}: checking…"
        if self.state == "downloading":
            if self.total:
                return f"{what}: {_mb(self.bytes, False)} of {_mb(self.total)} ({100 * self.fraction:.0f}%)"
            return f"{what}: {_mb(self.bytes)}"
        if self.state == DONE:
            model = (self.model or {}).get("name")
            return f"{what}: done, added as model {model!r}" if model else f"{what}: done"
        if self.state == FAILED:
            return f"{what}: failed: {(self.error or {}).get('message', 'failed')}"
        if self.state == CANCELED:
            return f"{what}: canceled"
        return f"{what}: {self.state}"


def _mb(n: int, unit: bool = True) -> str:
    return f"{n / 1e6:.1f}" + (" MB" if unit else "")


class DownloadTable:
    def __init__(self):
        self.rows: dict[str, Download] = {}

    def add(self, request: str, source: str, tag: Any = None) -> Download:
        row = self.rows[request] = Download(request, source, mine=True, tag=tag)
        return row

    def by_download(self, download: str | None) -> Download | None:
        return next((r for r in self.rows.values() if download and r.download == download), None)

    def active(self) -> list[Download]:
        return [r for r in self.rows.values() if r.active]

    def latest(self, mine_only: bool = False) -> Download | None:
        rows = [r for r in self.rows.values() if r.mine or not mine_only]
        return rows[-1] if rows else None

    def apply(self, up) -> Download | None:
        """Fold one update into the table (Session.poll calls it); the row it changed, or None."""
        if not isinstance(up, u.DownloadProgress):
            return None
        if up.request is not None:   # the answer to our own request
            row = self.rows.get(up.request) or self.add(up.request, up.source, up.tag)
            row.download = up.download
            if up.state == REFUSED:
                row.state, row.error = REFUSED, up.error
                # its "resolving" event may have come first, under a download id the refusal does not name:
                # that row would say "starting…" for ever
                wanted = row.source.split("?")[0]
                for key in [k for k, r in self.rows.items() if not r.mine and r.state in (STARTED, "resolving")
                            and r.source == wanted]:
                    del self.rows[key]
                return row
            early = self.rows.pop(up.download, None) if up.download else None
            if early is not None and early is not row:   # its events came first: they are further along
                for name in ("state", "name", "bytes", "total", "error", "model"):
                    setattr(row, name, getattr(early, name))
            elif row.state == SENDING:
                row.state = STARTED
            row.name = row.name or up.name
            row.total = row.total if row.total is not None else up.total
            row.bytes = max(row.bytes, up.bytes)
            row.source = up.source or row.source
            return row
        row = self.by_download(up.download)
        if row is None:
            row = self.rows[up.download] = Download(up.download or "?", up.source, up.download)
        row.state = up.state
        row.name = up.name or row.name
        row.bytes, row.total = up.bytes, up.total if up.total is not None else row.total
        row.error = up.error or row.error
        row.model = up.model or row.model
        return row

    def forget_finished(self, keep: int = 5) -> None:
        finished = [k for k, r in self.rows.items() if not r.active]
        for k in finished[:max(0, len(finished) - keep)]:
            del self.rows[k]

"""Model downloads: a URL, a Hugging Face repo file, or a starter-list entry, into the data folder.

`paintbridge models download SOURCE` and the admin op `models.download` both run `Download.run` below:

1. Resolve. `https://...` is fetched as it is (model sites' direct links). `OWNER/REPO[/PATH/FILE]` is a Hugging
   Face repo: huggingface_hub resolves it (HF_ENDPOINT honoured, its typed errors for a missing repo, a missing
   file or a gated repo) and gives the file's size, its LFS sha256 and where the bytes are. A repo without a file
   name is fine when it holds exactly one model file. `starter:NAME` is an entry of configs/starter_models.json.
2. Transfer, with our own streaming GET for both kinds (one code path for progress, cancellation, resume and
   hashing; hf_hub_download writes into its own cache and cannot be cancelled). Bytes go to
   DATA_DIR/models/.downloads/KEY.part; a broken connection is resumed with `Range` (and `If-Range`, so a file
   that changed on the server starts over), also by a later run with the same source. The token is sent only
   to the URL itself or to the hub (never along a redirect, never to the hub's CDN), and never logged.
3. Check: an HTML page is refused at its first bytes; the size must match what the server announced and what
   the caller or the starter list expects; the sha256 must match when one is known (given, listed, or the
   hub's LFS hash). A failed check deletes the partial file.
4. Install: the file is probed (a file that is not a model is refused and deleted), renamed into
   DATA_DIR/models/TYPE/NAME.EXT (atomic: same disk) and registered; a partial file is never registered.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from ..errors import BadRequest, Busy, Canceled, EngineError, Forbidden, ModelError, NotFound
from ..events import Event, model_download_progress
from .registry import MODEL_SUFFIXES, check_name

log = logging.getLogger("paintbridge.download")

STARTER_FILE = Path(__file__).resolve().parent.parent / "configs" / "starter_models.json"
CHUNK = 1024 * 1024
RETRIES = 5                   # consecutive failed attempts without a new byte before giving up
TIMEOUT_S = 60.0              # one read or connect may take this long
FREE_MARGIN = 64 * 1024 * 1024  # leave this much free on the data folder's disk
_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class DownloadError(EngineError):
    """A download that could not be completed; details["reason"] says why (see protocol/SPEC.md)."""

    code = "bad_request"

    def __init__(self, message: str, reason: str, code: str | None = None, **details):
        super().__init__(message, {"reason": reason, **details}, code)


# ---- sources ---------------------------------------------------------------------------------------------
@dataclass
class Source:
    kind: str                    # "url" | "hub"
    text: str                    # what to show: the URL without its query (which may hold a token)
    url: str | None = None
    repo: str | None = None
    file: str | None = None
    revision: str | None = None
    sha256: str | None = None
    size: int | None = None
    register: bool = True        # False: a support file kept in DATA_DIR/models/FOLDER/, not registered
    folder: str | None = None
    starter: str | None = None

    @property
    def key(self) -> str:
        """Names the partial file, so a later run with the same source resumes it."""
        ident = self.url if self.kind == "url" else f"hf:{self.repo}@{self.revision or 'main'}/{self.file or ''}"
        return hashlib.sha256(ident.encode()).hexdigest()[:32]


def starter_list() -> list[dict]:
    with open(STARTER_FILE, encoding="utf-8") as f:
        return json.load(f)["models"]


def _display_url(url: str) -> str:
    p = urlsplit(url)
    return f"{p.scheme}://{p.hostname or ''}{':' + str(p.port) if p.port else ''}{p.path}"


def parse_source(text: str, sha256: str | None = None, revision: str | None = None) -> Source:
    """A download source from what a person typed; BadRequest when it is none of the accepted forms."""
    text = (text or "").strip()
    if sha256 is not None and not _HEX64.match(sha256.lower()):
        raise BadRequest(f"sha256 must be 64 hex digits, not {sha256[:80]!r}", details={"field": "sha256"})
    sha256 = sha256.lower() if sha256 else None
    if text.startswith("starter:"):
        name = text[len("starter:"):]
        entries = {e["name"]: e for e in starter_list()}
        if name not in entries:
            raise NotFound(f"no starter model named {name!r} (there are: {', '.join(entries)})",
                           details={"source": text[:200]})
        e = entries[name]
        src = parse_source(e["url"] if e.get("url") else f"{e['repo']}/{e['file']}", revision=e.get("revision"))
        src.sha256, src.size, src.starter = e.get("sha256"), e.get("size"), name
        src.register, src.folder = e.get("register", True), e.get("folder")
        if sha256 and src.sha256 and sha256 != src.sha256:
            raise BadRequest(f"starter:{name} has sha256 {src.sha256}, not {sha256}", details={"field": "sha256"})
        return src
    if text.lower().startswith(("https://", "http://")):
        p = urlsplit(text)
        if not p.hostname:
            raise BadRequest(f"not a URL: {_display_url(text)!r}", details={"source": _display_url(text)})
        return Source("url", _display_url(text), url=text, sha256=sha256)
    parts = text.split("/")
    repo = "/".join(parts[:2])
    file = "/".join(parts[2:]) or None
    if not _REPO.match(repo) or (file is not None and any(s in ("", ".", "..") for s in parts[2:])) \
            or any(c in text for c in "\\\x00?#"):
        raise BadRequest(f"{text[:200]!r} is not a download source: give an https:// URL, a Hugging Face repo "
                         "OWNER/NAME or OWNER/NAME/FILE, or starter:NAME (`paintbridge models starter`)",
                         details={"source": text[:200]})
    return Source("hub", text, repo=repo, file=file, revision=revision, sha256=sha256)


# ---- progress ----------------------------------------------------------------------------------------------
@dataclass
class Progress:
    state: str                   # resolving | downloading | verifying | done | failed | canceled
    bytes: int = 0
    total: int | None = None
    name: str | None = None
    extra: dict = field(default_factory=dict)


# ---- the download --------------------------------------------------------------------------------------------
class Download:
    """One download into `root` (DATA_DIR/models): run() blocks, cancel() may be called from any thread."""

    def __init__(self, source: Source, root: Path, registry=None, name: str | None = None,
                 token: str | None = None, progress: Callable[[Progress], None] | None = None,
                 on_started: Callable[[], None] | None = None, retries: int = RETRIES):
        self.source = source
        self.retries = retries
        self.root = Path(root)
        self.registry = registry
        if not name and source.starter and source.register:
            name = source.starter   # "lcm-lora-sdxl", not the repo's "pytorch_lora_weights"
        self.name = check_name(name) if name else None
        self._token = token
        self._progress = progress or (lambda p: None)
        self._on_started = on_started or (lambda: None)
        self._cancel = threading.Event()
        self._keep_partial = False
        self.bytes = 0
        self.total: int | None = None
        self.resumed_from = 0
        self.accepted = False   # the first response passed the checks: bytes are being written
        self.error: EngineError | None = None

    def cancel(self, keep_partial: bool = False) -> None:
        """Stop soon; the partial file is deleted, or kept for a later resume (keep_partial: engine shutdown)."""
        self._keep_partial = keep_partial
        self._cancel.set()

    def _accept(self) -> None:
        if not self.accepted:
            self.accepted = True
            self._on_started()

    def _emit(self, state: str, **extra) -> None:
        try:
            self._progress(Progress(state, self.bytes, self.total, self.name, extra))
        except Exception:   # a progress consumer's bug must not break the download
            log.exception("download progress callback failed")

    # -- the whole thing
    def run(self) -> dict:
        """Download, check, install; → {"name", "path", "size", "sha256", "model"?}. Raises EngineError."""
        try:
            return self._run()
        except EngineError as exc:
            self.error = exc
            raise
        except OSError as exc:   # our own disk (not the network: that is retried and wrapped below)
            self.error = _disk_error(exc)
            raise self.error from None
        finally:
            self._on_started()   # wakes a waiter also when the download ended before it was accepted

    def _run(self) -> dict:
        self._emit("resolving")
        work = self.root / ".downloads"
        work.mkdir(parents=True, exist_ok=True)
        key = self.source.key
        with _Lock(work / f"{key}.lock", self.source.text):
            url, headers, expect_size, expect_sha, filename = self._resolve()
            if filename and filename.lower().endswith(MODEL_SUFFIXES):
                self._check_name_free(filename)   # known before any transfer (hub files, most URLs)
            part = work / f"{key}.part"
            meta_path = work / f"{key}.json"
            try:
                digest, filename = self._transfer(url, headers, part, meta_path, expect_size, filename)
                if expect_sha and digest != expect_sha:
                    raise DownloadError(f"{self.source.text}: the downloaded file's sha256 is {digest}, expected "
                                        f"{expect_sha}: the file is corrupt or not the one expected; it was "
                                        "deleted", "hash_mismatch", expected=expect_sha, got=digest)
                result = self._install(part, filename, digest)
                _unlink(meta_path)
                return result
            except DownloadError as exc:
                if exc.details.get("reason") != "network":   # a broken connection keeps its bytes for a resume
                    _unlink(part, meta_path)
                raise
            except Canceled:
                if not self._keep_partial:
                    _unlink(part, meta_path)
                raise
            except KeyboardInterrupt:   # Ctrl-C in the CLI: keep the bytes, the same command resumes
                raise
            except BaseException:
                _unlink(part, meta_path)
                raise

    # -- 1. resolve
    def _resolve(self):
        """→ (url, headers, expected size, expected sha256, file name or None)."""
        src = self.source
        if src.kind == "url":
            headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
            name = unquote(urlsplit(src.url).path.rsplit("/", 1)[-1]) or None
            return src.url, headers, src.size, src.sha256, name
        meta = hub_resolve(src.repo, src.file, src.revision, self._token)
        src.file = meta["file"]
        expect_sha = src.sha256
        if meta["sha256"]:
            if expect_sha and expect_sha != meta["sha256"]:
                raise DownloadError(f"{src.text}: the hub says this file's sha256 is {meta['sha256']}, not "
                                    f"{expect_sha}", "hash_mismatch", expected=expect_sha, got=meta["sha256"])
            expect_sha = meta["sha256"]
        expect_size = src.size
        if meta["size"] is not None:
            if expect_size is not None and expect_size != meta["size"]:
                raise DownloadError(f"{src.text}: the hub says this file has {meta['size']} bytes, not "
                                    f"{expect_size}", "size_mismatch", expected=expect_size, got=meta["size"])
            expect_size = meta["size"]
        return meta["url"], meta["headers"], expect_size, expect_sha, src.file.rsplit("/", 1)[-1]

    # -- 2. transfer
    def _transfer(self, url, headers, part: Path, meta_path: Path, expect_size, filename):
        """Fill `part` to the end, resuming after broken connections; → (sha256, file name)."""
        saved = _read_json(meta_path)
        have = part.stat().st_size if part.exists() else 0
        if have and not saved:
            have = 0   # a partial file we know nothing about: start over
        hasher = hashlib.sha256()
        if have:
            self.resumed_from = have
            self.bytes = have
            self.total = saved.get("total")
            self._emit("verifying", resumed_from=have)
            _hash_file(part, hasher, have)
        failures = 0
        first = True
        while True:
            if self._cancel.is_set():
                raise Canceled("download canceled")
            req = urllib.request.Request(url, headers={"User-Agent": "paintbridge", "Accept-Encoding": "identity"})
            for k, v in headers.items():
                req.add_unredirected_header(k, v)   # a redirect (to another host, a CDN) never carries the token
            if have:
                req.add_header("Range", f"bytes={have}-")
                if saved.get("validator"):
                    req.add_header("If-Range", saved["validator"])
            try:
                resp = _opener().open(req, timeout=TIMEOUT_S)
            except urllib.error.HTTPError as exc:
                if exc.code == 416 and have and saved.get("total") == have:
                    exc.close()
                    filename = filename or "download"
                    self._check_name_free(filename)
                    self._accept()
                    break   # we already have every byte
                err = _http_error(exc, self.source.text)
                exc.close()
                if err is None and failures < self.retries:   # 5xx / 429: try again
                    failures += 1
                    self._wait(failures)
                    continue
                raise err or DownloadError(f"{self.source.text}: the server answered HTTP {exc.code} "
                                           f"{failures + 1} times; run the same download again later to resume "
                                           "it", "network", code="internal", status=exc.code)
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, ssl.SSLCertVerificationError):
                    raise DownloadError(f"{self.source.text}: the server's TLS certificate is not valid: "
                                        f"{exc.reason.verify_message}", "tls") from None
                if failures >= self.retries:
                    raise _network_error(self.source.text, exc, failures + 1) from None
                failures += 1
                self._wait(failures)
                continue
            with resp:
                status = resp.status
                if status == 200 and have:   # the server ignored Range or the file changed (If-Range): restart
                    have = 0
                    hasher = hashlib.sha256()
                total, start = _length(resp, have)
                if start != have:
                    raise DownloadError(f"{self.source.text}: the server resumed at byte {start}, not {have}",
                                        "bad_range")
                if total is not None:
                    self.total = total
                if first:
                    first = False
                    filename = _filename(resp, filename)
                    self._check_start(resp, total, expect_size, filename, have)
                    if filename.lower().endswith(MODEL_SUFFIXES):
                        self.name = self.name or check_name(Path(filename).stem)
                    self._check_name_free(filename)
                    self._accept()
                validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
                if validator and validator.startswith("W/"):
                    validator = None   # a weak validator cannot guard a byte range
                saved = {"total": total, "validator": validator}
                _write_json(meta_path, saved)
                mode = "r+b" if have else "wb"
                if not part.exists():
                    mode = "wb"
                got_bytes = False
                try:
                    with open(part, mode) as f:
                        f.seek(have)
                        f.truncate()
                        while True:
                            if self._cancel.is_set():
                                raise Canceled("download canceled")
                            chunk = resp.read(CHUNK)
                            if not chunk:
                                break
                            if have == 0 and _looks_like_html(chunk):
                                raise _not_a_model(self.source.text, "it is a web page (HTML), not a model file")
                            f.write(chunk)
                            hasher.update(chunk)
                            have += len(chunk)
                            got_bytes = True
                            self.bytes = have
                            if total is not None and have > total:
                                raise DownloadError(f"{self.source.text}: the server sent more bytes than it "
                                                    f"announced ({total})", "size_mismatch", expected=total)
                            self._emit("downloading")
                        f.flush()
                        os.fsync(f.fileno())
                except (OSError, http.client.HTTPException) as exc:
                    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG,
                                                                   errno.EROFS, errno.EACCES):
                        raise _disk_error(exc) from None
                    if got_bytes:   # progress: resume at once
                        failures = 0
                        continue
                    if failures >= self.retries:
                        raise _network_error(self.source.text, exc, failures + 1) from None
                    failures += 1
                    self._wait(failures)
                    continue
            if total is None or have >= total:
                break
            if got_bytes:   # the connection ended early: resume where it stopped
                failures = 0
                continue
            if failures >= self.retries:
                raise _network_error(self.source.text, ConnectionError(f"the file ended at {have} of {total} "
                                                                       "bytes"), failures + 1)
            failures += 1
            self._wait(failures)
        size = part.stat().st_size
        self.bytes = size
        if expect_size is not None and size != expect_size:
            raise DownloadError(f"{self.source.text}: got {size} bytes, expected {expect_size}: the download is "
                                "truncated or not the file expected; it was deleted", "size_mismatch",
                                expected=expect_size, got=size)
        if self.total is not None and size != self.total:
            raise DownloadError(f"{self.source.text}: got {size} bytes, the server announced {self.total}",
                                "size_mismatch", expected=self.total, got=size)
        return hasher.hexdigest(), filename

    def _wait(self, failures: int) -> None:
        if self._cancel.wait(min(30.0, 0.5 * 2 ** (failures - 1))):
            raise Canceled("download canceled")

    def _check_start(self, resp, total, expect_size, filename, have) -> None:
        ctype = (resp.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml") and not have:
            raise _not_a_model(self.source.text, "the server sent a web page (text/html), not a model file")
        if expect_size is not None and total is not None and total != expect_size:
            raise DownloadError(f"{self.source.text}: the server announces {total} bytes, expected {expect_size}",
                                "size_mismatch", expected=expect_size, got=total)
        need = (total if total is not None else expect_size or 0) - have
        free = shutil.disk_usage(self.root).free
        if need > 0 and need + FREE_MARGIN > free:
            raise DownloadError(f"not enough disk space in {self.root} for {self.source.text}: it needs "
                                f"{_mb(need)} MB, {_mb(free)} MB are free", "disk_full", code="internal",
                                needed=need, free=free)

    def _check_name_free(self, filename: str) -> None:
        if self.name is None:
            self.name = check_name(Path(filename).stem or "download")
        if not self.source.register:
            dest = self._support_path(filename)
            if dest.exists():
                raise BadRequest(f"{dest} exists already: delete it first to download it again",
                                 details={"path": str(dest)})
            return
        if self.registry is not None and self.registry.find(self.name) is not None:
            raise BadRequest(f"a model named {self.name!r} already exists: remove it first or choose another "
                             "name (--name / name)", details={"model": self.name})

    def _support_path(self, filename: str, suffix: str | None = None) -> Path:
        """Where a support file (register=False, e.g. a text encoder) goes: DATA_DIR/models/FOLDER/NAME.EXT."""
        return self.root / (self.source.folder or "other") / (self.name + (suffix or Path(filename).suffix.lower()))

    # -- 4. install
    def _install(self, part: Path, filename: str, digest: str) -> dict:
        self._emit("verifying")
        suffix = Path(filename).suffix.lower()
        if suffix not in MODEL_SUFFIXES:
            suffix = _sniff_suffix(part)
            if suffix is None:
                raise _not_a_model(self.source.text, f"{filename!r} is not a .safetensors/.ckpt/.pt/.pth/.bin "
                                   "file and its bytes are neither")
        if not self.source.register:
            dest = self._support_path(filename, suffix)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                raise BadRequest(f"{dest} exists already", details={"path": str(dest)})
            os.replace(part, dest)
            return {"name": dest.stem, "path": str(dest), "size": dest.stat().st_size, "sha256": digest}
        # the registry probes it (by suffix and contents): give the finished file its real suffix first
        ready = part.with_name(part.stem + suffix)
        os.replace(part, ready)
        try:
            if self.registry is None:
                raise BadRequest("no model registry to install into")
            try:
                entry = self.registry.install(ready, name=self.name, move=True, sha256=digest)
            except ModelError as exc:
                raise _not_a_model(self.source.text, exc.message) from None
        finally:
            if ready.exists():
                ready.unlink()
        return {"name": entry.name, "path": str(entry.path), "size": entry.size, "sha256": digest,
                "model": entry.public(True)}


# ---- helpers ---------------------------------------------------------------------------------------------------
class _Lock:
    """One download per source at a time (the engine and a `paintbridge models download` may share a folder)."""

    def __init__(self, path: Path, what: str):
        self.path, self.what, self.fh = path, what, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:   # Windows: no advisory lock here, so two runs of one source are not kept apart
            return self
        while True:
            fh = open(self.path, "a+b")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise Busy(f"{self.what} is being downloaded already", details={"reason": "in_progress"}) from None
            try:
                same = os.fstat(fh.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fh = fh
                return self
            fh.close()   # the previous holder removed the lock file between our open and flock: try again

    def __exit__(self, *exc):
        if self.fh is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.fh.close()


_OPENER = None


def _opener():
    global _OPENER
    if _OPENER is None:
        try:
            import certifi
            ctx = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            ctx = ssl.create_default_context()
        _OPENER = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx))
    return _OPENER


def _length(resp, have: int) -> tuple[int | None, int]:
    """(the whole file's size or None, the first byte's offset) from a 200 or 206 response."""
    if resp.status == 206:
        m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", resp.headers.get("Content-Range") or "")
        if not m:
            raise DownloadError("the server sent a partial answer without a usable Content-Range", "bad_range")
        return (None if m.group(3) == "*" else int(m.group(3))), int(m.group(1))
    n = resp.headers.get("Content-Length")
    return (int(n) if n and n.isdigit() else None), 0


def _filename(resp, fallback: str | None) -> str:
    """The server's file name (Content-Disposition, else the final URL's path), without any folder part."""
    cd = resp.headers.get("Content-Disposition")
    name = None
    if cd:
        msg = Message()
        msg["Content-Disposition"] = cd
        name = msg.get_filename()
    if not name:
        name = fallback or unquote(urlsplit(resp.geturl()).path.rsplit("/", 1)[-1])
    name = re.split(r"[/\\]", name or "")[-1].strip()
    return name or "download"


def _looks_like_html(chunk: bytes) -> bool:
    head = chunk[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in head[:100]


def _sniff_suffix(path: Path) -> str | None:
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{":
        return ".safetensors"
    if head.startswith(b"PK\x03\x04"):
        return ".ckpt"   # a torch zip checkpoint
    return None


def _hash_file(path: Path, hasher, length: int) -> None:
    left = length
    with open(path, "rb") as f:
        while left > 0:
            chunk = f.read(min(CHUNK * 4, left))
            if not chunk:
                break
            hasher.update(chunk)
            left -= len(chunk)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _unlink(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def _mb(n: int) -> int:
    return int(n / 1e6)


def _not_a_model(what: str, why: str) -> DownloadError:
    return DownloadError(f"{what} is not a model: {why}; nothing was installed", "not_a_model")


def _disk_error(exc: OSError) -> DownloadError:
    reason = "disk_full" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "disk"
    return DownloadError(f"writing the download failed: {exc.strerror or exc} (is the data folder's disk full "
                         "or read-only?); the partial file was deleted", reason, code="internal", errno=exc.errno)


def _network_error(what: str, exc: BaseException, tries: int = 1) -> DownloadError:
    why = getattr(exc, "reason", None) or exc
    return DownloadError(f"{what}: the connection failed {tries} time{'s' if tries > 1 else ''} "
                         f"({type(exc).__name__}: {why}); run the same download again to resume it", "network",
                         code="internal")


def _http_error(exc: urllib.error.HTTPError, what: str) -> EngineError | None:
    """A typed error for a final HTTP status; None for one worth retrying (429, 5xx)."""
    if exc.code == 429 or exc.code >= 500:
        return None
    if exc.code in (401, 403):
        return Forbidden(f"{what}: the server refused access (HTTP {exc.code}); it may need a token "
                         "(--token-file, or the op's token)", details={"reason": "unauthorized", "status": exc.code})
    if exc.code in (404, 410):
        return NotFound(f"{what}: not found on the server (HTTP {exc.code})",
                        details={"reason": "not_found", "status": exc.code})
    return DownloadError(f"{what}: the server answered HTTP {exc.code}", "http_status", status=exc.code)


# ---- the hub -----------------------------------------------------------------------------------------------------
def hub_resolve(repo: str, file: str | None, revision: str | None, token: str | None) -> dict:
    """Where a hub file's bytes are, with its size and LFS sha256 (huggingface_hub's own resolution: HF_ENDPOINT,
    the stored or HF_TOKEN token when none is given, its typed errors) → {"file", "url", "headers", "size",
    "sha256"}. Without a file name, the repo must hold exactly one model file."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub import errors as hf
    from huggingface_hub.utils import build_hf_headers

    what = f"{repo}/{file}" if file else repo
    endpoint = (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")   # read now, not at import
    try:
        if file is None:
            info = HfApi(endpoint=endpoint).model_info(repo, revision=revision, token=token)
            files = sorted(s.rfilename for s in (info.siblings or []) if s.rfilename.lower().endswith(MODEL_SUFFIXES))
            if len(files) != 1:
                listed = ", ".join(files[:20]) + (" ..." if len(files) > 20 else "")
                raise NotFound(f"{repo} holds {'no model file' if not files else f'{len(files)} model files'}"
                               f"{': ' + listed if files else ''}; name one: {repo}/FILE",
                               details={"reason": "no_file" if not files else "ambiguous", "files": files[:100]})
            file = files[0]
            what = f"{repo}/{file}"
        url = hf_hub_url(repo, file, revision=revision, endpoint=endpoint)
        meta = get_hf_file_metadata(url, token=token, endpoint=endpoint)
    except EngineError:
        raise
    except hf.GatedRepoError:
        raise Forbidden(f"{repo} is a gated repo: accept its terms on the hub with your account, then give a token "
                        "(--token-file, HF_TOKEN, or the op's token)", details={"reason": "gated"}) from None
    except hf.RepositoryNotFoundError:
        raise NotFound(f"no repo {repo} on the hub (or it is private: give a token)",
                       details={"reason": "no_repo"}) from None
    except hf.RevisionNotFoundError:
        raise NotFound(f"{repo} has no revision {revision!r}", details={"reason": "no_revision"}) from None
    except getattr(hf, "RemoteEntryNotFoundError", hf.EntryNotFoundError):   # the name before huggingface_hub 1.0
        raise NotFound(f"{repo} has no file {file!r}", details={"reason": "no_file"}) from None
    except hf.OfflineModeIsEnabled:
        raise DownloadError(f"{what}: HF_HUB_OFFLINE is set: unset it to download", "offline") from None
    except hf.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise DownloadError(f"{what}: the hub answered HTTP {status}", "http_status", status=status) from None
    except Exception as exc:   # httpx2's connection errors and the like
        raise _network_error(what, exc) from None
    etag = (meta.etag or "").lower()
    headers = {}
    if _origin(meta.location) == _origin(url):   # the token goes to the hub only, never to a CDN
        auth = build_hf_headers(token=token).get("authorization")
        if auth:
            headers["Authorization"] = auth
    return {"file": file, "url": meta.location, "headers": headers, "size": meta.size,
            "sha256": etag if _HEX64.match(etag) else None}   # LFS files' ETag is their sha256


def _origin(url: str) -> tuple:
    p = urlsplit(url)
    return p.scheme, (p.hostname or "").lower(), p.port


# ---- the engine's downloads ----------------------------------------------------------------------------------------
class Downloads:
    """The downloads an engine runs (models.download), each on its own thread, by id."""

    EVERY_S = 0.5   # at most this often a "downloading" event per download

    def __init__(self, registry, root: Path):
        self.registry = registry
        self.root = Path(root)
        self.running: dict[str, Download] = {}
        self._lock = threading.Lock()

    def start(self, source: Source, name: str | None, token: str | None, publish: Callable[[Event], None],
              on_started: Callable[[], None]) -> tuple[str, Download]:
        """Start a download; publish(event) gets its models.download.progress events, from the download's thread
        (not the end of a download that was never accepted: that is the caller's to report, from d.error)."""
        import secrets

        did = secrets.token_hex(8)
        last = [0.0]

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if p.state == "downloading" and now - last[0] < self.EVERY_S:
                return
            last[0] = now
            publish(_event(did, source, p))

        d = Download(source, self.root, self.registry, name, token, progress, on_started)

        def work() -> None:
            final = None
            try:
                result = d.run()
                extra = {"model": result["model"]} if "model" in result else {"path": result["path"]}
                final = Progress("done", d.bytes, d.total, result["name"], extra)
            except Canceled:
                final = Progress("canceled", d.bytes, d.total, d.name)
            except EngineError as exc:
                final = Progress("failed", d.bytes, d.total, d.name, {"error": {
                    "code": exc.code, "message": exc.message, "details": exc.details}})
            except Exception as exc:   # a bug: say so, keep the engine
                log.exception("download %s failed", source.text)
                d.error = EngineError(f"download failed: {type(exc).__name__}")
                final = Progress("failed", d.bytes, d.total, d.name, {"error": {
                    "code": "internal", "message": d.error.message, "details": None}})
            finally:
                with self._lock:   # gone from list/cancel before its last event goes out
                    self.running.pop(did, None)
            if d.accepted:   # before that, the outcome is the op's reply
                publish(_event(did, source, final))

        with self._lock:
            self.running[did] = d
        threading.Thread(target=work, name=f"paintbridge-download-{did}", daemon=True).start()
        return did, d

    def cancel(self, did: str) -> Download:
        with self._lock:
            d = self.running.get(did)
        if d is None:
            raise NotFound(f"no running download {did!r}", details={"download": did})
        d.cancel()
        return d

    def list(self) -> list[dict]:
        with self._lock:
            running = list(self.running.items())
        return [_event(did, d.source, Progress("downloading" if d.accepted else "resolving", d.bytes, d.total,
                                                d.name)).data for did, d in running]

    def stop(self) -> None:
        """Engine shutdown: stop every download, keeping partial files so the same download resumes later."""
        with self._lock:
            running = list(self.running.values())
        for d in running:
            d.cancel(keep_partial=True)


def _event(did: str, source: Source, p: Progress) -> Event:
    return model_download_progress(did, source.text, p.state, p.name, p.bytes, p.total, **p.extra)

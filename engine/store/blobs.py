"""Content-addressed blob files: DATA_DIR/blobs/ab/abcdef... named by the SHA-256 of their bytes.

Writes are atomic (temp file in the same filesystem, fsync, rename), so a crash or kill -9 never leaves a partial
blob under its final name; leftover temp files are removed at start. All methods block: call them off the loop.

Garbage collection (store/gc.py) deletes unreferenced blob files, possibly from another process (the CLI). So that
a writer never counts on a file that is about to go, "make sure this blob's file exists" (write, Upload.finish)
runs under a shared lock on the blobs folder and refreshes the file's mtime when the file is already there; GC deletes
only under the exclusive lock and only files whose mtime is older than its cutoff. Either the writer comes first
(fresh mtime: GC keeps the file) or GC does (the file is gone: the writer writes it again).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import fcntl
except ImportError:   # Windows: GC and writers exclude each other within one process only
    fcntl = None

SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_HASHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-hash")
_SYNCER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-sync")


_LOCAL_LOCK = threading.Lock()   # stands in for the file lock where there is no fcntl


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and bool(SHA_RE.match(value))


class BlobStore:
    def __init__(self, root: Path, clean_tmp: bool = True):
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        # partial writes of a previous run: never visible, now gone (not from the CLI: an engine may be running)
        for leftover in self.tmp.iterdir() if clean_tmp else ():
            try:
                leftover.unlink()
            except OSError:
                pass

    def path(self, sha: str) -> Path:
        if not is_sha256(sha):
            raise ValueError("not a sha256")
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).exists()

    def size(self, sha: str) -> int:
        return self.path(sha).stat().st_size

    @contextlib.contextmanager
    def lock(self, exclusive: bool = False):
        """Writers hold it shared while they make sure a file exists; GC holds it exclusively while it deletes.
        An flock on the blobs folder itself (no lock file to clean up), so that it also holds between the engine
        and a `paintbridge blobs gc` run from the command line."""
        if fcntl is None:
            with _LOCAL_LOCK:
                yield
            return
        fd = os.open(self.root, os.O_RDONLY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            except OSError:   # a file system without flock: exclude within this process at least
                with _LOCAL_LOCK:
                    yield
                return
            yield
        finally:
            os.close(fd)   # closing the descriptor releases the lock

    def _refresh(self, final: Path) -> bool:
        """Under the shared lock: True if the blob's file exists (its mtime is now fresh, so GC keeps it)."""
        try:
            os.utime(final)
            return True
        except FileNotFoundError:
            return False
        except OSError:   # a read-only folder (nothing can be collected there either): the file may still be there
            return final.exists()

    def write(self, data: bytes | memoryview) -> tuple[str, int]:
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        with self.lock():
            if self._refresh(final):
                return sha, len(data)
        tmp = self.tmp / f"{sha}.{os.getpid()}.{time.monotonic_ns()}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            with self.lock():
                self._publish(tmp, final)
        except BaseException:   # disk full, I/O error: leave no partial temp file behind
            tmp.unlink(missing_ok=True)
            raise
        return sha, len(data)

    def read(self, sha: str, offset: int = 0, length: int | None = None) -> bytes:
        with open(self.path(sha), "rb") as f:
            f.seek(offset)
            return f.read(-1 if length is None else length)

    def begin(self) -> "Upload":
        return Upload(self)

    def _publish(self, tmp: Path, final: Path):
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
        # fsync the directory so the rename itself survives a power cut.
        fd = os.open(final.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class Upload:
    """A chunked upload in progress: bytes appended to a temp file while the hash is computed incrementally."""

    def __init__(self, store: BlobStore):
        self.store = store
        self.size = 0
        self.hasher = hashlib.sha256()
        self.touched = time.monotonic()
        self.tmp = store.tmp / f"upload.{os.getpid()}.{time.monotonic_ns()}"
        self.file = open(self.tmp, "wb")
        self.syncing = None   # the background fdatasync in flight, if any
        # Kept by the blob.put op (engine/ops/blobs.py), which queues chunk writes: the bytes handed over so far,
        # the last queued write, and the writes not yet awaited.
        self.accepted = 0
        self.tail = None
        self.writes: list = []

    def append(self, data: bytes):
        # hashlib and file writes both release the GIL on big buffers: hash while writing.
        hashed = _HASHER.submit(self.hasher.update, data)
        self.file.write(data)
        hashed.result()
        self.size += len(data)
        self.touched = time.monotonic()
        # Push what we have to disk while the next chunk crosses the network, so the fsync in finish() only
        # has the last chunk left to write.
        self.file.flush()
        if self.syncing is None or self.syncing.done():
            self.syncing = _SYNCER.submit(os.fdatasync, self.file.fileno())

    def finish(self) -> tuple[str, int]:
        sha = self.hasher.hexdigest()
        self.file.flush()
        if self.syncing is not None:
            self.syncing.result()
        os.fsync(self.file.fileno())
        self.file.close()
        final = self.store.path(sha)
        with self.store.lock():
            if self.store._refresh(final):
                self.tmp.unlink(missing_ok=True)
            else:
                self.store._publish(self.tmp, final)
        return sha, self.size

    def abort(self):
        try:
            if self.syncing is not None:
                self.syncing.exception()   # wait: never close the fd under a running fdatasync
            self.file.close()
        except OSError:   # flushing the last buffered bytes can fail (disk full): the file goes anyway
            pass
        finally:
            self.tmp.unlink(missing_ok=True)

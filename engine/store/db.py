"""SQLite access. One connection owned by one thread: every query runs there, never on the event loop.

The CLI uses the same schema synchronously (Database.sync) while a server may be running; WAL mode and a busy
timeout let both write safely.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, TypeVar

import sqlite_utils

T = TypeVar("T")

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT)""",
    """CREATE TABLE IF NOT EXISTS users (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, pw_hash TEXT, pw_salt TEXT,
        admin INTEGER NOT NULL DEFAULT 0, disabled INTEGER NOT NULL DEFAULT 0,
        epoch INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL)""",
    # signed-out sign-ins (auth.logout): every token carrying the sid is refused until `expires`
    """CREATE TABLE IF NOT EXISTS revoked_sessions (sid TEXT PRIMARY KEY, user_id INTEGER NOT NULL,
        expires REAL NOT NULL, revoked REAL NOT NULL)""",
    # touched: last upload or use (blob.put, blob.has "have it", a job taking it); blob GC keys on it (store/gc.py)
    """CREATE TABLE IF NOT EXISTS blobs (sha256 TEXT PRIMARY KEY, size INTEGER NOT NULL, created REAL NOT NULL,
        touched REAL)""",
    """CREATE TABLE IF NOT EXISTS blob_owners (
        sha256 TEXT NOT NULL, user_id INTEGER NOT NULL, PRIMARY KEY (sha256, user_id))""",
    """CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, user_id INTEGER NOT NULL, status TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0, kind TEXT NOT NULL, request TEXT, graph TEXT, result TEXT,
        error TEXT, app TEXT, created REAL NOT NULL, started REAL, finished REAL, archived INTEGER, worker TEXT)""",
    """CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, priority, seq)""",
    """CREATE INDEX IF NOT EXISTS jobs_user ON jobs (user_id, seq)""",
    # model manager (engine/models/registry.py): one row per registered model file or folder
    """CREATE TABLE IF NOT EXISTS models (
        name TEXT PRIMARY KEY, path TEXT NOT NULL, type TEXT NOT NULL, base TEXT, variant TEXT, prediction TEXT,
        format TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL, sha256 TEXT, source TEXT NOT NULL,
        hidden INTEGER NOT NULL DEFAULT 0, added REAL NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS models_path ON models (path)""",
    # gallery (engine/gallery/): one row per result image; meta = the full metadata JSON also in the PNG
    """CREATE TABLE IF NOT EXISTS images (
        id TEXT PRIMARY KEY, seq INTEGER NOT NULL, user_id INTEGER NOT NULL, job_id TEXT, created REAL NOT NULL,
        app TEXT NOT NULL DEFAULT '', document TEXT NOT NULL DEFAULT '', board_id TEXT, starred INTEGER NOT NULL
        DEFAULT 0, mode TEXT, prompt TEXT NOT NULL DEFAULT '', negative_prompt TEXT NOT NULL DEFAULT '', seed INTEGER,
        steps INTEGER, guidance REAL, model TEXT, model_hash TEXT, name TEXT, sha256 TEXT NOT NULL, w INTEGER NOT NULL,
        h INTEGER NOT NULL, x INTEGER NOT NULL DEFAULT 0, y INTEGER NOT NULL DEFAULT 0, path TEXT NOT NULL,
        thumb_sha256 TEXT, thumb_w INTEGER, thumb_h INTEGER, parent TEXT, params TEXT, meta TEXT NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS images_user ON images (user_id, seq)""",
    """CREATE INDEX IF NOT EXISTS images_sha ON images (sha256)""",
    """CREATE INDEX IF NOT EXISTS images_thumb ON images (thumb_sha256)""",
    """CREATE TABLE IF NOT EXISTS boards (
        id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL, created REAL NOT NULL,
        UNIQUE (user_id, name))""",
    # saved workflows (engine/workflows.py): graph with node versions + the exposed parameter schema
    """CREATE TABLE IF NOT EXISTS workflows (
        id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
        graph TEXT NOT NULL, params TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
        UNIQUE (user_id, name))""",
    # browser sessions of the web page (engine/web/cookies.py): id = SHA-256 of the cookie, never the cookie itself
    """CREATE TABLE IF NOT EXISTS web_sessions (
        id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, epoch INTEGER NOT NULL, created REAL NOT NULL,
        seen REAL NOT NULL, expires REAL NOT NULL, idle_s REAL NOT NULL, remember INTEGER NOT NULL)""",
    """CREATE INDEX IF NOT EXISTS web_sessions_user ON web_sessions (user_id)""",
]


def connect(path: Path) -> sqlite_utils.Database:
    private_dir(path.parent)
    if not path.exists():   # users, password hashes, jobs: readable by this account only (-wal/-shm follow)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")   # WAL + NORMAL: durable across process crashes
    conn.execute("PRAGMA foreign_keys=ON")
    db = sqlite_utils.Database(conn)
    for stmt in SCHEMA:
        conn.execute(stmt)
    _migrate(conn)
    return db


def _migrate(conn: sqlite3.Connection) -> None:
    """Columns added after a table was first created (databases of older versions)."""
    cols = {r[1] for r in conn.execute("PRAGMA table_info(blobs)")}
    if "touched" not in cols:
        try:
            conn.execute("ALTER TABLE blobs ADD COLUMN touched REAL")
        except sqlite3.OperationalError as exc:   # another process (CLI, engine) added it first
            if "duplicate column" not in str(exc):
                raise
    conn.execute("UPDATE blobs SET touched = created WHERE touched IS NULL")
    # jobs.archived (engine/queue.py): 0 while a completed job's results are not yet in the gallery; NULL in rows
    # of older versions, which archived before they answered
    if "archived" not in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}:
        try:
            conn.execute("ALTER TABLE jobs ADD COLUMN archived INTEGER")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
    # jobs.worker (engine/pool/): the pool worker that ran the job; NULL for jobs run in the engine's own process
    if "worker" not in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}:
        try:
            conn.execute("ALTER TABLE jobs ADD COLUMN worker TEXT")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_unarchived ON jobs (seq) WHERE archived = 0")
    conn.execute("CREATE INDEX IF NOT EXISTS blobs_touched ON blobs (touched)")


def private_dir(path: Path) -> None:
    """Create the data folder readable by this account only: it holds blobs (people's images), the database
    and secret.key, and other local users must not read them (see SECURITY.md)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o700)
    except OSError:
        pass


class Database:
    def __init__(self, path: Path):
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="paintbridge-db")
        self.db: sqlite_utils.Database = self._executor.submit(connect, path).result()

    async def run(self, fn: Callable[[sqlite_utils.Database], T], *args: Any) -> T:
        """Run fn(db, *args) on the database thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self.db, *args))

    def sync(self, fn: Callable[[sqlite_utils.Database], T], *args: Any) -> T:
        """Same, from a non-async thread (the job worker, the CLI)."""
        return self._executor.submit(lambda: fn(self.db, *args)).result()

    def close(self):
        try:
            self._executor.submit(self.db.conn.close).result()
        finally:
            self._executor.shutdown(wait=True)


def get_setting(db: sqlite_utils.Database, key: str) -> str | None:
    row = db.execute("SELECT value FROM settings WHERE key = ?", [key]).fetchone()
    return row[0] if row else None


def set_setting(db: sqlite_utils.Database, key: str, value: str) -> None:
    db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
               [key, value])

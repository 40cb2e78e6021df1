"""Who may read which blob (table blob_owners) and when a blob was last used (blobs.touched): the SQL behind
blob.put/has/get, the layer checks of generate/graph.submit/workflows.run, job results and gallery thumbnails.

A blob is readable by the users who uploaded it or own a job that produced it; admins read all. `record`
(every put and every job result) and `owned` (blob.has and the layer checks) refresh `blobs.touched`, so a
blob a client was just told "have it" stays for a while before garbage collection (engine/store/gc.py).
Every function takes a sqlite connection (run it through Database.run/sync).
"""

from __future__ import annotations

import time


def owned(db, uid: int, hashes: list[str], admin: bool = False, touch: bool = True) -> set[str]:
    """Subset of hashes that exist and that this user may read. With touch (the default: blob.has and the layer
    checks of the generation ops) they count as used now, which keeps them from GC for upload_retention_h.
    The touch comes first, in its own statement: a GC batch either ran before it (the row is gone: not owned)
    or runs after it (it sees a fresh touch and keeps the blob)."""
    if not hashes:
        return set()
    marks = ",".join("?" * len(hashes))
    if touch:
        if admin:
            db.execute(f"UPDATE blobs SET touched = ? WHERE sha256 IN ({marks})", [time.time(), *hashes])
        else:
            db.execute(f"UPDATE blobs SET touched = ? WHERE sha256 IN (SELECT sha256 FROM blob_owners WHERE "
                       f"user_id = ? AND sha256 IN ({marks}))", [time.time(), uid, *hashes])
    if admin:
        rows = db.execute(f"SELECT sha256 FROM blobs WHERE sha256 IN ({marks})", hashes)
    else:
        rows = db.execute(f"SELECT sha256 FROM blob_owners WHERE user_id = ? AND sha256 IN ({marks})",
                          [uid, *hashes])
    return {r[0] for r in rows}


def record(db, sha: str, size: int, uid: int) -> None:
    """After the file is written (BlobStore.write / Upload.finish): the row, touched now, and its owner."""
    now = time.time()
    db.execute("INSERT INTO blobs (sha256, size, created, touched) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(sha256) DO UPDATE SET touched = excluded.touched", [sha, size, now, now])
    db.execute("INSERT OR IGNORE INTO blob_owners (sha256, user_id) VALUES (?, ?)", [sha, uid])

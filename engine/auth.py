"""Users, passwords and signed tokens.

Token = base64url(JSON claims) "." base64url(HMAC-SHA256(secret, claims)). Claims: uid, exp, iat, rm
(remember_me), ep (the user's epoch), sid (the sign-in the token belongs to: refreshed tokens keep it) and sx (the
latest expiry of any token of that sign-in so far). Changing a password or disabling a user bumps the epoch, which
invalidates every token issued before; auth.logout revokes one sign-in (its sid) in the revoked_sessions table.
The secret lives in DATA_DIR/secret.key, mode 0600, made on first start.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import math
import os
import secrets
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from . import names
from .errors import BadRequest, EngineError, NotFound, RateLimited, TokenExpired, Unauthenticated
from .store.db import Database

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
USERNAME_MAX = 64


SECRET_BYTES = 32


def load_secret(data_dir: Path) -> bytes:
    """The token-signing key, made on first start. A short or unreadable key is refused, never used: tokens
    signed with an empty key could be forged by anyone."""
    path = data_dir / "secret.key"
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    # Write a private temp file, fsync it, then link it into place: a crash leaves either no key or a whole one,
    # and link (unlike rename) never replaces a key another process made first.
    tmp = data_dir / f".secret.key.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secret.hex())
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:   # another process created it first: use theirs
            return _read_secret(path)
        _fsync_dir(data_dir)
    finally:
        tmp.unlink(missing_ok=True)
    return secret


def _read_secret(path: Path) -> bytes:
    text = path.read_text(errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        secret = b""
    if len(secret) < SECRET_BYTES:
        raise EngineError(f"{path} is damaged ({len(text)} characters, need {2 * SECRET_BYTES} hex digits); "
                          "delete it to make a new key (this signs every user out)")
    return secret


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:   # not possible on every platform (Windows): the file itself is fsynced
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def hash_password(password: str, salt: bytes | None = None) -> tuple[str, str]:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, dklen=32, **SCRYPT)
    return digest.hex(), salt.hex()


def check_password(password: str, pw_hash: str | None, pw_salt: str | None) -> bool:
    if not pw_hash or not pw_salt:
        # No password set (e.g. the first admin before `users passwd`): still spend the time, then refuse.
        hash_password(password)
        return False
    digest, _ = hash_password(password, bytes.fromhex(pw_salt))
    return hmac.compare_digest(digest, pw_hash)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Claims:
    uid: int
    exp: float
    iat: float
    rm: bool
    ep: int
    sid: str = ""
    sx: float = 0.0


class Tokens:
    def __init__(self, secret: bytes, ttl_s: int, remember_ttl_s: int):
        self.secret = secret
        self.ttl_s = ttl_s
        self.remember_ttl_s = remember_ttl_s

    def issue(self, uid: int, epoch: int, remember: bool, ttl_s: int | None = None, sid: str | None = None,
              sx: float = 0.0) -> tuple[str, float]:
        """A new token; sid/sx continue a sign-in (a refresh), else it starts a new one."""
        now = time.time()
        ttl = ttl_s if ttl_s is not None else (self.remember_ttl_s if remember else self.ttl_s)
        exp = round(now + ttl, 3)
        claims = {"uid": uid, "exp": exp, "iat": round(now, 3), "rm": bool(remember), "ep": epoch,
                  "sid": sid or secrets.token_hex(12), "sx": max(float(sx), exp)}
        body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
        sig = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        return f"{body}.{sig}", claims["exp"]

    def verify(self, token: object) -> Claims:
        """Check signature and expiry (not revocation: see check_user)."""
        if not isinstance(token, str) or token.count(".") != 1 or len(token) > 2048:
            raise Unauthenticated("malformed token")
        body, sig = token.split(".")
        good = _b64(hmac.new(self.secret, body.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(good, sig):
            raise Unauthenticated("invalid token")
        try:
            raw = json.loads(_unb64(body))
            claims = Claims(int(raw["uid"]), float(raw["exp"]), float(raw["iat"]), bool(raw["rm"]), int(raw["ep"]),
                            # a token of an older version has no sid: it is a sign-in of its own
                            str(raw.get("sid") or "h:" + hashlib.sha256(body.encode()).hexdigest()[:32]),
                            float(raw.get("sx") or raw["exp"]))
        except (ValueError, KeyError, TypeError):
            raise Unauthenticated("malformed token") from None
        if claims.exp <= time.time():
            raise TokenExpired("token expired: sign in again")
        return claims


# ---- users (synchronous; the server calls them through Database.run) -------------------------------------
def validate_username(name: object) -> str:
    if not isinstance(name, str) or not (1 <= len(name) <= USERNAME_MAX) or not name.isprintable() \
            or name.strip() != name or "/" in name or "\\" in name:
        raise BadRequest("a username is 1-64 printable characters without slashes or surrounding spaces")
    names.visible_name(name, "user", max_len=USERNAME_MAX)
    if len(names.scripts(name)) > 1:
        raise BadRequest(f"a username cannot mix {' and '.join(sorted(names.scripts(name))).title()} letters "
                         "(look-alike names)", details={"field": "name"})
    return name


def create_user(db: sqlite_utils.Database, name: str, password: str | None, admin: bool = False) -> dict:
    validate_username(name)
    same = [u["name"] for u in db.query("SELECT name FROM users") if names.identity(u["name"]) == names.identity(name)]
    if same:
        raise BadRequest(f"user {name!r} already exists" if same[0] == name else
                         f"user {name!r} would be confused with the existing user {same[0]!r}")
    pw_hash, pw_salt = hash_password(password) if password else (None, None)
    db["users"].insert({"name": name, "pw_hash": pw_hash, "pw_salt": pw_salt, "admin": int(admin),
                        "disabled": 0, "epoch": 0, "created": time.time()})
    return get_user(db, name=name)


def get_user(db: sqlite_utils.Database, uid: int | None = None, name: str | None = None) -> dict:
    if uid is not None:
        rows = list(db.query("SELECT * FROM users WHERE id = ?", [uid]))
    else:
        rows = list(db.query("SELECT * FROM users WHERE name = ?", [name]))
    if not rows:
        raise NotFound(f"no user {name if name is not None else uid!r}")
    return rows[0]


def users_by_id(db: sqlite_utils.Database, ids: list[int]) -> list[dict]:
    marks = ",".join("?" * len(ids))
    return list(db.query(f"SELECT id, name, admin, disabled, epoch FROM users WHERE id IN ({marks})", ids))


def list_users(db: sqlite_utils.Database) -> list[dict]:
    return [public_user(u) for u in db.query("SELECT * FROM users ORDER BY id")]


def public_user(user: dict) -> dict:
    return {"id": user["id"], "name": user["name"], "admin": bool(user["admin"]),
            "disabled": bool(user["disabled"]), "created": user["created"]}


def set_password(db: sqlite_utils.Database, name: str, password: str) -> None:
    if not isinstance(password, str) or len(password) < 4:
        raise BadRequest("a password needs at least 4 characters")
    user = get_user(db, name=name)
    pw_hash, pw_salt = hash_password(password)
    db.execute("UPDATE users SET pw_hash = ?, pw_salt = ?, epoch = epoch + 1 WHERE id = ?",
               [pw_hash, pw_salt, user["id"]])


def set_disabled(db: sqlite_utils.Database, name: str, disabled: bool = True) -> None:
    user = get_user(db, name=name)
    db.execute("UPDATE users SET disabled = ?, epoch = epoch + 1 WHERE id = ?", [int(disabled), user["id"]])


def set_admin(db: sqlite_utils.Database, name: str, admin: bool = True) -> None:
    """Make a user an admin or an ordinary user; the engine keeps at least one enabled admin."""
    user = get_user(db, name=name)
    if not admin and user["admin"]:
        others = db.execute("SELECT COUNT(*) FROM users WHERE admin = 1 AND disabled = 0 AND id != ?",
                            [user["id"]]).fetchone()[0]
        if not others:
            raise BadRequest("this is the last enabled admin: make another user admin first")
    db.execute("UPDATE users SET admin = ? WHERE id = ?", [int(admin), user["id"]])


def sign_out_everywhere(db: sqlite_utils.Database, name: str) -> None:
    """Every token and browser session of the user stops working (the epoch moves); the password stays."""
    user = get_user(db, name=name)
    db.execute("UPDATE users SET epoch = epoch + 1 WHERE id = ?", [user["id"]])


def ensure_admin(db: sqlite_utils.Database) -> dict | None:
    """On first start create user 'admin' (no password: use `paintbridge token` or `users passwd`)."""
    if db.execute("SELECT 1 FROM users LIMIT 1").fetchone():
        return None
    return create_user(db, "admin", None, admin=True)


def check_user(db: sqlite_utils.Database, claims: Claims) -> dict:
    """The user behind valid claims, refusing revoked tokens (password changed, user disabled or removed)."""
    try:
        user = get_user(db, uid=claims.uid)
    except NotFound:
        raise Unauthenticated("token refers to an unknown user") from None
    if user["disabled"]:
        raise Unauthenticated("this user is disabled")
    if user["epoch"] != claims.ep:
        raise Unauthenticated("token revoked (password changed or user re-enabled): sign in again")
    if db.execute("SELECT 1 FROM revoked_sessions WHERE sid = ?", [claims.sid]).fetchone():
        raise Unauthenticated(SIGNED_OUT)
    return user


SIGNED_OUT = "signed out: this sign-in was ended (auth.logout); sign in again"


def revoke_session(db: sqlite_utils.Database, claims: Claims, keep_until: float) -> None:
    """Refuse every token of claims' sign-in from now on. The row is kept until keep_until (no token of the
    sign-in is valid after it); rows past their time are dropped here."""
    now = time.time()
    db.execute("DELETE FROM revoked_sessions WHERE expires < ?", [now])
    db.execute("INSERT OR REPLACE INTO revoked_sessions (sid, user_id, expires, revoked) VALUES (?, ?, ?, ?)",
               [claims.sid, claims.uid, keep_until, now])


ADDRESS_FACTOR = 4


class LoginLimiter:
    """Sign-in attempts per account and per source address.

    An attempt is reserved before the password is checked (so simultaneous guesses cannot all be evaluated), at
    most `concurrent` per key at once. After `max_failures` failures inside the window (an address:
    ADDRESS_FACTOR times that) a key backs off: 1 s after
    its last failure, doubling with each further failure, up to the window. The back-off ends by itself, so a
    stranger's failures delay the account's owner but never lock the right password out for good. Every loopback
    address is one source (127.0.0.2 is the same machine as 127.0.0.1)."""

    def __init__(self, max_failures: int, window_s: float, concurrent: int = 2):
        self.max_failures = max_failures
        self.window_s = window_s
        self.concurrent = concurrent
        self._fails: dict[str, deque] = defaultdict(deque)
        self._busy: dict[str, int] = defaultdict(int)

    @staticmethod
    def keys(user: str, remote: str) -> tuple[str, str]:
        try:
            loopback = ipaddress.ip_address(remote.split("%")[0]).is_loopback
        except ValueError:
            loopback = False
        return f"user:{user.casefold()}", "addr:loopback" if loopback else f"addr:{remote}"

    def retry_after(self, key: str, now: float) -> float:
        q = self._fails.get(key)
        while q and now - q[0] > self.window_s:
            q.popleft()
        # An address gets more tries than an account: it stands for every local user and app at once.
        limit = self.max_failures * (ADDRESS_FACTOR if key.startswith("addr:") else 1)
        if not q or len(q) < limit:
            return 0.0
        backoff = min(self.window_s, 2.0 ** (len(q) - limit))
        return max(0.0, q[-1] + backoff - now)

    def reserve(self, *keys: str):
        """Take an attempt slot on every key or raise RateLimited; give it back with release()."""
        now = time.monotonic()
        wait = max(self.retry_after(k, now) for k in keys)
        if wait > 0:
            raise RateLimited(f"too many failed sign-ins; try again in {math.ceil(wait)} s",
                              details={"retry_after_s": round(wait, 1)})
        if any(self._busy[k] >= self.concurrent for k in keys):
            raise RateLimited("another sign-in for this account or address is being checked; try again",
                              details={"retry_after_s": 1.0})
        for k in keys:
            self._busy[k] += 1

    def release(self, *keys: str, failed: bool):
        now = time.monotonic()
        for k in keys:
            self._busy[k] -= 1
            if self._busy[k] <= 0:
                del self._busy[k]
            if failed:
                self._fails[k].append(now)
        if len(self._fails) > 10000:   # bound memory against address spraying
            for k in [k for k, q in self._fails.items() if not q or now - q[-1] > self.window_s]:
                del self._fails[k]


class PasswordChecker:
    """scrypt on a few threads of its own: a flood of sign-ins must not hold the database thread (every user's
    requests go through it) nor queue without bound."""

    def __init__(self, workers: int, queue: int):
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="paintbridge-scrypt")
        self.queue = queue
        self.pending = 0

    async def check(self, password: str, user: dict | None) -> bool:
        """True when user exists, is enabled and password is right; the same cost whether or not it exists."""
        if self.pending >= self.queue:
            raise RateLimited("too many sign-ins at once; try again", details={"retry_after_s": 1.0})
        self.pending += 1
        try:
            pw_hash, pw_salt = (user["pw_hash"], user["pw_salt"]) if user else (None, None)
            ok = await asyncio.get_running_loop().run_in_executor(self.pool, check_password, password, pw_hash,
                                                                  pw_salt)
        finally:
            self.pending -= 1
        return ok and user is not None and not user["disabled"]

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


def mint_token(config, user_name: str | None = None, ttl_s: int | None = None,
               remember: bool = False) -> tuple[str, float, str]:
    """(token, expires_at, user name) signed with the data dir's secret, for a named user or the first enabled
    admin. For the CLI on the engine's own machine: whoever can read the data dir can sign tokens anyway."""
    db = Database(config.db_path)
    try:
        db.sync(ensure_admin)
        if user_name:
            user = db.sync(get_user, None, user_name)
        else:
            admins = [u for u in db.sync(list_users) if u["admin"] and not u["disabled"]]
            if not admins:
                raise EngineError("no enabled admin user")
            user = db.sync(get_user, admins[0]["id"])
        if user["disabled"]:
            raise EngineError(f"user {user['name']} is disabled")
    finally:
        db.close()
    tokens = Tokens(load_secret(config.data_dir), config.token_ttl_s, config.remember_ttl_s)
    token, exp = tokens.issue(user["id"], user["epoch"], remember, ttl_s)
    return token, exp, user["name"]

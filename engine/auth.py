"""Users, passwords and signed tokens.

Token = base64url(JSON claims) "." base64url(HMAC-SHA256(secret, claims)). Claims: uid, exp, iat, rm
(remember_me), ep (the user's epoch). Changing a password or disabling a user bumps the epoch, which
invalidates every token issued before. The secret lives in DATA_DIR/secret.key, mode 0600, made on first start.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from .errors import BadRequest, EngineError, NotFound, RateLimited, TokenExpired, Unauthenticated
from .store.db import Database

SCRYPT = {"n": 2 ** 14, "r": 8, "p": 1}
USERNAME_MAX = 64


def load_secret(data_dir: Path) -> bytes:
    path = data_dir / "secret.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:   # another process created it first: use theirs
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex())
    return secret


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


class Tokens:
    def __init__(self, secret: bytes, ttl_s: int, remember_ttl_s: int):
        self.secret = secret
        self.ttl_s = ttl_s
        self.remember_ttl_s = remember_ttl_s

    def issue(self, uid: int, epoch: int, remember: bool, ttl_s: int | None = None) -> tuple[str, float]:
        now = time.time()
        ttl = ttl_s if ttl_s is not None else (self.remember_ttl_s if remember else self.ttl_s)
        claims = {"uid": uid, "exp": round(now + ttl, 3), "iat": round(now, 3), "rm": bool(remember), "ep": epoch}
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
            claims = Claims(int(raw["uid"]), float(raw["exp"]), float(raw["iat"]), bool(raw["rm"]), int(raw["ep"]))
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
    return name


def create_user(db: sqlite_utils.Database, name: str, password: str | None, admin: bool = False) -> dict:
    validate_username(name)
    if db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone():
        raise BadRequest(f"user {name!r} already exists")
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
    return user


class LoginLimiter:
    """Failed logins per username and per peer address inside a sliding window."""

    def __init__(self, max_failures: int, window_s: float):
        self.max_failures = max_failures
        self.window_s = window_s
        self._fails: dict[str, deque] = defaultdict(deque)

    def check(self, *keys: str):
        now = time.monotonic()
        for key in keys:
            q = self._fails.get(key)
            if not q:
                continue
            while q and now - q[0] > self.window_s:
                q.popleft()
            if len(q) >= self.max_failures:
                raise RateLimited("too many failed sign-ins; wait a minute and try again",
                                  details={"retry_after_s": round(self.window_s - (now - q[0]), 1)})

    def failed(self, *keys: str):
        now = time.monotonic()
        for key in keys:
            self._fails[key].append(now)
        if len(self._fails) > 10000:   # bound memory against address spraying
            for key in [k for k, q in self._fails.items() if not q or now - q[-1] > self.window_s]:
                del self._fails[key]


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

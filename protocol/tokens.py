"""Where plug-ins keep sign-in tokens: the system keyring, or a 0600 JSON file when no keyring exists.

Keyed by server URL, so one person can use several engines. All calls may block (D-Bus, disk): call them off
the host's UI thread (session.py does).
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

SERVICE = "paintbridge"


def _usable_keyring():
    try:
        import keyring
        from keyring.backends import fail
    except Exception:
        return None
    try:
        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring) or "null" in type(backend).__module__:
            return None
        if getattr(backend, "priority", 1) <= 0:
            return None
        backend.get_password(SERVICE, "__probe__")
        return backend
    except Exception:
        return None


class TokenStore:
    def __init__(self, config_dir: str | os.PathLike, use_keyring: bool = True):
        self.path = Path(config_dir) / "paintbridge-tokens.json"
        self._lock = threading.Lock()
        self._keyring = _usable_keyring() if use_keyring else None

    @property
    def backend(self) -> str:
        return "keyring" if self._keyring is not None else f"file {self.path}"

    def get(self, url: str) -> str | None:
        if self._keyring is not None:
            try:
                return self._keyring.get_password(SERVICE, url)
            except Exception:
                pass
        return self._read().get(url)

    def set(self, url: str, token: str) -> None:
        if self._keyring is not None:
            try:
                self._keyring.set_password(SERVICE, url, token)
                return
            except Exception:
                pass
        with self._lock:
            data = self._read()
            data[url] = token
            self._write(data)

    def delete(self, url: str) -> None:
        if self._keyring is not None:
            try:
                self._keyring.delete_password(SERVICE, url)
            except Exception:
                pass
        with self._lock:
            data = self._read()
            if data.pop(url, None) is not None:
                self._write(data)

    def _read(self) -> dict:
        try:
            return json.loads(self.path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}

    def _write(self, data: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        # Created 0600 from the start: the token must never be readable by other local users, even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

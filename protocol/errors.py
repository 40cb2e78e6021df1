"""Error codes of the wire contract and the exception clients raise for an error reply."""

from __future__ import annotations

from typing import Any

UNAUTHENTICATED = "unauthenticated"
TOKEN_EXPIRED = "token_expired"
FORBIDDEN = "forbidden"
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
TOO_LARGE = "too_large"
UNSUPPORTED_VERSION = "unsupported_version"
RATE_LIMITED = "rate_limited"
BUSY = "busy"
CANCELED = "canceled"
INTERNAL = "internal"
# Client-side only: the request never got a reply (timeout, connection lost).
TIMEOUT = "timeout"
DISCONNECTED = "disconnected"

CODES = (
    UNAUTHENTICATED, TOKEN_EXPIRED, FORBIDDEN, BAD_REQUEST, NOT_FOUND, TOO_LARGE,
    UNSUPPORTED_VERSION, RATE_LIMITED, BUSY, CANCELED, INTERNAL,
)


class ProtocolError(Exception):
    """An error reply from the server (or a local transport failure with code timeout/disconnected)."""

    def __init__(self, code: str, message: str, details: Any = None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details}

    @classmethod
    def from_wire(cls, error: Any) -> "ProtocolError":
        if not isinstance(error, dict):
            return cls(INTERNAL, f"malformed error object: {error!r}")
        return cls(str(error.get("code", INTERNAL)), str(error.get("message", "")), error.get("details"))

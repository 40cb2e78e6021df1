"""Typed errors raised inside the engine.

Every error a client can see carries one of the wire error codes from protocol.errors; the server turns an
EngineError into an error reply (or a job.failed event) without a traceback reaching the client.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    code = "internal"

    def __init__(self, message: str, details: Any = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class BadRequest(EngineError):
    code = "bad_request"


class NotFound(EngineError):
    code = "not_found"


class Forbidden(EngineError):
    code = "forbidden"


class TooLarge(EngineError):
    code = "too_large"


class Busy(EngineError):
    code = "busy"


class RateLimited(EngineError):
    code = "rate_limited"


class Canceled(EngineError):
    """Raised inside a running job when its owner canceled it; the queue reports job.canceled."""

    code = "canceled"


class ModelError(EngineError):
    """A model file that cannot be read or used (corrupt, unknown family, base mismatch)."""

    code = "bad_request"


class Unauthenticated(EngineError):
    code = "unauthenticated"


class TokenExpired(EngineError):
    code = "token_expired"


class UnsupportedVersion(EngineError):
    code = "unsupported_version"

"""Encoding and decoding of frames: one binary WebSocket frame = one msgpack map.

Three frame kinds (see SPEC.md): request {id, op, args}, reply {re, ok, result|error}, event {event, data}.
"""

from __future__ import annotations

from typing import Any

from . import dependency
from .errors import BAD_REQUEST, ProtocolError

msgpack = dependency("msgpack")


def encode(message: dict) -> bytes:
    # use_bin_type: bytes travel as msgpack bin, str as str — pixel data must never be mistaken for text.
    return msgpack.packb(message, use_bin_type=True)


def decode(frame: bytes | bytearray | memoryview) -> dict:
    """Decode one frame into a map. Raises ProtocolError(bad_request) for anything that is not one msgpack map."""
    try:
        obj = msgpack.unpackb(frame, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, ValueError, ...)
        raise ProtocolError(BAD_REQUEST, f"frame is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(BAD_REQUEST, f"frame must be a msgpack map, got {type(obj).__name__}")
    return obj


def request(id: int, op: str, args: dict | None = None) -> dict:
    return {"id": id, "op": op, "args": args if args is not None else {}}


def reply_ok(re: int | None, result: Any) -> dict:
    return {"re": re, "ok": True, "result": result}


def reply_error(re: int | None, code: str, message: str, details: Any = None) -> dict:
    return {"re": re, "ok": False, "error": {"code": code, "message": message, "details": details}}


def event(name: str, data: dict) -> dict:
    return {"event": name, "data": data}


def kind(message: dict) -> str:
    """'request', 'reply' or 'event' (raises bad_request for a map that is none of them)."""
    if "event" in message:
        return "event"
    if "re" in message and "ok" in message:
        return "reply"
    if "op" in message:
        return "request"
    raise ProtocolError(BAD_REQUEST, "map is neither a request, a reply nor an event")

"""A tiny 8-bit RGBA PNG encoder (standard library only): gallery thumbnails for bpy.utils.previews, which
loads icons from files. Knows nothing of Blender or the protocol."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def encode_rgba(w: int, h: int, data: bytes, level: int = 6) -> bytes:
    """PNG bytes for top-down rows of straight-alpha RGBA8 pixels (filter 0 on every row)."""
    if w <= 0 or h <= 0:
        raise ValueError(f"bad size {w}x{h}")
    stride = w * 4
    if len(data) != stride * h:
        raise ValueError(f"{len(data)} bytes for {w}x{h} RGBA")
    raw = b"".join(b"\x00" + data[r * stride:(r + 1) * stride] for r in range(h))
    return (SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, level)) + _chunk(b"IEND", b""))


def write_rgba(path: str, w: int, h: int, data: bytes) -> str:
    with open(path, "wb") as fh:
        fh.write(encode_rgba(w, h, data))
    return path

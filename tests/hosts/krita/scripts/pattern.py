"""The asymmetric test pattern, shared by the in-Krita scripts and the pytest side (stdlib only)."""


def pattern_bgra(w: int, h: int) -> bytes:
    """BGRA (Krita's order): a gradient plus a pure red 16x8 block in the top-left corner."""
    out = bytearray(w * h * 4)
    for y in range(h):
        for x in range(w):
            i = (y * w + x) * 4
            b, g, r = (x + 2 * y) % 256, y * 255 // (h - 1), x * 255 // (w - 1)
            if x < 16 and y < 8:
                b, g, r = 0, 0, 255
            out[i:i + 4] = bytes((b, g, r, 255))
    return bytes(out)


def pattern_rgba(w: int, h: int) -> bytes:
    """The same image in the wire's RGBA order."""
    d = pattern_bgra(w, h)
    out = bytearray(d)
    out[0::4], out[2::4] = d[2::4], d[0::4]
    return bytes(out)

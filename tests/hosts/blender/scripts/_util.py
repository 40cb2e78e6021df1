"""Helpers for scripts that drive the Paintbridge add-on inside Blender."""

import importlib
import time


def addon(module_name):
    pkg = importlib.import_module(module_name)
    return pkg, importlib.import_module(module_name + ".core")


def pump(core, until, timeout=60.0, what="condition"):
    """Call the add-on's drain() (timers do not fire under -b) until until() is true."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        core.drain()
        if until():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}; state={core.STATE}")


def pattern(w, h):
    """Top-down RGBA bytes, every pixel different, alpha varying (never 0 so colours are defined)."""
    out = bytearray()
    for y in range(h):
        for x in range(w):
            out += bytes(((x * 37 + y * 11) % 256, (y * 53 + 7) % 256, (x * y * 13 + 91) % 256, 40 + (x * 7 + y * 5) % 216))
    return bytes(out)

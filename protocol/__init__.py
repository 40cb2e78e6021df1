"""Paintbridge wire protocol v1: codec, error codes, and the Python client used by plug-ins and tests.

This package must import with the standard library plus pure-Python packages only (msgpack, which has a
pure-Python fallback, and websockets), because it is bundled into Krita, Blender and GIMP plug-ins.
Modules use relative imports so the package works when vendored under another name, and reach msgpack and
websockets through `dependency()`, so a plug-in's bundled copies stay private to it (see below).
"""

import importlib
import importlib.util

PROTOCOL_VERSION = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9180
WS_PATH = "/v1/ws"
DEFAULT_FRAME_LIMIT = 16 * 1024 * 1024
# Chunk size clients use for blob.put / blob.get: comfortably under the default frame limit.
CHUNK_SIZE = 4 * 1024 * 1024


def default_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"ws://{host}:{port}{WS_PATH}"


def dependency(name: str):
    """Import msgpack / websockets (or a submodule). Plug-in builds bundle them beside this package (Krita's and
    Blender's `paintbridge._vendor.*`): that copy is imported as a sibling subpackage, never under its top-level
    name, so another plug-in in the same host interpreter that brings its own websockets (krita-ai-diffusion
    does) neither gets ours nor gives us theirs. Elsewhere (the engine, tests, GIMP's own process) it is the
    installed package."""
    parent = __name__.rpartition(".")[0]
    if parent and importlib.util.find_spec(f"{parent}.{name.partition('.')[0]}") is not None:
        return importlib.import_module(f"{parent}.{name}")
    return importlib.import_module(name)

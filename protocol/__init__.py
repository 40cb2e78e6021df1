"""Paintbridge wire protocol v1: codec, error codes, and the Python client used by plug-ins and tests.

This package must import with the standard library plus pure-Python packages only (msgpack, which has a
pure-Python fallback, and websockets), because it is bundled into Krita, Blender and GIMP plug-ins.
Modules use relative imports so the package works when vendored under another name.
"""

PROTOCOL_VERSION = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9180
WS_PATH = "/v1/ws"
DEFAULT_FRAME_LIMIT = 16 * 1024 * 1024
# Chunk size clients use for blob.put / blob.get: comfortably under the default frame limit.
CHUNK_SIZE = 4 * 1024 * 1024


def default_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"ws://{host}:{port}{WS_PATH}"

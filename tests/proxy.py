"""A TCP relay between a client and an engine that a test can cut and restore: a real network blip.

`cut()` closes every relayed connection (the client sees its socket drop) and holds new ones: they are accepted
but not relayed until `restore()`, so a reconnecting client waits (within its open timeout) instead of backing
off, and reconnects as soon as the link is back.
"""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, engine_url: str) -> str:
        """engine_url (ws://host:port/path) with this relay's port."""
        scheme, _, rest = engine_url.partition("://")
        path = rest[rest.index("/"):] if "/" in rest else ""
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def cut(self):
        self._open.clear()
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self):
        self._open.set()

    def close(self):
        self._closed = True
        self.cut()
        self._open.set()
        self._listener.close()

    def _accept(self):
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket):
        self._open.wait()
        if self._closed:
            conn.close()
            return
        try:
            up = socket.create_connection(self.upstream)
        except OSError:
            conn.close()
            return
        with self._lock:
            self._socks += [conn, up]
        for a, b in ((conn, up), (up, conn)):
            threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

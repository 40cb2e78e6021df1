"""What the in-Krita test scripts share: waiting on Qt without blocking it, the docker, writing the result."""

import json
import os
import time

from PyQt5.QtCore import QEventLoop
from PyQt5.QtWidgets import QApplication, QDockWidget


def params() -> dict:
    return json.loads(os.environ["PAINTBRIDGE_TEST_PARAMS"])


def pump(ctl, cond, timeout, what, messages=()):
    """Process Qt events (the plug-in's timer drains the session) until cond() holds."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what} (state={ctl.state}, message={list(messages)[-3:]})")
        QApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)


def settle(seconds):
    """Let the plug-in's timer drain whatever would arrive (to show that nothing does)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)


def show(doc, timeout=20):
    """Open a view on a document the script made (createDocument) and wait for its active layer: Krita 5.2 picks
    the first layer through an event after the view exists (Krita 5.1 at once), and Document.activeNode() is None
    until then. Returns the active layer."""
    from krita import Krita
    Krita.instance().activeWindow().addView(doc)
    end = time.monotonic() + timeout
    while doc.activeNode() is None:
        if time.monotonic() > end:
            raise AssertionError(f"no active layer {timeout} s after opening a view on {doc.name()!r}")
        QApplication.processEvents(QEventLoop.AllEvents, 50)
        time.sleep(0.01)
    return doc.activeNode()


def docker(app):
    docks = [d for d in app.activeWindow().qwindow().findChildren(QDockWidget)
             if d.objectName() == "paintbridge_docker"]
    assert docks, "no Paintbridge docker"
    return docks[0]


def write(result: dict):
    """The result file the pytest side reads (also mid-run, so a hang shows how far the script got)."""
    with open(os.environ["PAINTBRIDGE_TEST_RESULT"], "w") as fh:
        json.dump(result, fh)


class Relay:
    """A TCP relay to the engine on a fixed port that is closed ("the engine is down": connections are refused)
    until start() - so a test can bring "the engine" up while the plug-in keeps retrying."""

    def __init__(self, upstream_url: str):
        import socket
        rest = upstream_url.partition("://")[2]
        hostport = rest.split("/", 1)[0]
        host, _, port = hostport.rpartition(":")
        self.upstream = (host, int(port))
        self.path = "/" + rest.split("/", 1)[1] if "/" in rest else ""
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"ws://127.0.0.1:{self.port}{self.path}"
        self._listener = None

    def start(self):
        import socket
        import threading
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            for a, b in ((conn, up), (up, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(2)
                except OSError:
                    pass


class Ticker:
    """The longest gap between ticks of a 5 ms QTimer on Krita's main thread: how long the UI stood still."""

    def __init__(self):
        from PyQt5.QtCore import QTimer
        self.last = None
        self.max_gap = 0.0
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._tick)

    def _tick(self):
        now = time.perf_counter()
        if self.last is not None:
            self.max_gap = max(self.max_gap, now - self.last)
        self.last = now

    def start(self):
        self.last, self.max_gap = time.perf_counter(), 0.0
        self.timer.start()

    def stop(self) -> float:
        self.timer.stop()
        return round(self.max_gap * 1000, 1)

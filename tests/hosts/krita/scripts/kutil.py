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


def docker(app):
    docks = [d for d in app.activeWindow().qwindow().findChildren(QDockWidget)
             if d.objectName() == "paintbridge_docker"]
    assert docks, "no Paintbridge docker"
    return docks[0]


def write(result: dict):
    """The result file the pytest side reads (also mid-run, so a hang shows how far the script got)."""
    with open(os.environ["PAINTBRIDGE_TEST_RESULT"], "w") as fh:
        json.dump(result, fh)

"""The Krita extension: creates the controller, and runs a test script when PAINTBRIDGE_TEST_SCRIPT is set
(tests/hosts drives real Krita through it)."""

from __future__ import annotations

import os
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer

from .controller import controller


class PaintbridgeExtension(Extension):
    def setup(self):
        script = os.environ.get("PAINTBRIDGE_TEST_SCRIPT")
        if script:
            Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(200, lambda: _run(script)))

    def createActions(self, window):
        pass


def _run(path: str):
    """Run a test script on the main thread with the controller at hand; it writes its own results."""
    glob = {"__name__": "__paintbridge_test__", "controller": controller(), "__file__": path}
    try:
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), path, "exec"), glob)
    except BaseException:
        out = os.environ.get("PAINTBRIDGE_TEST_RESULT")
        if out:
            import json
            with open(out, "w", encoding="utf-8") as f:
                json.dump({"ok": False, "error": traceback.format_exc()}, f)
    finally:
        os._exit(0)   # Krita's own shutdown can hang under Xvfb; the script has written its result

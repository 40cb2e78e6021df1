"""A test-only Krita plug-in: runs the script named by PAINTBRIDGE_TEST_SCRIPT on Krita's main thread once the
first window exists, with the Paintbridge controller at hand, then ends Krita.

krita_host.py installs it next to the shipped plug-in, so the shipped plug-in carries no test entry point. The
script writes its own result to PAINTBRIDGE_TEST_RESULT; an exception that escapes it is written there instead.
"""

import json
import os
import traceback

from krita import Extension, Krita
from PyQt5.QtCore import QTimer


class TestDriver(Extension):
    def setup(self):
        script = os.environ.get("PAINTBRIDGE_TEST_SCRIPT")
        if script:
            Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(200, lambda: _run(script)))

    def createActions(self, window):
        pass


def _run(path: str):
    try:
        from paintbridge.controller import controller   # the shipped plug-in, loaded by Krita as "paintbridge"

        glob = {"__name__": "__paintbridge_test__", "controller": controller(), "__file__": path}
        with open(path, encoding="utf-8") as f:
            exec(compile(f.read(), path, "exec"), glob)
    except BaseException:
        with open(os.environ["PAINTBRIDGE_TEST_RESULT"], "w", encoding="utf-8") as f:
            json.dump({"ok": False, "error": traceback.format_exc()}, f)
    finally:
        os._exit(0)   # Krita's own shutdown can hang under Xvfb; the script has written its result


Krita.instance().addExtension(TestDriver(Krita.instance()))

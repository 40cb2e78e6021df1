"""A test-only Krita plug-in: runs the script named by PAINTBRIDGE_TEST_SCRIPT on Krita's main thread once the
first window exists, with the Paintbridge controller at hand, then ends Krita.

Scripts wait by pumping Qt events (kutil.pump). Krita 5.2 delivers its "synchronized" events (those that build a
document's layer model: the node dummies and shapes, the first active layer) only from the outermost event
dispatch, and postpones them while any event handler runs (KisApplication::notify, eventRecursionCount > 1). A
script started from a QTimer is such a handler, so a document it creates with createDocument()/openDocument()
would never get a layer model or an active layer while it runs. So the script is started from a GLib idle
source where GLib is there (Qt's event loop on Linux runs on GLib's): that callback is outside Qt's event
dispatch, and every event its pumps process is an outermost one, as it is when a person clicks.

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
            Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(200, lambda: _start(script)))

    def createActions(self, window):
        pass


def _start(path: str):
    try:
        from gi.repository import GLib
    except ImportError:   # no PyGObject: run from the timer (fine on Krita 5.1, which does not postpone)
        _run(path)
        return
    GLib.idle_add(lambda: _run(path))


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

"""Paintbridge for Krita: a docker that generates into the open document.

Layout: canvas.py touches Krita documents (main thread only); controller.py owns the shared protocol Session and
drains it from a QTimer; docker.py is the panel. The shared client is bundled under _vendor/ by
`paintbridge plugin build krita`.
"""

import os
import sys

_VENDOR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor")
if os.path.isdir(_VENDOR) and _VENDOR not in sys.path:
    sys.path.insert(0, _VENDOR)

from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita  # noqa: E402

from .docker import PaintbridgeDocker  # noqa: E402
from .extension import PaintbridgeExtension  # noqa: E402

_app = Krita.instance()
_app.addExtension(PaintbridgeExtension(_app))
_app.addDockWidgetFactory(DockWidgetFactory("paintbridge_docker", DockWidgetFactoryBase.DockRight, PaintbridgeDocker))

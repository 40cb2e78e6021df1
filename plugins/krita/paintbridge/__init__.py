"""Paintbridge for Krita: a docker that generates into the open document.

Layout (the shape all three plug-ins share): extension.py is the Krita Extension; host.py touches Krita documents
(main thread only); controller.py owns the shared protocol Session and drains it from a QTimer; settings.py keeps
preferences and the last form values; panels.py is the docker; workflow_form.py builds a workflow's form;
steering.py keeps a document's control layers, references and regions (in the .kra) and turns them into requests.
The shared client is bundled as the private package _vendor/ by `paintbridge plugin build krita` and imported as
`._vendor.protocol` (Krita shares one interpreter between all plug-ins, so we take no top-level module names). keyring lives in _vendor/site, appended to sys.path last.
"""

import os
import sys

_SITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_vendor", "site")
if os.path.isdir(_SITE) and _SITE not in sys.path:
    sys.path.append(_SITE)

from krita import DockWidgetFactory, DockWidgetFactoryBase, Krita  # noqa: E402

from .panels import PaintbridgeDocker  # noqa: E402
from .extension import PaintbridgeExtension  # noqa: E402

_app = Krita.instance()
_app.addExtension(PaintbridgeExtension(_app))
_app.addDockWidgetFactory(DockWidgetFactory("paintbridge_docker", DockWidgetFactoryBase.DockRight, PaintbridgeDocker))

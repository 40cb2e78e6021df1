"""The Krita extension. It has no actions yet; the docker starts the controller when Krita creates it."""

from __future__ import annotations

from krita import Extension


class PaintbridgeExtension(Extension):
    def setup(self):
        pass

    def createActions(self, window):
        pass

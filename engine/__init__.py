"""Paintbridge engine: the daemon behind the Krita, Blender and GIMP plug-ins."""

__version__ = "0.1.0"

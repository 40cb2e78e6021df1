"""The built-in nodes. Importing this package registers them all in engine.graph.NODES."""

from . import control, diffusion, image, lora, model, refine, upscale  # noqa: F401

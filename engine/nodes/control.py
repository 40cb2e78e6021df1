"""Control nodes: preprocess a control image, add a ControlNet / T2I-Adapter (`control`) or an IP-Adapter image
reference (`reference`) for a denoise. Chain several: each takes the list before it and adds one.

torch/diffusers are imported inside invoke() (engine.models.control), as for the other model nodes.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from ..graph.node import ControlList, Image, ModelValue, Node, ReferenceList
from ..preprocess import METHODS, flatten, preprocess

Fraction = Field(default=0.0, ge=0.0, le=1.0)


class Preprocess(Node):
    """Turn an image into a control image without downloaded weights: canny edges, scribble (XDoG) or line-art
    lines, invert (black lines on white -> white on black), blur, tile (resampled). `none` flattens it on black."""

    type = "preprocess"
    title = "Control preprocessor"
    image: Image
    method: Literal[METHODS] = "none"

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        rgb = preprocess(self.method, self.image.rgba)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        return self.Out(image=Image(rgba, self.image.x, self.image.y))


class _Ranged(Node):
    start: float = Fraction
    end: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _range(self):
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self


class ControlNode(_Ranged):
    """Steer a denoise with a control image through a ControlNet or T2I-Adapter (`control`, a registered model of
    the main model's base). strength scales its effect; start/end: the fraction of the steps it acts in. The image
    is used as given (preprocess it first; it is scaled to the denoise's size)."""

    type = "control"
    title = "Control (ControlNet / T2I-Adapter)"
    model: ModelValue
    image: Image
    previous: ControlList | None = None
    control: str = Field(min_length=1, max_length=256)
    strength: float = Field(default=1.0, ge=0.0, le=2.0)

    class Out(Node.Out):
        control: ControlList

    def invoke(self, ctx) -> Out:
        from ..models.control import Control

        kind, module = ctx.load_control(self.control, self.model)
        rgb = flatten(self.image.rgba, 0)
        item = Control(self.control, kind, module, rgb, float(self.strength), float(self.start), float(self.end))
        before = self.previous.items if self.previous is not None else ()
        return self.Out(control=ControlList(before + (item,)))


class ReferenceNode(_Ranged):
    """Steer a denoise with a reference image through an IP-Adapter (`adapter`, a registered ip_adapter of the
    main model's base; its CLIP image encoder, a clip_vision model, is found in the registry). strength is the
    adapter's scale; start/end: the fraction of the steps it acts in."""

    type = "reference"
    title = "Image reference (IP-Adapter)"
    model: ModelValue
    image: Image
    previous: ReferenceList | None = None
    adapter: str = Field(min_length=1, max_length=256)
    strength: float = Field(default=0.6, ge=0.0, le=2.0)

    class Out(Node.Out):
        reference: ReferenceList

    def invoke(self, ctx) -> Out:
        from ..models.control import Reference, image_embeds

        weights, encoder = ctx.load_reference(self.adapter, self.model)
        pos, neg = image_embeds(encoder, flatten(self.image.rgba, 255), weights.plus)
        item = Reference(self.adapter, weights, pos, neg, float(self.strength), float(self.start), float(self.end))
        before = self.previous.items if self.previous is not None else ()
        return self.Out(reference=ReferenceList(before + (item,)))

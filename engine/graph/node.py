"""The node base class, value types that travel along edges, and the registry of node types."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

# ---- values that only travel along edges (by reference) -----------------------------------------------------


@dataclass(eq=False)
class Image:
    """RGBA uint8 pixels (H, W, 4), straight alpha, with the position in the sender's document."""

    rgba: np.ndarray
    x: int = 0
    y: int = 0

    @property
    def w(self) -> int:
        return self.rgba.shape[1]

    @property
    def h(self) -> int:
        return self.rgba.shape[0]


@dataclass(eq=False)
class Mask:
    """uint8 (H, W): 255 = generate here, 0 = keep."""

    gray: np.ndarray
    x: int = 0
    y: int = 0


@dataclass(eq=False)
class Latents:
    tensor: Any
    family: str


@dataclass(eq=False)
class Noise:
    """The noise a denoise starts from, described rather than materialised: seed and size."""

    seed: int
    width: int
    height: int


@dataclass(eq=False)
class ModelValue:
    loaded: Any       # engine.models.loader.LoadedModel
    name: str
    sha256: str = ""


@dataclass(eq=False)
class ConditioningValue:
    cond: Any         # engine.diffusion.Conditioning
    model: str


@dataclass(eq=False)
class ControlList:
    """ControlNets / T2I-Adapters for a denoise, in order (engine.models.control.Control items)."""

    items: tuple = ()


@dataclass(eq=False)
class ReferenceList:
    """IP-Adapter references for a denoise, their images encoded (engine.models.control.Reference items)."""

    items: tuple = ()


LINK_TYPES = {Image: "image", Mask: "mask", Latents: "latents", Noise: "noise", ModelValue: "model",
              ConditioningValue: "conditioning", ControlList: "control", ReferenceList: "reference"}
SCALAR_TYPES = {int: "int", float: "float", str: "str", bool: "bool"}


def type_name(annotation: Any) -> str:
    """A short, comparable name for a field's type ('image', 'int', 'str|none', ...)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return type_name(inner[0])
    if annotation in LINK_TYPES:
        return LINK_TYPES[annotation]
    if annotation in SCALAR_TYPES:
        return SCALAR_TYPES[annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return "str"
    return getattr(annotation, "__name__", str(annotation)).lower()


def compatible(out_type: str, in_type: str) -> bool:
    return out_type == in_type or (out_type == "int" and in_type == "float")


# ---- nodes -------------------------------------------------------------------------------------------------
NODES: dict[str, type["Node"]] = {}


class Node(BaseModel):
    """Base of every node. Subclasses set `type`, `version`, declare fields and an `Out` class, and implement
    `invoke(ctx) -> Out`. Fields whose type is a link type must come from an edge."""

    # strict: a literal "20" is not silently taken for 20 steps
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, strict=True)

    type: ClassVar[str] = ""
    version: ClassVar[str] = "1.0.0"
    title: ClassVar[str] = ""

    class Out(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls.__dict__.get("type"):
            if cls.type in NODES:
                raise RuntimeError(f"node type {cls.type} registered twice")
            NODES[cls.type] = cls

    def invoke(self, ctx) -> "Node.Out":
        raise NotImplementedError

    @classmethod
    def inputs(cls) -> dict[str, tuple[str, bool]]:
        """field -> (type name, required)"""
        return {name: (type_name(f.annotation), f.is_required()) for name, f in cls.model_fields.items()}

    @classmethod
    def outputs(cls) -> dict[str, str]:
        return {name: type_name(f.annotation) for name, f in cls.Out.model_fields.items()}

    @classmethod
    def link_only(cls, field: str) -> bool:
        return cls.inputs()[field][0] in LINK_TYPES.values()


def _choices(annotation: Any) -> list | None:
    if typing.get_origin(annotation) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return None


def node_schema() -> dict:
    """Every node type with its version, inputs and outputs: what a graph editor (or a person) needs."""
    out = {}
    for name, cls in sorted(NODES.items()):
        inputs = {}
        for field, f in cls.model_fields.items():
            spec = {"type": type_name(f.annotation), "required": f.is_required()}
            if not f.is_required() and not cls.link_only(field):
                spec["default"] = f.default
            if f.description:
                spec["description"] = f.description
            choices = _choices(f.annotation)
            if choices:
                spec["choices"] = choices   # a Literal: the values a client may offer in a picker
            inputs[field] = spec
        out[name] = {"version": cls.version, "title": cls.title or name, "doc": (cls.__doc__ or "").strip(),
                     "inputs": inputs, "outputs": cls.outputs()}
    return out

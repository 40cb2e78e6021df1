"""A layer on the wire ({sha256, w, h, format, x, y}) and the check every op that takes layers runs before
queueing: each one is a blob the caller may read, with exactly the bytes its size and format imply."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from .aio import run_blocking
from .errors import BadRequest
from .opspec import Args
from .store.owners import owned


class Layer(Args):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    w: int = Field(ge=1, le=65536)
    h: int = Field(ge=1, le=65536)
    format: Literal["rgba8", "gray8"] = "rgba8"
    x: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    y: int = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
    name: str | None = Field(default=None, max_length=256)


class SteeringLayer(Args):
    """A model that steers diffusion with an image, over a range of the steps: the shape generate's `control`
    (ops/generate.ControlRef) and `reference` entries share."""

    image_is: ClassVar[str] = "image"   # how the refusal of a non-rgba8 image names it

    model: str = Field(min_length=1, max_length=256)
    image: Layer
    strength: float = Field(default=1.0, ge=0.0, le=2.0)
    start: float = Field(default=0.0, ge=0.0, le=1.0)
    end: float = Field(default=1.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self):
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        if self.image.format != "rgba8":
            raise ValueError(f"{self.image_is} must be an rgba8 layer")
        return self


class ReferenceLayer(SteeringLayer):
    """An IP-Adapter and its reference image: generate's `reference` entry, whole-image or in a region."""

    image_is: ClassVar[str] = "a reference image"

    strength: float = Field(default=0.6, ge=0.0, le=2.0)


def node_layer(nid: str, literals: dict) -> dict:
    """The layer of an image_input/mask_input node of a validated graph; bad_request naming the node if it is
    not one."""
    try:
        return Layer.model_validate(literals["layer"]).model_dump()
    except Exception as exc:
        raise BadRequest(f"node {nid!r}: layer: not a valid layer ({exc.__class__.__name__})",
                         details={"node": nid, "field": "layer"}) from None


def graph_layers(graph) -> list[dict]:
    """Every layer a validated graph reads: image_input/mask_input layers and regions nodes' masks."""
    out = []
    for nid, cls in graph.nodes.items():
        lits = graph.literals[nid]
        if cls.type in ("image_input", "mask_input"):
            out.append(node_layer(nid, lits))
        elif cls.type == "regions":
            for r in lits.get("regions") or []:   # each region's mask and its references' images
                out += [Layer.model_validate(lay).model_dump()
                        for lay in [r["mask"]] + [ref["image"] for ref in r.get("reference") or []]]
    return out


async def check_layers(ctx, layers: list[dict]):
    """Every referenced layer must be a blob the caller may read, with exactly the bytes its size implies.
    ctx: an OpContext."""
    if not layers:
        return
    app = ctx.app
    hashes = [lay["sha256"] for lay in layers]
    ok = await app.db.run(owned, ctx.conn.uid, hashes, ctx.conn.is_admin)
    for lay in layers:
        if lay["sha256"] not in ok:
            raise BadRequest(f"layer {lay['sha256'][:12]}… is not a blob you uploaded: blob.put it first",
                             details={"sha256": lay["sha256"]})
        try:
            size = await run_blocking(app.blobs.size, lay["sha256"])
        except FileNotFoundError:
            raise BadRequest(f"layer {lay['sha256'][:12]}… is missing on the engine",
                             details={"sha256": lay["sha256"]})
        want = lay["w"] * lay["h"] * (4 if lay.get("format", "rgba8") == "rgba8" else 1)
        if size != want:
            raise BadRequest(f"layer {lay['sha256'][:12]}… has {size} bytes but a {lay.get('format', 'rgba8')} "
                             f"{lay['w']}x{lay['h']} layer needs {want}", details={"sha256": lay["sha256"]})

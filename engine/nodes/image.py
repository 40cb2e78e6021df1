"""Image and mask nodes: inputs from the wire, crop, resize, feathered paste, mask grow/blur, outputs."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from PIL import Image as PILImage
from PIL import ImageFilter
from pydantic import Field

from ..graph.node import Image, Mask, Node

Coord = Field(default=0, ge=-(2 ** 20), le=2 ** 20)
Size = Field(ge=1, le=65536)


class ImageInput(Node):
    """An RGBA layer sent by the client: {sha256, w, h, format: rgba8, x, y} (the blob must be yours)."""

    type = "image_input"
    title = "Image"
    layer: dict

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        return self.Out(image=ctx.load_image(self.layer))


class MaskInput(Node):
    """A gray8 mask layer sent by the client (255 = generate here)."""

    type = "mask_input"
    title = "Mask"
    layer: dict

    class Out(Node.Out):
        mask: Mask

    def invoke(self, ctx) -> Out:
        return self.Out(mask=ctx.load_mask(self.layer))


class Crop(Node):
    """Cut a rectangle (in the image's own pixel coordinates); the result keeps its document position."""

    type = "crop"
    title = "Crop"
    image: Image
    x: int = Field(default=0, ge=0)
    y: int = Field(default=0, ge=0)
    width: int = Size
    height: int = Size

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        im = self.image
        rgba = _crop(ctx, im.rgba, self.x, self.y, self.width, self.height)
        return self.Out(image=Image(rgba, im.x + self.x, im.y + self.y))


def _crop(ctx, arr: np.ndarray, x: int, y: int, width: int, height: int) -> np.ndarray:
    h, w = arr.shape[:2]
    if x + width > w or y + height > h:
        raise ctx.error(f"crop {width}x{height}+{x}+{y} is outside the {w}x{h} input")
    return arr[y:y + height, x:x + width].copy()


class CropMask(Node):
    """Cut a rectangle out of a mask."""

    type = "crop_mask"
    title = "Crop mask"
    mask: Mask
    x: int = Field(default=0, ge=0)
    y: int = Field(default=0, ge=0)
    width: int = Size
    height: int = Size

    class Out(Node.Out):
        mask: Mask

    def invoke(self, ctx) -> Out:
        m = self.mask
        gray = _crop(ctx, m.gray, self.x, self.y, self.width, self.height)
        return self.Out(mask=Mask(gray, m.x + self.x, m.y + self.y))


def resize_rgba(rgba: np.ndarray, width: int, height: int) -> np.ndarray:
    if rgba.shape[1] == width and rgba.shape[0] == height:
        return rgba
    # Pillow resizes RGBA premultiplied, so transparent pixels' colours do not bleed into the result.
    return np.asarray(PILImage.fromarray(rgba, "RGBA").resize((width, height), PILImage.LANCZOS))


def resize_gray(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    if gray.shape[1] == width and gray.shape[0] == height:
        return gray
    return np.asarray(PILImage.fromarray(gray, "L").resize((width, height), PILImage.BILINEAR))


def region_image(rgba: np.ndarray, ix: int, iy: int, x: int, y: int, w: int, h: int, out_w: int,
                 out_h: int) -> np.ndarray:
    """The document rectangle (x, y, w, h) of an image whose top-left sits at (ix, iy), scaled to out_w x out_h:
    what a control image is for a generation of that region at that size. Parts of the rectangle the image does
    not cover are transparent."""
    region = np.zeros((h, w, rgba.shape[2]), np.uint8)
    ih, iw = rgba.shape[:2]
    left, top = max(x, ix), max(y, iy)
    right, bottom = min(x + w, ix + iw), min(y + h, iy + ih)
    if right > left and bottom > top:
        region[top - y:bottom - y, left - x:right - x] = rgba[top - iy:bottom - iy, left - ix:right - ix]
    return resize_rgba(region, out_w, out_h)


class Region(Node):
    """Cut a rectangle in document coordinates (x, y, width, height) out of an image placed in the document, and
    scale it to out_width x out_height: a control image for the region a generation covers. Uncovered parts are
    transparent."""

    type = "region"
    title = "Document region"
    image: Image
    x: int = Coord
    y: int = Coord
    width: int = Size
    height: int = Size
    out_width: int = Size
    out_height: int = Size

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        im = self.image
        rgba = region_image(im.rgba, im.x, im.y, self.x, self.y, self.width, self.height, self.out_width,
                            self.out_height)
        return self.Out(image=Image(rgba, self.x, self.y))


class Resize(Node):
    """Scale an image (Lanczos)."""

    type = "resize"
    title = "Resize"
    image: Image
    width: int = Size
    height: int = Size

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        im = self.image
        return self.Out(image=Image(resize_rgba(im.rgba, self.width, self.height), im.x, im.y))


class ResizeMask(Node):
    """Scale a mask (bilinear)."""

    type = "resize_mask"
    title = "Resize mask"
    mask: Mask
    width: int = Size
    height: int = Size

    class Out(Node.Out):
        mask: Mask

    def invoke(self, ctx) -> Out:
        m = self.mask
        return self.Out(mask=Mask(resize_gray(m.gray, self.width, self.height), m.x, m.y))


class MaskGrow(Node):
    """Grow (or with a negative amount, shrink) a mask by a number of pixels."""

    type = "mask_grow"
    title = "Grow mask"
    mask: Mask
    pixels: int = Field(default=8, ge=-256, le=256)

    class Out(Node.Out):
        mask: Mask

    def invoke(self, ctx) -> Out:
        m = self.mask
        if self.pixels == 0:
            return self.Out(mask=m)
        return self.Out(mask=Mask(grow_mask(m.gray, self.pixels), m.x, m.y))


def grow_mask(gray: np.ndarray, pixels: int) -> np.ndarray:
    """Grow (pixels > 0) or shrink (< 0) a uint8 mask by a square of side 2*|pixels|+1: the same result as PIL's
    Max/MinFilter, but in O(width*height) whatever the radius, in numpy loops that release the GIL (PIL's rank
    filter is O(pixels*radius^2) and holds the GIL, which froze the whole engine on a large radius)."""
    if pixels == 0:
        return gray
    # Growing the inverse shrinks: min(a) == 255 - max(255 - a).
    src = gray if pixels > 0 else 255 - gray
    # A radius past the image's longer side covers all of it already: bound the work by the image.
    r = min(abs(pixels), max(gray.shape))
    out = _window_max(_window_max(src, r, axis=1), r, axis=0)
    return out if pixels > 0 else 255 - out


def _window_max(a: np.ndarray, r: int, axis: int) -> np.ndarray:
    """max over a[i-r .. i+r] along axis, borders clipped (van Herk / Gil-Werman: block prefix and suffix maxima,
    three passes whatever r is)."""
    a = np.moveaxis(a, axis, -1)
    n, k = a.shape[-1], 2 * r + 1
    blocks = -(-(n + 2 * r) // k)
    # Zero padding is neutral for a max of uint8; it also stands for the clipped border.
    padded = np.zeros(a.shape[:-1] + (blocks * k,), a.dtype)
    padded[..., r:r + n] = a
    tiles = padded.reshape(a.shape[:-1] + (blocks, k))
    prefix = np.maximum.accumulate(tiles, axis=-1).reshape(padded.shape)
    suffix = np.maximum.accumulate(tiles[..., ::-1], axis=-1)[..., ::-1].reshape(padded.shape)
    out = np.maximum(suffix[..., :n], prefix[..., k - 1:k - 1 + n])
    return np.ascontiguousarray(np.moveaxis(out, -1, axis))


class MaskBlur(Node):
    """Gaussian-blur a mask."""

    type = "mask_blur"
    title = "Blur mask"
    mask: Mask
    radius: float = Field(default=4.0, ge=0.0, le=256.0)

    class Out(Node.Out):
        mask: Mask

    def invoke(self, ctx) -> Out:
        m = self.mask
        if self.radius == 0:
            return self.Out(mask=m)
        gray = np.asarray(PILImage.fromarray(m.gray, "L").filter(ImageFilter.GaussianBlur(self.radius)))
        return self.Out(mask=Mask(gray, m.x, m.y))


class MaskFromAlpha(Node):
    """A mask of the image's fully transparent pixels (what outpainting fills)."""

    type = "mask_from_alpha"
    title = "Mask from transparency"
    image: Image

    class Out(Node.Out):
        mask: Mask

    def invoke(self, ctx) -> Out:
        im = self.image
        return self.Out(mask=Mask(np.where(im.rgba[..., 3] == 0, 255, 0).astype(np.uint8), im.x, im.y))


def feathered_paste(base: np.ndarray, patch: np.ndarray, mask: np.ndarray, x: int, y: int,
                    feather: float) -> np.ndarray:
    """Blend patch onto base at (x, y) by mask, feathered inwards only: where mask is 0 the base pixels are
    returned bit for bit."""
    out = base.copy()
    h, w = patch.shape[:2]
    weight = mask.astype(np.float32) / 255.0
    if feather > 0:
        blurred = np.asarray(PILImage.fromarray(mask, "L").filter(ImageFilter.GaussianBlur(feather)))
        weight = np.minimum(weight, blurred.astype(np.float32) / 255.0)
    # Nothing to blend with where the base is fully transparent (outpainting): take the new pixels whole.
    weight[base[y:y + h, x:x + w, 3] == 0] = 1.0
    weight[mask == 0] = 0.0
    region = out[y:y + h, x:x + w].astype(np.float32)
    wgt = weight[..., None]
    region = region * (1.0 - wgt) + patch.astype(np.float32) * wgt
    blended = np.clip(np.rint(region), 0, 255).astype(np.uint8)
    keep = (mask == 0)[..., None]
    out[y:y + h, x:x + w] = np.where(keep, out[y:y + h, x:x + w], blended)
    return out


class Paste(Node):
    """Paste an image onto a base at (x, y) through a mask the patch's size, feathered inwards, so pixels
    outside the mask stay exactly as they were."""

    type = "paste"
    title = "Paste with mask"
    base: Image
    image: Image
    mask: Mask | None = None
    x: int = Field(default=0, ge=0)
    y: int = Field(default=0, ge=0)
    feather: float = Field(default=4.0, ge=0.0, le=256.0)

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        base, patch = self.base, self.image
        if self.x + patch.w > base.w or self.y + patch.h > base.h:
            raise ctx.error(f"a {patch.w}x{patch.h} image at {self.x},{self.y} does not fit the {base.w}x{base.h} base")
        gray = self.mask.gray if self.mask is not None else np.full((patch.h, patch.w), 255, np.uint8)
        if gray.shape != (patch.h, patch.w):
            raise ctx.error(f"mask is {gray.shape[1]}x{gray.shape[0]}, image is {patch.w}x{patch.h}")
        rgba = feathered_paste(base.rgba, patch.rgba, gray, self.x, self.y, self.feather)
        return self.Out(image=Image(rgba, base.x, base.y))


class Output(Node):
    """Return an image to the client as a result layer (named; positioned at the image's document x, y)."""

    type = "output"
    title = "Output"
    is_output: ClassVar[bool] = True
    image: Image
    name: str = Field(default="Paintbridge", max_length=256)
    seed: int | None = None

    class Out(Node.Out):
        pass

    def invoke(self, ctx) -> Out:
        ctx.add_result(self.image, self.name, self.seed)
        return self.Out()


class Place(Node):
    """Set where an image sits in the document (x, y of its top-left corner)."""

    type = "place"
    title = "Place"
    image: Image
    x: int = Coord
    y: int = Coord

    class Out(Node.Out):
        image: Image

    def invoke(self, ctx) -> Out:
        return self.Out(image=Image(self.image.rgba, self.x, self.y))

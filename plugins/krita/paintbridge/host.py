"""Everything that reads or writes Krita documents. Call only on Krita's main thread.

Krita gives and takes BGRA for RGBA/U8 documents; the Session (pixel_order="bgra") swaps to the wire's RGBA on
its worker thread, so nothing here converts pixels.
"""

from __future__ import annotations

from krita import Krita, Selection

from ._vendor.protocol.pixels import Pixels, context_region, mask_bounds

GROUP_NAME = "Paintbridge"


class CanvasError(Exception):
    """Something about the document that stops a request (shown to the person as is)."""


def active_document():
    doc = Krita.instance().activeDocument()
    if doc is None:
        raise CanvasError("open a document first")
    if doc.colorModel() != "RGBA" or doc.colorDepth() != "U8":
        raise CanvasError(f"Paintbridge works on 8-bit RGBA documents (this one is {doc.colorModel()} "
                          f"{doc.colorDepth()}): convert it in Image ▸ Convert Image Color Space")
    return doc


def document_key(doc) -> str:
    """How a document is named in requests (source.document) and gallery filters: its file, else its title."""
    return doc.fileName() or doc.name()


def selection_bounds(doc) -> tuple[int, int, int, int] | None:
    sel = doc.selection()
    if sel is None or sel.width() <= 0 or sel.height() <= 0:
        return None
    return sel.x(), sel.y(), sel.width(), sel.height()


def read_pixels(doc, x: int, y: int, w: int, h: int, source: str = "composite") -> Pixels:
    """BGRA pixels of the composite image or the active layer, with their document position."""
    if source == "layer":
        node = doc.activeNode()
        if node is None or node.type() not in ("paintlayer", "grouplayer", "filelayer", "vectorlayer"):
            raise CanvasError("select a pixel layer (or use the composite image)")
        data = bytes(node.pixelData(x, y, w, h))
    else:
        data = bytes(doc.pixelData(x, y, w, h))
    return Pixels(data, w, h, "rgba8", x, y)


def read_selection_mask(doc, x: int, y: int, w: int, h: int) -> Pixels:
    """The selection over a region as a gray8 mask (255 = generate here)."""
    sel = doc.selection()
    if sel is None:
        raise CanvasError("make a selection to inpaint")
    return Pixels(bytes(sel.pixelData(x, y, w, h)), w, h, "gray8", x, y)


def request_region(doc, mode: str) -> tuple[int, int, int, int]:
    """The part of the document a request needs: the selection (plus context for inpainting) or everything."""
    bounds = selection_bounds(doc)
    if mode == "inpaint":
        if bounds is None:
            raise CanvasError("make a selection to inpaint")
        mask = read_selection_mask(doc, *bounds)
        tight = mask_bounds(mask.data, mask.w, mask.h)
        if tight is None:
            raise CanvasError("the selection is empty")
        tx, ty, tw, th = tight
        x, y, w, h = context_region((bounds[0] + tx, bounds[1] + ty, tw, th), doc.width(), doc.height())
        return x, y, w, h
    if bounds is not None and mode in ("txt2img", "img2img", "upscale"):
        return bounds
    return 0, 0, doc.width(), doc.height()


def extend_canvas(doc, left: int, top: int, right: int, bottom: int):
    """Grow the canvas by these margins (Outpaint): the content stays where it was relative to the new edges,
    the new areas of paint layers are transparent, which is what outpaint fills. One undo step in Krita."""
    if left or top or right or bottom:
        doc.resizeImage(-left, -top, doc.width() + left + right, doc.height() + top + bottom)
        doc.waitForDone()
        doc.refreshProjection()


def workflow_region(doc) -> tuple[int, int, int, int]:
    """What a workflow's layer and mask parameters cover: the selection's bounds, else the whole document."""
    return selection_bounds(doc) or (0, 0, doc.width(), doc.height())


def read_workflow_input(doc, kind: str, source: str = "layer") -> Pixels:
    """A workflow's image parameter (kind "image": the active layer, or the composite image, as BGRA) or mask
    parameter (kind "mask": the selection as gray8), over workflow_region."""
    x, y, w, h = workflow_region(doc)
    if kind == "mask":
        if selection_bounds(doc) is None:
            raise CanvasError("make a selection for this mask")
        return read_selection_mask(doc, x, y, w, h)
    return read_pixels(doc, x, y, w, h, source)


def _group(doc):
    root = doc.rootNode()
    for child in root.childNodes():
        if child.type() == "grouplayer" and child.name() == GROUP_NAME:
            return child
    group = doc.createGroupLayer(GROUP_NAME)
    root.addChildNode(group, None)   # on top
    return group


def add_result_layer(doc, name: str, px: Pixels):
    """A new paint layer in the 'Paintbridge' group, at the position the engine returned."""
    group = _group(doc)
    layer = doc.createNode(name, "paintlayer")
    group.addChildNode(layer, None)
    layer.setPixelData(px.data, px.x, px.y, px.w, px.h)
    doc.refreshProjection()
    return layer


def replace_in_active_layer(doc, px: Pixels):
    node = doc.activeNode()
    if node is None or node.type() != "paintlayer":
        raise CanvasError("select the paint layer to replace into")
    node.setPixelData(px.data, px.x, px.y, px.w, px.h)
    doc.refreshProjection()
    return node


def new_document(name: str, px: Pixels):
    app = Krita.instance()
    doc = app.createDocument(px.w, px.h, name, "RGBA", "U8", "", 300.0)
    layer = doc.topLevelNodes()[0]   # its only layer; activeNode() is None until the document has a view
    layer.setName(name)
    layer.setPixelData(px.data, 0, 0, px.w, px.h)
    doc.refreshProjection()
    if app.activeWindow() is not None:
        app.activeWindow().addView(doc)
    return doc


def select_rect(doc, x: int, y: int, w: int, h: int):
    sel = Selection()
    sel.select(x, y, w, h, 255)
    doc.setSelection(sel)

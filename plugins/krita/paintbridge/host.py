"""Everything that reads or writes Krita documents. Call only on Krita's main thread.

Krita gives and takes BGRA for RGBA/U8 documents; the Session (pixel_order="bgra") swaps to the wire's RGBA on
its worker thread. Reading a layer for a request copies Krita's pixels on the main thread (pixelData, a
QByteArray) and returns a zero-argument callable that turns the copy into Pixels on the Session's worker thread,
so no 33 MB bytes() copy or conversion of a 4K layer runs on the UI thread (issue 15, K4).

Everything placed into a document is one undo step: a result layer (with the Paintbridge group when it is the first),
and Replace, which puts the result in a new layer directly over the active one, so one Ctrl+Z brings back what was
there (K1).
"""

from __future__ import annotations

import json

from krita import Krita, Selection
from PyQt5.QtCore import QByteArray, QUuid

from ._vendor.protocol.pixels import Pixels, alpha_of, clear_outside, context_region, mask_bounds

GROUP_NAME = "Paintbridge"
STORE = "paintbridge"     # the document annotation holding its controls, references and regions (steering.py)
PIXEL_LAYERS = ("paintlayer", "grouplayer", "filelayer", "vectorlayer", "clonelayer", "filllayer")


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


def is_open(doc) -> bool:
    """False once the document was closed. A closed document's wrapper answers rootNode() with None (not an
    error), or, closed through another wrapper, still with its nodes: so it must also be one of Krita's open
    documents (Document == compares the documents, not the wrappers)."""
    try:
        if doc is None or doc.rootNode() is None:
            return False
        return any(d == doc for d in Krita.instance().documents())
    except RuntimeError:   # the wrapped C++ object is gone
        return False


def document_key(doc) -> str:
    """How a document is named in requests (source.document) and gallery filters: its file, else its title."""
    return doc.fileName() or doc.name()


def document_name(doc) -> str:
    return doc.name() or doc.fileName() or "untitled"


def selection_bounds(doc) -> tuple[int, int, int, int] | None:
    sel = doc.selection()
    if sel is None or sel.width() <= 0 or sel.height() <= 0:
        return None
    return sel.x(), sel.y(), sel.width(), sel.height()


def _source_node(doc, source: str):
    if source != "layer":
        return doc
    node = doc.activeNode()
    if node is None or node.type() not in ("paintlayer", "grouplayer", "filelayer", "vectorlayer"):
        raise CanvasError("select a pixel layer (or use the composite image)")
    return node


def read_pixels(doc, x: int, y: int, w: int, h: int, source: str = "composite") -> Pixels:
    """BGRA pixels of the composite image or the active layer, with their document position (main thread:
    small reads and tests; requests use snapshot())."""
    return Pixels(bytes(_source_node(doc, source).pixelData(x, y, w, h)), w, h, "rgba8", x, y)


def snapshot(doc, x: int, y: int, w: int, h: int, source: str = "composite", keep=None):
    """A copy of the pixels now (Krita's own copy, on the main thread), as a callable that builds the BGRA
    Pixels on the calling (worker) thread. keep: (x, y, w, h) inside the region; everything else is made
    transparent there (Outpaint's new margins may hold a layer's default colour)."""
    raw = _source_node(doc, source).pixelData(x, y, w, h)

    def pixels() -> Pixels:
        data = bytes(raw)
        if keep is not None:
            data = clear_outside(data, w, h, keep)
        return Pixels(data, w, h, "rgba8", x, y)
    return pixels


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
        return context_region((bounds[0] + tx, bounds[1] + ty, tw, th), doc.width(), doc.height())
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


def read_workflow_input(doc, kind: str, source: str = "layer"):
    """A workflow's image parameter (kind "image": the active layer, or the composite image; a snapshot callable)
    or mask parameter (kind "mask": the selection as gray8 Pixels), over workflow_region."""
    x, y, w, h = workflow_region(doc)
    if kind == "mask":
        if selection_bounds(doc) is None:
            raise CanvasError("make a selection for this mask")
        return read_selection_mask(doc, x, y, w, h)
    return snapshot(doc, x, y, w, h, source)


def _group(doc):
    for child in doc.rootNode().childNodes():
        if child.type() == "grouplayer" and child.name() == GROUP_NAME:
            return child
    return None


def add_result_layer(doc, name: str, px: Pixels, mask: Pixels | None = None):
    """A new paint layer in the 'Paintbridge' group, at the position the engine returned: one undo step (the
    first one also brings the group: the layer goes into it before the group is added). mask (gray8, same
    region, covering the layer): pixels outside the selection are left transparent, so an inpaint layer covers only
    what was selected and never hides later edits of the layer below (issue 15, K6)."""
    data = px.data if mask is None else _masked(px, mask)
    layer = doc.createNode(name, "paintlayer")
    layer.setPixelData(data, px.x, px.y, px.w, px.h)   # not yet in the document: nothing to undo
    group = _group(doc)
    if group is None:
        group = doc.createGroupLayer(GROUP_NAME)
        group.addChildNode(layer, None)
        doc.rootNode().addChildNode(group, None)   # on top; one undo step for both
    else:
        group.addChildNode(layer, None)
    doc.waitForDone()
    doc.refreshProjection()
    return layer


def _masked(px: Pixels, mask: Pixels) -> bytes:
    """BGRA pixels with alpha 0 where the gray8 mask (in document coordinates, covering px) is 0. Big-integer
    AND over whole rows: C speed, no per-pixel Python loop on the main thread."""
    ox, oy = px.x - mask.x, px.y - mask.y
    if ox < 0 or oy < 0 or ox + px.w > mask.w or oy + px.h > mask.h:
        return px.data   # not inside the mask's region: keep the layer as the engine made it
    binary = bytes([0] + [255] * 255)
    keep = b"".join(mask.data[(oy + j) * mask.w + ox:(oy + j) * mask.w + ox + px.w] for j in range(px.h))
    keep = keep.translate(binary)
    out = bytearray(px.data)
    alpha = out[3::4]
    n = len(alpha)
    out[3::4] = (int.from_bytes(alpha, "big") & int.from_bytes(keep, "big")).to_bytes(n, "big")
    return bytes(out)


def replace_in_active_layer(doc, name: str, px: Pixels):
    """Replace: the result in a new paint layer directly over the active paint layer, so it covers that layer where
    it is opaque and stays under every layer that was above it. One undo step, like Apply. The active layer keeps
    its pixels underneath: Krita's scripting API puts no pixel write to an existing layer on the undo stack
    (setPixelData), and merging the new layer down would be a second step (the add, then the merge), so one
    Ctrl+Z would leave the result on screen."""
    node = doc.activeNode()
    if node is None or node.type() != "paintlayer":
        raise CanvasError("select the paint layer to replace into")
    layer = doc.createNode(name, "paintlayer")
    layer.setPixelData(px.data, px.x, px.y, px.w, px.h)   # not yet in the document: nothing to undo
    node.parentNode().addChildNode(layer, node)
    doc.waitForDone()
    doc.refreshProjection()
    return layer


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


# ---- what a document keeps for Paintbridge (steering.py): an annotation saved in the .kra, layers by uniqueId ----
def read_store(doc) -> dict:
    """The document's Paintbridge annotation as a dict ({} when it has none or it is not ours)."""
    try:
        if STORE not in doc.annotationTypes():
            return {}
        data = json.loads(bytes(doc.annotation(STORE)).decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RuntimeError):
        return {}
    return data if isinstance(data, dict) else {}


def write_store(doc, data: dict):
    """Saved with the document (.kra) the next time it is saved; small JSON, no pixels."""
    doc.setAnnotation(STORE, "Paintbridge controls, references and regions",
                      QByteArray(json.dumps(data, sort_keys=True).encode("utf-8")))


def node_id(node) -> str:
    """A layer's id that survives saving and reopening the document (Krita's uniqueId)."""
    return node.uniqueId().toString()


def find_node(doc, uid: str):
    """The document's layer with this id, or None (deleted, or another document's)."""
    try:
        return doc.nodeByUniqueID(QUuid(uid)) if uid else None
    except (RuntimeError, TypeError):
        return None


def active_layer(doc):
    """The active layer or group, for "add as control / region"."""
    node = doc.activeNode()
    if node is None or node.type() not in PIXEL_LAYERS:
        raise CanvasError("select a layer (or a group) first")
    return node


def is_shown(node) -> bool:
    """The layer and every group above it are visible (a hidden control or region is not sent)."""
    while node is not None and node.parentNode() is not None:   # the root is no layer the person can hide
        if not node.visible():
            return False
        node = node.parentNode()
    return True


def stack_order(doc) -> dict:
    """{layer id: position}, bottom of the layer stack first (a group before the layers inside it)."""
    order: dict = {}

    def walk(node):
        for child in node.childNodes():   # Krita lists children bottom first
            order[node_id(child)] = len(order)
            walk(child)
    walk(doc.rootNode())
    return order


def layer_rect(doc, node) -> tuple[int, int, int, int] | None:
    """The layer's bounds inside the document, or None when it is empty there."""
    b = node.bounds()
    x0, y0 = max(0, b.x()), max(0, b.y())
    x1, y1 = min(doc.width(), b.x() + b.width()), min(doc.height(), b.y() + b.height())
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def touches(node, x: int, y: int, w: int, h: int) -> bool:
    """The layer has pixels (bounds) in the rectangle: a region that does not touch the generated area is not
    sent (Inpaint, Live)."""
    b = node.bounds()
    return b.width() > 0 and b.height() > 0 and b.x() < x + w and x < b.x() + b.width() and \
        b.y() < y + h and y < b.y() + b.height()


def layer_snapshot(node, x: int, y: int, w: int, h: int):
    """A layer's pixels over a document rectangle (Krita's copy now), as a callable building BGRA Pixels on the
    worker thread: a control or reference image."""
    raw = node.pixelData(x, y, w, h)

    def pixels() -> Pixels:
        return Pixels(bytes(raw), w, h, "rgba8", x, y)
    return pixels


def alpha_snapshot(node, x: int, y: int, w: int, h: int):
    """A layer's alpha over a document rectangle as a callable building a gray8 mask on the worker thread
    (255 = covered): a region's mask. BGRA and RGBA keep alpha in the same byte."""
    raw = node.pixelData(x, y, w, h)

    def mask() -> Pixels:
        return Pixels(alpha_of(bytes(raw)), w, h, "gray8", x, y)
    return mask

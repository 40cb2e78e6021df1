# The plug-in's Gtk dialogs in the chroot's python3 under Xvfb (no GIMP process); prints "SMOKE " + JSON.
import json, os, sys, tempfile
sys.argv = ["paintbridge"]
sys.path.insert(0, "/root/.config/GIMP/3.0/plug-ins/paintbridge")
import paintbridge as pb
import panels
import gi
gi.require_version("Gtk", "3.0"); gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, Gtk
from protocol.pixels import Pixels
from protocol.gallery import GalleryBrowser
from protocol.updates import ImagesPage, Recalled, Reply
assert Gtk.init_check()[0], "no display"
OUT = {}
tmp = tempfile.mkdtemp()
pb.controller.config_dir = lambda: tmp

# -- Run workflow: widgets per field, values read back and checked, errors under their fields --
FOX = {"name": "Fox", "description": "txt2img", "params": [
    {"name": "prompt", "type": "str", "label": "Prompt", "default": "a red fox", "multiline": True},
    {"name": "steps", "type": "int", "min": 1, "max": 8, "step": 1, "default": 2},
    {"name": "cfg", "type": "float", "min": 0, "max": 20, "step": 0.5, "default": 7.0, "label": "Guidance"},
    {"name": "scheduler", "type": "str", "default": "euler", "choices": ["euler", "ddim"]},
    {"name": "tiled", "type": "bool", "default": False},
    {"name": "title", "type": "str", "default": "x"},
    {"name": "count", "type": "int", "default": None}]}
MASKED = {"name": "Masked", "params": [{"name": "source", "type": "image"}, {"name": "area", "type": "mask"}]}
layer = Pixels(bytes(4 * 6), 3, 2, "rgba8", 1, 1)
sources = {"active": layer, "selection": None}
dlg = panels.WorkflowDialog(Gtk, [MASKED, FOX], "Fox", {"steps": 5, "scheduler": "ddim"}, sources.get)
dlg.dialog.show_all()
OUT["widgets"] = [type(dlg.grid.get_child_at(1, 2 * i)).__name__ for i in range(len(dlg.rows))]
OUT["initial"] = {spec["name"]: getter() for spec, getter, _ in dlg.rows}
OUT["first_check"] = dlg.check()
OUT["errors_shown"] = {spec["name"]: label.get_text() for spec, _, label in dlg.rows if label.get_visible()}
rows = {spec["name"]: (spec, getter) for spec, getter, _ in dlg.rows}
spin = [c for c in dlg.grid.get_children() if isinstance(c, Gtk.SpinButton)]
for w in spin:
    if w.get_text() == "":
        w.set_text("3")          # the required count
OUT["second_check"] = dlg.check()
OUT["errors_after"] = {spec["name"]: label.get_text() for spec, _, label in dlg.rows if label.get_visible()}
dlg.combo.set_active(1)          # Masked (by name, after Fox): the form is rebuilt
OUT["masked_widgets"] = [spec["widget"] for spec, _, _ in dlg.rows]
OUT["masked_check"] = dlg.check()
OUT["masked_errors"] = {spec["name"]: label.get_text() for spec, _, label in dlg.rows if label.get_visible()}
dlg.dialog.destroy()

# -- Gallery: pages into the icon view (thumbnails as pixbufs), star, use settings, load more --
class FakeSession:
    def __init__(self): self.calls = []
    def list_images(self, **kw): self.calls.append(("list", kw))
    def recall(self, image, tag=None): self.calls.append(("recall", image))
    def call(self, op, args=None, tag=None): self.calls.append((op, args))
    def open_image(self, image, tag=None): self.calls.append(("open", image))
    def poll(self): return []
class FakeController:                     # what the dialog reads of the controller: its session and browser
    session = FakeSession()
    gallery = GalleryBrowser(session)
gal = panels.GalleryDialog(FakeController(), Gtk, GdkPixbuf, lambda up: ("", []), pb.use_settings)
gal.browser.reload()
gal.dialog.show_all()
thumb = Pixels(bytes((i * 7) % 256 for i in range(12 * 8 * 4)), 12, 8, "rgba8")
def summary(i, starred=False):
    return {"id": f"{i:016x}", "prompt": f"image {i}", "seed": i, "w": 64, "h": 64, "app": "krita",
            "starred": starred, "thumbnail": thumb}
gal._dispatch(ImagesPage(images=[summary(1), summary(2)], total=3, next_cursor="c1", tag=("gallery", 1)))
gal._dispatch(ImagesPage(images=[summary(9)], total=1, next_cursor=None, tag=("gallery", 0)))
OUT["rows"] = [(r[1], r[2]) for r in gal.store]
pix = gal.store[0][0]
OUT["pixbuf"] = [pix.get_width(), pix.get_height(), pix.get_has_alpha(), bytes(pix.get_pixels()[:8]) == thumb.data[:8]]
OUT["more_sensitive"] = gal.more.get_sensitive()
gal.view.select_path(Gtk.TreePath.new_from_indices([1]))
gal._on_response(gal.dialog, gal.STAR)
gal._dispatch(Reply(op="images.star", result={"starred": True}, tag=("star", f"{2:016x}")))
OUT["starred_caption"] = gal.store[1][1]
OUT["star_label"] = gal.star_button.get_label()
gal._on_response(gal.dialog, gal.RECALL)
gal._dispatch(Recalled(image=f"{2:016x}", params=None, values={"prompt": "image 2", "seed": 2, "steps": 3},
                       workflow=None, summary={}, tag=("recall", f"{2:016x}")))
OUT["status"] = gal.status.get_text()
OUT["settings"] = json.load(open(os.path.join(tmp, "settings.json")))
gal._dispatch(Recalled(image=f"{1:016x}", params=None, values={},
                       workflow=("Fox", {"steps": 4, "src": {"sha256": "x"}}), summary={}, tag=("recall", f"{1:016x}")))
OUT["wf_status"] = gal.status.get_text()
OUT["wf_recall"] = pb.settings.pending_workflow_recall(tmp)
gal.more.clicked()
OUT["calls"] = FakeController.session.calls
gal.dialog.destroy()

# -- the progress dialog of a running job: bar, live preview, Cancel; titled after its procedure --
prog = panels.ProgressDialog("_Inpaint Selection…")
OUT["progress_title"] = prog.dialog.get_title()
prog.show("Paintbridge: step 2 of 4", 0.5, Pixels(bytes((i * 3) % 256 for i in range(32 * 24 * 4)), 32, 24, "rgba8"))
shown = prog.preview.get_pixbuf()
OUT["progress"] = [prog.bar.get_fraction(), prog.label.get_text(), shown.get_width(), shown.get_height()]
prog._on_cancel()
prog.show("Paintbridge: step 3 of 4", 0.75)
OUT["cancel"] = [prog.cancel_requested, prog.label.get_text()]
prog.close()

# -- Sign In: a plain Gtk dialog, the password hidden (and never a procedure argument) --
sign = panels.SignInDialog("ws://127.0.0.1:1/v1/ws", "ana", True)
OUT["sign_in"] = [sign.dialog.get_title(), sign.password.get_visibility(), sign.user.get_text(),
                  sign.remember.get_active()]
sign.dialog.destroy()
OUT["titles"] = [panels.title(label) for label, _ in pb.LABELS.values()]
print("SMOKE " + json.dumps(OUT, default=str))

"""The plug-in's dialogs (widgets only): the procedures' forms (GimpUi.ProcedureDialog, with pickers for the
engine's models, LoRAs and upscalers), Sign In (a plain Gtk dialog: the password never becomes a procedure
argument, so GIMP's "Save Settings" cannot store it), the progress dialog of a running job, the gallery browser
and the Run workflow form. They draw what the controller holds and call it; no pixel work, no protocol calls."""

from __future__ import annotations

import sys

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("GdkPixbuf", "2.0")
from gi.repository import GdkPixbuf, GLib, GObject, Gtk  # noqa: E402

import workflow_form  # noqa: E402
from protocol.gallery import caption, tooltip  # noqa: E402
from protocol.updates import ErrorUpdate, ImagesPage, JobResult, Recalled, Reply, StateChanged  # noqa: E402


def title(label: str) -> str:
    """A window title from a menu label: "_Inpaint Selection…" -> "Paintbridge: Inpaint Selection"."""
    return "Paintbridge: " + label.replace("_", "").rstrip("…").strip()


def transient(window):
    """Keep a plug-in window above the GIMP window it was started from (no-op outside GIMP)."""
    try:
        gi.require_version("GimpUi", "3.0")
        from gi.repository import GimpUi
        GimpUi.window_set_transient(window)
    except Exception as exc:  # noqa: BLE001 - only outside a GIMP run (tests under Xvfb)
        sys.stderr.write(f"paintbridge: no transient parent ({type(exc).__name__})\n")


def readable_state(up) -> str:
    if up.state == "expired":
        return "Your sign-in expired: use Sign In again"
    if up.state == "signed_out":
        return "Signed out: use Sign In"
    return up.message or up.state


def pixbuf(GdkPixbuf_, px, fit=None):
    """An RGBA Pixels as a GdkPixbuf (None for None), scaled down to fit a fit×fit box when given."""
    if px is None:
        return None
    pix = GdkPixbuf_.Pixbuf.new_from_bytes(GLib.Bytes.new(px.data), GdkPixbuf_.Colorspace.RGB, True, 8,
                                           px.w, px.h, px.w * 4)
    if fit and max(px.w, px.h) != fit:
        s = fit / max(px.w, px.h)
        pix = pix.scale_simple(max(1, round(px.w * s)), max(1, round(px.h * s)), GdkPixbuf_.InterpType.BILINEAR)
    return pix


# ---- the procedures' forms -------------------------------------------------------------------------------------

def procedure_dialog(procedure, config, fields, label, pickers=None, note="", steer=None):
    """GIMP's dialog for a procedure's arguments, titled after it. pickers: {argument: [names]} turns a text
    argument into a drop-down of the engine's names (the text stays editable). note: a line above the form
    (who is signed in, the size Generate renders at). steer: the control/reference rows (SteerRows) below the
    form. True when the person pressed OK."""
    gi.require_version("GimpUi", "3.0")
    from gi.repository import GimpUi
    GimpUi.init("paintbridge")
    dialog = GimpUi.ProcedureDialog(procedure=procedure, config=config, title=title(label))
    names = list(fields)
    if note:
        dialog.get_label("paintbridge-note", note, False, False)
        names.insert(0, "paintbridge-note")
    dialog.fill(names)
    for prop, choices in (pickers or {}).items():
        if prop in fields:
            try:
                _picker(dialog, config, prop, choices)
            except Exception as exc:  # noqa: BLE001 - the text field stays: the form still works
                sys.stderr.write(f"paintbridge: no picker for {prop} ({type(exc).__name__}: {exc})\n")
    if steer:
        rows = SteerRows(config, steer)
        dialog.get_content_area().pack_end(rows.widget, False, False, 0)
        rows.widget.show_all()
    ok = dialog.run()
    dialog.destroy()
    return ok


def _picker(dialog, config, prop, choices):
    """Put a combo box of choices (editable) where the argument's text entry was; it writes the config."""
    widget = dialog.get_widget(prop, GObject.TYPE_NONE)
    parent = widget.get_parent() if widget is not None else None
    if not isinstance(parent, Gtk.Box):
        return
    spec = config.find_property(prop)
    combo = Gtk.ComboBoxText.new_with_entry()
    for name in choices:
        combo.append_text(name)
    combo.get_child().set_text(config.get_property(prop) or "")
    combo.get_child().connect("changed", lambda e: config.set_property(prop, e.get_text()))
    row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
    row.pack_start(Gtk.Label(label=spec.get_nick().replace("_", "") if spec else prop, xalign=0.0), False, False, 0)
    row.pack_start(combo, True, True, 0)
    position = parent.child_get_property(widget, "position")
    parent.pack_start(row, False, False, 0)
    parent.reorder_child(row, position)
    widget.set_no_show_all(True)
    widget.hide()
    row.show_all()


class SteerRows:
    """Control and reference layers, one row per slot (paintbridge.STEER_SLOTS): layer, model, preprocess
    (controls), strength, start, end. The widgets write the procedure's SLOT-* arguments, so the dialog's config
    is all a run reads (scripts set the same arguments). Picking a model fills its preset (models.list's
    `preset`); -1 in a number means the preset of the model the run picks."""

    COLUMNS = ("Layer", "Model", "Preprocess", "Strength", "Start", "End")

    def __init__(self, config, steer):
        self.config, self.steer = config, steer
        self.widget = Gtk.Expander(label="Control and reference layers")
        grid = Gtk.Grid(row_spacing=4, column_spacing=6, border_width=6)
        for col, text in enumerate(self.COLUMNS, 1):
            grid.attach(Gtk.Label(label=text, xalign=0.0), col, 0, 1, 1)
        self.rows = {}
        used = False
        for row, (slot, label, kind) in enumerate(steer["slots"], 1):
            grid.attach(Gtk.Label(label=label, xalign=0.0), 0, row, 1, 1)
            w = self.rows[slot] = {}
            layer = config.get_property(f"{slot}-layer")
            if layer is not None and layer.get_id() not in [lid for lid, _ in steer["layers"]]:
                layer = None    # a last value from another image
                config.set_property(f"{slot}-layer", None)
            used = used or layer is not None
            w["layer"] = combo = Gtk.ComboBoxText()
            combo.append("0", "(none)")
            for lid, name in steer["layers"]:
                combo.append(str(lid), name)
            combo.set_active_id(str(layer.get_id()) if layer is not None else "0")
            combo.connect("changed", lambda c, slot=slot: self._layer(slot, c.get_active_id()))
            grid.attach(combo, 1, row, 1, 1)
            w["model"] = model = Gtk.ComboBoxText.new_with_entry()
            for name in [""] + steer["models"][kind]:
                model.append_text(name)
            model.get_child().set_text(config.get_property(f"{slot}-model") or "")
            model.get_child().set_placeholder_text("the first that fits")
            model.get_child().connect("changed", lambda e, slot=slot: self._model(slot, e.get_text()))
            grid.attach(model, 2, row, 1, 1)
            if kind == "control":
                w["preprocess"] = pre = Gtk.ComboBoxText()
                for name in [""] + steer["preprocessors"]:
                    pre.append(name or "_", name or "preset")   # "_": Gtk ids are not empty
                pre.set_active_id(config.get_property(f"{slot}-preprocess") or "_")
                pre.connect("changed", lambda c, slot=slot: config.set_property(
                    f"{slot}-preprocess", (c.get_active_id() or "_").strip("_")))
                grid.attach(pre, 3, row, 1, 1)
            for col, name, hi in ((4, "strength", 2.0), (5, "start", 1.0), (6, "end", 1.0)):
                adj = Gtk.Adjustment(value=config.get_property(f"{slot}-{name}"), lower=-1.0, upper=hi,
                                     step_increment=0.05, page_increment=0.1, page_size=0)
                spin = w[name] = Gtk.SpinButton(adjustment=adj, climb_rate=0.05, digits=2)
                spin.set_tooltip_text("-1: the model's preset")
                spin.connect("value-changed", lambda s, slot=slot, name=name: config.set_property(
                    f"{slot}-{name}", s.get_value()))
                grid.attach(spin, col, row, 1, 1)
        self.widget.add(grid)
        self.widget.set_expanded(used)

    def _layer(self, slot, lid):
        gi.require_version("Gimp", "3.0")
        from gi.repository import Gimp
        layer = Gimp.Layer.get_by_id(int(lid)) if lid and lid != "0" else None
        self.config.set_property(f"{slot}-layer", layer)

    def _model(self, slot, name):
        self.config.set_property(f"{slot}-model", name)
        preset = self.steer["presets"].get(name.strip())
        if not preset:
            return
        w = self.rows[slot]
        for key in ("strength", "start", "end"):
            if isinstance(preset.get(key), (int, float)):
                w[key].set_value(preset[key])
        if "preprocess" in w and preset.get("preprocess"):
            w["preprocess"].set_active_id(preset["preprocess"])


class LiveWindow:
    """Live mode's window (live.GimpLive does the work): prompt, strength, preset, Start/Stop, Apply, what live
    mode is doing, and the newest result. Not modal: GIMP stays usable while it is open. Closing it stops live
    mode and waits until the engine has ended its live jobs."""

    START, APPLY = 1, 2

    def __init__(self, live, presets, models=()):
        self.live, self.loop = live, None
        try:   # GIMP's theme and icons, as its own dialogs have them
            gi.require_version("GimpUi", "3.0")
            from gi.repository import GimpUi
            GimpUi.init("paintbridge")
        except Exception as exc:  # noqa: BLE001 - only outside a GIMP run
            sys.stderr.write(f"paintbridge: no GIMP theme ({type(exc).__name__})\n")
        d = self.dialog = Gtk.Dialog(title="Paintbridge: Live")
        d.set_default_size(420, -1)
        transient(d)
        d.set_modal(False)
        self.start_button = d.add_button("_Start", self.START)
        d.add_button("_Apply as layer", self.APPLY)
        d.add_button("_Close", Gtk.ResponseType.CLOSE)
        box = d.get_content_area()
        box.set_spacing(6)
        box.set_border_width(10)
        grid = Gtk.Grid(row_spacing=4, column_spacing=8)
        self.prompt = Gtk.Entry(text=live.prompt)
        self.prompt.set_hexpand(True)
        self.strength = Gtk.SpinButton(adjustment=Gtk.Adjustment(value=live.strength, lower=0.0, upper=1.0,
                                                                 step_increment=0.05, page_increment=0.1,
                                                                 page_size=0), climb_rate=0.05, digits=2)
        self.preset = Gtk.ComboBoxText()
        for name in presets:
            self.preset.append(name or "_", name or "the model's own sampling")
        self.preset.set_active_id(live.preset if live.preset in presets and live.preset else "_")
        self.model = Gtk.ComboBoxText()
        for name in list(models) or [live.model]:
            self.model.append(name, name)
        self.model.set_active_id(live.model)
        for i, (text, widget) in enumerate((("Prompt", self.prompt), ("Strength", self.strength),
                                            ("Preset", self.preset), ("Model", self.model))):
            grid.attach(Gtk.Label(label=text, xalign=1.0), 0, i, 1, 1)
            grid.attach(widget, 1, i, 1, 1)
        box.pack_start(grid, False, False, 0)
        self.status = Gtk.Label(label="Live: off", xalign=0.0)
        self.status.set_line_wrap(True)
        self.spinner = Gtk.Spinner()
        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        row.pack_start(self.spinner, False, False, 0)
        row.pack_start(self.status, True, True, 0)
        box.pack_start(row, False, False, 0)
        self.preview = Gtk.Image()
        box.pack_start(self.preview, True, True, 0)
        for w, signal in ((self.prompt, "changed"), (self.strength, "value-changed"), (self.preset, "changed"),
                          (self.model, "changed")):
            w.connect(signal, lambda *a: self._settings())
        d.connect("response", self._on_response)
        d.connect("delete-event", lambda *a: self._close() or True)
        self._shown_job = None

    def run(self):
        self.dialog.show_all()
        self.loop = GLib.MainLoop()
        GLib.timeout_add(50, self._tick)
        self._draw()
        self.loop.run()
        self.dialog.destroy()
        lv = self.live.live
        return {"model": self.live.model, "sent": lv.sent, "superseded": lv.superseded, "changes": self.live.changes_seen,
                "applied": self.live.applied}

    def _settings(self):
        self.live.set_settings(self.prompt.get_text(), self.strength.get_value(),
                               (self.preset.get_active_id() or "_").strip("_"), self.model.get_active_id())

    def _tick(self):
        if self.loop is None or not self.loop.is_running():
            return False
        try:
            if self.live.step():
                self._draw()
        except Exception as exc:  # noqa: BLE001 - keep the window; say what went wrong and pause
            self.live.live.paused = f"{type(exc).__name__}: {exc}"
            self._draw()
        return True

    def _on_response(self, dialog, response):
        if response == self.START:
            if self.live.live.on:
                self.live.stop()
            else:
                self._settings()
                try:
                    self.live.start()
                except Exception as exc:  # noqa: BLE001 - the image was closed
                    self.status.set_text(str(exc))
        elif response == self.APPLY:
            placed = self.live.apply()
            self.status.set_text(f"Added “{placed[0]['name']}”" if placed else "No result to apply yet")
            return
        else:
            self._close()
            return
        self._draw()

    def _close(self):
        self.status.set_text("Stopping…")
        self.live.stop()
        self.live.settle()
        if self.loop is not None:
            self.loop.quit()

    def _draw(self):
        lv = self.live.live
        self.start_button.set_label("_Stop" if lv.on else "_Start")
        self.status.set_text(lv.describe())
        if lv.busy:
            self.spinner.start()
        else:
            self.spinner.stop()
        self.dialog.set_response_sensitive(self.APPLY, bool(lv.result))
        shown = lv.preview or (lv.result[0].pixels if lv.result else None)
        if shown is not None:
            self.preview.set_from_pixbuf(pixbuf(GdkPixbuf, shown, fit=256))


class SignInDialog:
    """Server, user name, password, remember me: plain Gtk, so nothing here is a procedure argument."""

    def __init__(self, url, username, remember, message=""):
        d = self.dialog = Gtk.Dialog(title="Paintbridge: Sign In")
        transient(d)
        d.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        d.add_button("_Sign In", Gtk.ResponseType.OK)
        d.set_default_response(Gtk.ResponseType.OK)
        grid = Gtk.Grid(row_spacing=6, column_spacing=8, border_width=12)
        self.url, self.user, self.password = Gtk.Entry(text=url), Gtk.Entry(text=username), Gtk.Entry()
        self.password.set_visibility(False)
        self.password.set_input_purpose(Gtk.InputPurpose.PASSWORD)
        for i, (text, entry) in enumerate((("Server _URL", self.url), ("User _name", self.user),
                                           ("_Password", self.password))):
            label = Gtk.Label.new_with_mnemonic(text)
            label.set_mnemonic_widget(entry)
            label.set_xalign(1.0)
            entry.set_hexpand(True)
            entry.set_activates_default(True)
            grid.attach(label, 0, i, 1, 1)
            grid.attach(entry, 1, i, 1, 1)
        self.remember = Gtk.CheckButton.new_with_mnemonic("Re_member me")
        self.remember.set_active(remember)
        grid.attach(self.remember, 1, 3, 1, 1)
        self.message = Gtk.Label(label=message, xalign=0.0)
        self.message.set_line_wrap(True)
        grid.attach(self.message, 0, 4, 2, 1)
        d.get_content_area().pack_start(grid, True, True, 0)

    def run(self):
        """(url, username, password, remember) or None when canceled."""
        self.dialog.show_all()
        (self.password if self.user.get_text() else self.user).grab_focus()
        try:
            if self.dialog.run() != Gtk.ResponseType.OK:
                return None
            return (self.url.get_text().strip(), self.user.get_text().strip(), self.password.get_text(),
                    self.remember.get_active())
        finally:
            self.dialog.destroy()


class ProgressDialog:
    """A running job: what it is doing (queued, loading the model, step n of m), its live preview and Cancel.
    Kept above the image window it was started from."""

    def __init__(self, label):
        self.cancel_requested = False
        d = self.dialog = Gtk.Dialog(title=title(label))
        transient(d)
        d.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        box = d.get_content_area()
        box.set_spacing(6)
        box.set_border_width(12)
        self.label = Gtk.Label(label="sending…")
        self.bar = Gtk.ProgressBar()
        self.preview = Gtk.Image()   # the job's live preview, once steps report one
        box.pack_start(self.label, False, False, 0)
        box.pack_start(self.bar, False, False, 0)
        box.pack_start(self.preview, False, False, 0)
        d.connect("response", self._on_cancel)
        d.connect("delete-event", lambda *a: self._on_cancel() or True)
        d.show_all()

    def show(self, text, fraction=None, preview=None):
        if self.dialog is None:
            return
        if not self.cancel_requested:
            self.label.set_text(text)
        if fraction is None:
            self.bar.pulse()
        else:
            self.bar.set_fraction(fraction)
        if preview is not None:
            self.preview.set_from_pixbuf(pixbuf(GdkPixbuf, preview, fit=192))

    def _on_cancel(self, *args):
        self.cancel_requested = True
        if self.dialog is not None:
            self.label.set_text("Canceling…")

    def close(self):
        if self.dialog is not None:
            self.dialog.destroy()
            self.dialog = None


def _markup_error(label, text):
    label.set_markup(f'<span foreground="#c01c28">{GLib.markup_escape_text(text)}</span>')


# ---- Open from gallery ---------------------------------------------------------------------------------------

class GalleryDialog:
    """The gallery browser. Runs on GIMP's main thread: the controller's GalleryBrowser (protocol.gallery) keeps
    the pages; a GLib timeout drains the controller's updates into the view (thumbnails become GdkPixbufs here).
    insert(JobResult) places an opened image and returns what to say; use_settings(Recalled) stores its values
    for the next Generate/Refine/Inpaint (or Run workflow) dialog and returns what to say."""

    STAR, RECALL, INSERT = 1, 2, 3

    def __init__(self, ctl, Gtk, GdkPixbuf, insert, use_settings):
        self.ctl, self.Gtk, self.GdkPixbuf = ctl, Gtk, GdkPixbuf
        self.insert_result, self.use_settings = insert, use_settings
        self.browser = ctl.gallery
        self.inserted, self.recalled = [], None
        self.loop = None

        d = self.dialog = Gtk.Dialog(title="Paintbridge: Open from Gallery")
        transient(d)
        d.set_default_size(760, 580)
        self.star_button = d.add_button("_Star", self.STAR)
        d.add_button("Use se_ttings", self.RECALL)
        d.add_button("_Insert as layer", self.INSERT)
        d.add_button("_Close", Gtk.ResponseType.CLOSE)
        box = d.get_content_area()
        box.set_spacing(6)
        box.set_border_width(8)

        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self.search = Gtk.SearchEntry()
        self.search.set_placeholder_text("Words in the prompt")
        self.search.set_hexpand(True)
        self.search.connect("search-changed", lambda w: self._reload())
        self.starred = Gtk.CheckButton(label="Starred _only", use_underline=True)
        self.starred.connect("toggled", lambda w: self._reload())
        row.pack_start(self.search, True, True, 0)
        row.pack_start(self.starred, False, False, 0)
        box.pack_start(row, False, False, 0)

        # pixbuf, caption, id, tooltip
        self.store = Gtk.ListStore(GdkPixbuf.Pixbuf, str, str, str)
        view = self.view = Gtk.IconView(model=self.store)
        view.set_pixbuf_column(0)
        view.set_text_column(1)
        view.set_tooltip_column(3)
        view.set_item_width(self.browser.thumb_size + 24)
        view.set_selection_mode(Gtk.SelectionMode.SINGLE)
        view.connect("item-activated", lambda v, path: self._insert())
        view.connect("selection-changed", lambda v: self._sensitivity())
        scroll = Gtk.ScrolledWindow()
        scroll.set_policy(Gtk.PolicyType.NEVER, Gtk.PolicyType.AUTOMATIC)
        scroll.set_vexpand(True)
        scroll.add(view)
        box.pack_start(scroll, True, True, 0)

        row = Gtk.Box(orientation=Gtk.Orientation.HORIZONTAL, spacing=6)
        self.status = Gtk.Label(label="Loading…", xalign=0.0)
        self.status.set_line_wrap(True)
        self.more = Gtk.Button.new_with_mnemonic("Load _more")
        self.more.connect("clicked", lambda b: self.browser.load_more() and self._sensitivity())
        row.pack_start(self.status, True, True, 0)
        row.pack_start(self.more, False, False, 0)
        box.pack_start(row, False, False, 0)
        d.connect("response", self._on_response)

    # -- running --
    def run(self):
        self.browser.reload()
        self.dialog.show_all()
        self._sensitivity()
        self.loop = GLib.MainLoop()
        GLib.timeout_add(40, self._tick)
        self.loop.run()
        self.dialog.destroy()
        return {"inserted": self.inserted, "recalled": self.recalled}

    def _tick(self):
        if self.loop is None or not self.loop.is_running():
            return False
        for up in self.ctl.session.poll():
            try:
                self._dispatch(up)
            except Exception as exc:  # keep the dialog alive; say what went wrong
                self._say(f"{type(exc).__name__}: {exc}", error=True)
        return True

    def _on_response(self, dialog, response):
        if response == self.INSERT:
            self._insert()
        elif response == self.RECALL:
            image_id = self._selected()
            if image_id:
                self.ctl.session.recall(image_id, tag=("recall", image_id))
                self._say("Fetching its settings…")
        elif response == self.STAR:
            item = self.browser.find(self._selected() or "")
            if item:
                self.browser.star(item["id"], not item.get("starred"))
        else:   # Close, Escape, the window's close button
            self.loop.quit()
        self._sensitivity()

    # -- actions --
    def _selected(self):
        paths = self.view.get_selected_items()
        return self.store[paths[0]][2] if paths else None

    def _insert(self):
        image_id = self._selected()
        if image_id:
            self.ctl.session.open_image(image_id, tag=("open", image_id))
            self._say("Downloading…")

    def _reload(self):
        self.store.clear()
        self.browser.reload(query=self.search.get_text(), starred_only=self.starred.get_active())
        self._say(self.browser.status())
        self._sensitivity()

    def _sensitivity(self):
        chosen = self._selected() is not None
        for resp in (self.STAR, self.RECALL, self.INSERT):
            self.dialog.set_response_sensitive(resp, chosen)
        item = self.browser.find(self._selected() or "")
        self.star_button.set_label("Un_star" if item and item.get("starred") else "_Star")
        self.more.set_sensitive(self.browser.has_more and not self.browser.loading)

    def _say(self, text, error=False):
        self.status.set_markup(f'<span foreground="#c01c28">{GLib.markup_escape_text(text)}</span>' if error
                               else GLib.markup_escape_text(text))

    def _pixbuf(self, px):
        return pixbuf(self.GdkPixbuf, px)

    def _dispatch(self, up):
        if isinstance(up, ImagesPage):
            new = self.browser.accept(up)
            if new is None:
                return
            for it in new:
                self.store.append([self._pixbuf(it.get("thumbnail")), caption(it), it["id"], tooltip(it)])
            self._say(self.browser.status())
        elif isinstance(up, JobResult) and up.image:
            text, placed = self.insert_result(up)
            self.inserted.extend(placed)
            self._say(text, error=not placed)
        elif isinstance(up, Recalled):
            text, ok = self.use_settings(up)
            if ok:
                self.recalled = up.image
            self._say(text, error=not ok)
        elif isinstance(up, Reply):
            if self.browser.replied(up):
                image_id = up.tag[1]
                item = self.browser.find(image_id)
                for row in self.store:
                    if row[2] == image_id and item is not None:
                        row[1] = caption(item)
                self._say("Starred" if item and item.get("starred") else "Unstarred")
        elif isinstance(up, ErrorUpdate):
            self.browser.failed(up)
            self.browser.loading = False
            self._say(up.message or "error", error=True)
        elif isinstance(up, StateChanged) and up.state in ("signed_out", "expired", "disconnected"):
            self._say(readable_state(up), error=True)
        self._sensitivity()


# ---- Run workflow ----------------------------------------------------------------------------------------------

class WorkflowDialog:
    """A combo of the person's workflows and a native form per workflow (specs from workflow_form.form_specs).
    Run checks the form with workflow_form.prepare; errors show under their fields and nothing is sent."""

    def __init__(self, Gtk, workflows, last_name, last_values, read):
        self.Gtk, self.pbw, self.read = Gtk, workflow_form, read
        self.workflows = sorted(workflows, key=lambda w: w.get("name", ""))
        self.last_name, self.last_values = last_name, last_values
        self.form, self.rows = [], []   # rows: (spec, getter, error label)

        d = self.dialog = Gtk.Dialog(title="Paintbridge: Run Workflow")
        transient(d)
        d.set_default_size(460, -1)
        d.add_button("_Cancel", Gtk.ResponseType.CANCEL)
        d.add_button("_Run", Gtk.ResponseType.OK)
        d.set_default_response(Gtk.ResponseType.OK)
        box = d.get_content_area()
        box.set_spacing(6)
        box.set_border_width(10)
        self.combo = Gtk.ComboBoxText()
        for wf in self.workflows:
            self.combo.append_text(wf["name"])
        box.pack_start(self.combo, False, False, 0)
        self.description = Gtk.Label(xalign=0.0)
        self.description.set_line_wrap(True)
        box.pack_start(self.description, False, False, 0)
        self.grid = None
        self.box = box
        self.message = Gtk.Label(xalign=0.0)
        self.message.set_line_wrap(True)
        box.pack_end(self.message, False, False, 0)
        self.combo.connect("changed", lambda c: self._build())
        names = [w["name"] for w in self.workflows]
        self.combo.set_active(names.index(last_name) if last_name in names else 0)

    def _workflow(self):
        i = self.combo.get_active()
        return self.workflows[i] if i >= 0 else None

    def _build(self):
        Gtk = self.Gtk
        if self.grid is not None:
            self.grid.destroy()
        wf = self._workflow()
        self.description.set_text((wf or {}).get("description") or "")
        initial = self.last_values if wf and wf["name"] == self.last_name else {}
        self.form, specs = self.pbw.form_specs(wf or {}, initial)
        grid = self.grid = Gtk.Grid(row_spacing=4, column_spacing=8)
        self.rows = []
        for i, spec in enumerate(specs):
            widget, getter = self._widget(spec)
            widget.set_tooltip_text(spec["tooltip"] or None)
            label = Gtk.Label(label=spec["label"] + (" *" if spec["required"] else ""), xalign=1.0, yalign=0.0)
            error = Gtk.Label(xalign=0.0)
            error.set_line_wrap(True)
            error.set_no_show_all(True)
            if spec["widget"] != "check":
                grid.attach(label, 0, 2 * i, 1, 1)
            grid.attach(widget, 1, 2 * i, 1, 1)
            grid.attach(error, 1, 2 * i + 1, 1, 1)
            self.rows.append((spec, getter, error))
        if not specs:
            grid.attach(Gtk.Label(label="This workflow has no parameters."), 0, 0, 2, 1)
        self.box.pack_start(grid, True, True, 0)
        grid.show_all()
        self.message.set_text("")

    def _widget(self, spec):
        """Gtk widget for a spec, and a getter giving its raw value for workflow_form.prepare."""
        Gtk, kind = self.Gtk, spec["widget"]
        if kind == "choice":
            w = Gtk.ComboBoxText()
            for item in spec["items"]:
                w.append_text(item)
            w.set_active(spec["active"])
            return w, lambda: spec["values"][w.get_active()] if w.get_active() >= 0 else None
        if kind in ("int", "float"):
            value = spec["value"]
            start = min(max(value if value is not None else max(spec["min"], min(0, spec["max"])), spec["min"]),
                        spec["max"])
            adj = Gtk.Adjustment(value=start, lower=spec["min"], upper=spec["max"],
                                 step_increment=spec["step"], page_increment=spec["page"], page_size=0)
            w = Gtk.SpinButton(adjustment=adj, climb_rate=spec["step"], digits=spec["digits"])
            w.set_hexpand(True)
            if value is None:
                w.set_text("")      # required, no default: empty until the person types a value

            def get():
                if not w.get_text().strip():
                    return None
                w.update()          # the typed text -> the value (locale-aware), clamped to the bounds
                v = w.get_value()
                return int(round(v)) if kind == "int" else v
            return w, get
        if kind == "text":
            w = Gtk.Entry()
            w.set_text(spec["value"])
            w.set_hexpand(True)
            w.set_activates_default(True)
            return w, w.get_text
        if kind == "textarea":
            view = Gtk.TextView()
            view.set_wrap_mode(Gtk.WrapMode.WORD_CHAR)
            view.get_buffer().set_text(spec["value"])
            w = Gtk.ScrolledWindow()
            w.set_min_content_height(72)
            w.set_hexpand(True)
            w.set_shadow_type(Gtk.ShadowType.IN)
            w.add(view)

            def get():
                buf = view.get_buffer()
                return buf.get_text(buf.get_start_iter(), buf.get_end_iter(), False)
            return w, get
        if kind == "check":
            w = Gtk.CheckButton(label=spec["label"])
            w.set_active(spec["value"])
            return w, w.get_active
        # layer / selection: what will be sent, read when Run is pressed
        w = Gtk.Label(label=spec["text"], xalign=0.0)
        return w, lambda: spec["source"]

    def run(self):
        """(workflow name, values for workflows.run, raw widget values) or None when canceled."""
        self.dialog.show_all()
        try:
            while True:
                if self.dialog.run() != self.Gtk.ResponseType.OK:
                    return None
                chosen = self.check()
                if chosen is not None:
                    return chosen
        finally:
            self.dialog.destroy()

    def check(self):
        """Read the widgets and check them: the run's arguments, or None with the errors shown under their fields
        (nothing is sent then)."""
        wf = self._workflow()
        if wf is None:
            return None
        raw = {spec["name"]: get() for spec, get, _ in self.rows}
        values, errors = self.pbw.prepare(self.form, raw, self.read)
        for spec, _, label in self.rows:
            msg = errors.get(spec["name"])
            if msg:
                label.set_markup(f'<span foreground="#c01c28">{GLib.markup_escape_text(msg)}</span>')
                label.show()
            else:
                label.hide()
        if errors:
            self.message.set_text("Fix the marked fields; nothing was sent.")
            return None
        return wf["name"], values, raw



"""The "Paintbridge" docker: widgets bound to the Controller. No networking, no pixel work here.

Engine sign-in on top; tabs for Generate, Workflows (a form built from the workflow's parameters) and Gallery
(thumbnails, filters, paging; Use settings / Add to document / Star); then the progress and the results list
that generate and workflow runs share.
"""

from __future__ import annotations

from krita import DockWidget
from PyQt5.QtCore import QSize, Qt
from PyQt5.QtGui import QIcon, QImage, QPixmap
from PyQt5.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QFrame,
                             QGroupBox, QHBoxLayout, QLabel, QLineEdit, QListView, QListWidget, QListWidgetItem,
                             QPlainTextEdit, QProgressBar, QPushButton, QScrollArea, QSpinBox, QTabWidget,
                             QVBoxLayout, QWidget)

from ._vendor.protocol import forms

from .controller import MODES, THUMB_SIZE, controller, guarded

INT32 = (-2 ** 31, 2 ** 31 - 1)
SEED_MAX = 2 ** 53          # the engine's limit (random seeds are < 2**32, beyond a QSpinBox)
ERROR_STYLE = "color: #e05050"


class PaintbridgeDocker(DockWidget):
    def __init__(self):
        super().__init__()
        self.setWindowTitle("Paintbridge")
        self.ctl = controller()
        f = self.ctl.form
        root = QWidget(self)
        lay = QVBoxLayout(root)

        # -- connection
        box = QGroupBox("Engine")
        form = QFormLayout(box)
        self.url = QLineEdit(f.url)
        self.username = QLineEdit(f.username)
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.Password)
        self.remember = QCheckBox("Remember me")
        self.token = QLineEdit()
        self.token.setPlaceholderText("or paste a token")
        self.token.setEchoMode(QLineEdit.Password)
        buttons = QHBoxLayout()
        self.sign_in_btn = QPushButton("Sign in")
        self.connect_btn = QPushButton("Connect")
        self.sign_out_btn = QPushButton("Sign out")
        for b in (self.sign_in_btn, self.connect_btn, self.sign_out_btn):
            buttons.addWidget(b)
        self.state = QLabel("disconnected")
        self.state.setWordWrap(True)
        form.addRow("Server", self.url)
        form.addRow("User", self.username)
        form.addRow("Password", self.password)
        form.addRow("", self.remember)
        form.addRow("Token", self.token)
        form.addRow(buttons)
        form.addRow("Status", self.state)
        lay.addWidget(box)
        self.tabs = QTabWidget()
        lay.addWidget(self.tabs)

        # -- request
        box = QGroupBox("Generate")
        form = QFormLayout(box)
        self.model = QComboBox()
        self.prompt = QPlainTextEdit(f.prompt)
        self.prompt.setMaximumHeight(70)
        self.negative = QPlainTextEdit(f.negative)
        self.negative.setMaximumHeight(45)
        self.mode = QComboBox()
        for key, label in MODES:
            self.mode.addItem(label, key)
        self.mode.setCurrentIndex(max(0, [k for k, _ in MODES].index(f.mode) if f.mode in dict(MODES) else 0))
        self.source = QComboBox()
        self.source.addItem("Composite image", "composite")
        self.source.addItem("Active layer", "layer")
        self.source.setCurrentIndex(0 if f.source == "composite" else 1)
        self.strength = _dspin(0.0, 1.0, 0.05, f.strength)
        self.steps = _spin(1, 200, f.steps)
        self.guidance = _dspin(0.0, 30.0, 0.5, f.guidance)
        self.seed = _dspin(-1, SEED_MAX, 1, f.seed, decimals=0)
        self.seed.setSpecialValueText("random")
        self.batch = _spin(1, 8, f.batch)
        self.upscaler = QComboBox()   # filled by _models: "plain resize" + the engine's upscaler models
        self.scale = _dspin(1.0, 8.0, 0.5, f.scale)
        self.lora = QComboBox()       # filled by _models: "none" + the engine's LoRAs
        self.lora_weight = _dspin(-2.0, 2.0, 0.05, f.lora_weight)
        self.extend = [_spin(0, 2048, v) for v in (f.extend_left, f.extend_top, f.extend_right, f.extend_bottom)]
        extend_row = QHBoxLayout()
        for spin, side in zip(self.extend, ("left", "top", "right", "bottom")):
            spin.setPrefix(f"{side[0].upper()} ")
            spin.setSuffix(" px")
            spin.setToolTip(f"Outpaint: pixels to add on the {side} before filling")
            extend_row.addWidget(spin)
        lora_row = QHBoxLayout()
        lora_row.addWidget(self.lora, 1)
        lora_row.addWidget(self.lora_weight)
        form.addRow("Model", self.model)
        form.addRow("LoRA", lora_row)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Mode", self.mode)
        form.addRow("Read from", self.source)
        form.addRow("Strength", self.strength)
        form.addRow("Extend", extend_row)
        form.addRow("Upscaler", self.upscaler)
        form.addRow("Scale", self.scale)
        form.addRow("Steps", self.steps)
        form.addRow("Guidance", self.guidance)
        form.addRow("Seed", self.seed)
        form.addRow("Images", self.batch)
        form.addRow(QLabel("Size: the selection, or the whole document."))
        row = QHBoxLayout()
        self.generate_btn = QPushButton("Generate")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setEnabled(False)
        row.addWidget(self.generate_btn)
        row.addWidget(self.cancel_btn)
        form.addRow(row)
        self.tabs.addTab(box, "Generate")
        self.tabs.addTab(self._workflows_tab(), "Workflows")
        self.tabs.addTab(self._gallery_tab(), "Gallery")

        # -- progress and results (generate and workflow runs)
        box = QGroupBox("Results")
        v = QVBoxLayout(box)
        self.bar = QProgressBar()
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignCenter)
        self.preview.setMinimumHeight(96)
        v.addWidget(self.bar)
        v.addWidget(self.preview)
        self.results = QListWidget()
        v.addWidget(self.results)
        row = QHBoxLayout()
        self.apply_btn = QPushButton("Apply as new layer")
        self.replace_btn = QPushButton("Replace")
        self.discard_btn = QPushButton("Discard")
        for b in (self.apply_btn, self.replace_btn, self.discard_btn):
            row.addWidget(b)
        v.addLayout(row)
        self.message = QLabel()
        self.message.setWordWrap(True)
        v.addWidget(self.message)
        lay.addWidget(box)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setFrameShape(QFrame.NoFrame)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        scroll.setWidget(root)
        scroll.setMinimumWidth(root.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        self.setWidget(scroll)

        # -- wiring
        self.sign_in_btn.clicked.connect(guarded(self._sign_in))
        self.connect_btn.clicked.connect(guarded(lambda: self.ctl.connect_server(self.url.text().strip(),
                                                                         self.token.text().strip() or None)))
        self.sign_out_btn.clicked.connect(guarded(self.ctl.sign_out))
        self.generate_btn.clicked.connect(guarded(self._generate))
        self.cancel_btn.clicked.connect(guarded(self.ctl.cancel))
        self.apply_btn.clicked.connect(guarded(lambda: self._apply(False)))
        self.replace_btn.clicked.connect(guarded(lambda: self._apply(True)))
        self.discard_btn.clicked.connect(guarded(self._discard))
        self.mode.currentIndexChanged.connect(guarded(self._mode_changed))
        self.model.currentIndexChanged.connect(guarded(self._fill_loras))
        self.ctl.state_changed.connect(guarded(self._state))
        self.ctl.models_changed.connect(guarded(self._models))
        self.ctl.progress.connect(guarded(self._progress))
        self.ctl.results_changed.connect(guarded(self._results))
        self.ctl.busy_changed.connect(guarded(self._busy))
        self.ctl.message.connect(self.message.setText)
        self.ctl.form_changed.connect(guarded(self._show_form))
        self.ctl.gallery_changed.connect(guarded(self._gallery))
        self.ctl.workflows_changed.connect(guarded(self._workflows))
        self.ctl.workflow_errors.connect(guarded(self._workflow_errors))
        self.gallery_refresh.clicked.connect(guarded(self._refresh_gallery))
        self.gallery_q.returnPressed.connect(guarded(self._refresh_gallery))
        self.gallery_this_doc.toggled.connect(guarded(self._refresh_gallery))
        self.gallery_starred.toggled.connect(guarded(self._refresh_gallery))
        self.gallery_more.clicked.connect(guarded(self.ctl.load_more_images))
        self.gallery_list.currentItemChanged.connect(guarded(self._gallery_selection))
        self.use_btn.clicked.connect(guarded(lambda: self._with_image(self.ctl.use_settings)))
        self.add_btn.clicked.connect(guarded(lambda: self._with_image(self.ctl.add_image)))
        self.star_btn.clicked.connect(guarded(self._star))
        self.wf_refresh.clicked.connect(guarded(self.ctl.refresh_workflows))
        self.wf_combo.currentIndexChanged.connect(guarded(self._build_workflow_form))
        self.wf_run.clicked.connect(guarded(self._run_workflow))
        self.wf_cancel.clicked.connect(guarded(self.ctl.cancel))
        self._mode_changed()
        self._models(self.ctl.models)
        self._workflows(self.ctl.workflows)
        self._gallery()
        self._shown_state = None
        self._state(self.ctl.state, "")
        if self.ctl.state == "disconnected":
            self.ctl.connect_server()   # with the stored token, if any

    def _workflows_tab(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        row = QHBoxLayout()
        self.wf_combo = QComboBox()
        self.wf_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.wf_refresh = QPushButton("Refresh")
        row.addWidget(self.wf_combo, 1)
        row.addWidget(self.wf_refresh)
        v.addLayout(row)
        self.wf_desc = QLabel()
        self.wf_desc.setWordWrap(True)
        v.addWidget(self.wf_desc)
        self.wf_holder = QVBoxLayout()      # receives the form of the chosen workflow
        v.addLayout(self.wf_holder)
        self.wf_form: QWidget | None = None
        self.wf_fields: dict = {}           # name -> (Field, widget, error label)
        self._wf_key = None
        self.wf_message = QLabel()
        self.wf_message.setWordWrap(True)
        self.wf_message.setStyleSheet(ERROR_STYLE)
        v.addWidget(self.wf_message)
        row = QHBoxLayout()
        self.wf_run = QPushButton("Run")
        self.wf_cancel = QPushButton("Cancel")
        self.wf_cancel.setEnabled(False)
        row.addWidget(self.wf_run)
        row.addWidget(self.wf_cancel)
        v.addLayout(row)
        v.addStretch(1)
        return page

    def _gallery_tab(self) -> QWidget:
        page = QWidget()
        v = QVBoxLayout(page)
        row = QHBoxLayout()
        self.gallery_q = QLineEdit()
        self.gallery_q.setPlaceholderText("Search prompts")
        self.gallery_q.setClearButtonEnabled(True)
        self.gallery_refresh = QPushButton("Refresh")
        row.addWidget(self.gallery_q, 1)
        row.addWidget(self.gallery_refresh)
        v.addLayout(row)
        row = QHBoxLayout()
        self.gallery_this_doc = QCheckBox("This document only")
        self.gallery_starred = QCheckBox("Starred")
        row.addWidget(self.gallery_this_doc)
        row.addWidget(self.gallery_starred)
        row.addStretch(1)
        v.addLayout(row)
        self.gallery_list = QListWidget()
        self.gallery_list.setViewMode(QListView.IconMode)
        self.gallery_list.setIconSize(QSize(THUMB_SIZE, THUMB_SIZE))
        self.gallery_list.setGridSize(QSize(THUMB_SIZE + 16, THUMB_SIZE + 36))
        self.gallery_list.setResizeMode(QListView.Adjust)
        self.gallery_list.setMovement(QListView.Static)
        self.gallery_list.setWordWrap(True)
        self.gallery_list.setSelectionMode(QAbstractItemView.SingleSelection)
        self.gallery_list.setMinimumHeight(2 * THUMB_SIZE + 80)
        v.addWidget(self.gallery_list)
        row = QHBoxLayout()
        self.gallery_count = QLabel()
        self.gallery_more = QPushButton("Load more")
        row.addWidget(self.gallery_count, 1)
        row.addWidget(self.gallery_more)
        v.addLayout(row)
        row = QHBoxLayout()
        self.use_btn = QPushButton("Use settings")
        self.use_btn.setToolTip("Fill the Generate form with this image's prompt, model, seed and settings")
        self.add_btn = QPushButton("Add to document")
        self.add_btn.setToolTip("Add this image to the document as a layer in the Paintbridge group")
        self.star_btn = QPushButton("Star")
        for b in (self.use_btn, self.add_btn, self.star_btn):
            row.addWidget(b)
        v.addLayout(row)
        self._icons: dict = {}              # image id -> QIcon (thumbnails are decoded once)
        return page

    def canvasChanged(self, canvas):
        pass

    # -- actions
    def _sign_in(self):
        self.ctl.sign_in(self.url.text().strip(), self.username.text().strip(), self.password.text(),
                         self.remember.isChecked())
        self.password.clear()

    def _read_form(self):
        f = self.ctl.form
        f.model = self.model.currentData() or ""
        f.prompt = self.prompt.toPlainText()
        f.negative = self.negative.toPlainText()
        f.mode = self.mode.currentData()
        f.source = self.source.currentData()
        f.strength, f.steps, f.guidance = self.strength.value(), self.steps.value(), self.guidance.value()
        f.seed, f.batch = int(self.seed.value()), self.batch.value()
        f.upscaler, f.scale = self.upscaler.currentData() or "", self.scale.value()
        f.lora, f.lora_weight = self.lora.currentData() or "", self.lora_weight.value()
        f.extend_left, f.extend_top, f.extend_right, f.extend_bottom = (s.value() for s in self.extend)

    def _generate(self):
        self._read_form()
        self.message.clear()
        self.bar.setValue(0)
        self.ctl.generate()

    def _apply(self, replace: bool):
        row = self.results.currentRow()
        if row >= 0:
            self.ctl.apply(row, replace)

    def _discard(self):
        row = self.results.currentRow()
        if row >= 0:
            self.ctl.discard(row)

    def _refresh_gallery(self):
        if self.ctl.state == "connected":
            self.ctl.refresh_gallery(self.gallery_this_doc.isChecked(), self.gallery_starred.isChecked(),
                                     self.gallery_q.text())

    def selected_image(self) -> str | None:
        item = self.gallery_list.currentItem()
        return item.data(Qt.UserRole) if item is not None else None

    def _with_image(self, action):
        image = self.selected_image()
        if image:
            action(image)

    def _star(self):
        image = self.selected_image()
        im = self.ctl.gallery_image(image) if image else None
        if im is not None:
            self.ctl.star_image(image, not im.get("starred"))

    def workflow_values(self) -> dict:
        """The raw values of the workflow form, by parameter name (forms.collect checks them)."""
        raw = {}
        for name, (f, w, _) in self.wf_fields.items():
            kind = f.widget
            if kind in (forms.CHOICE, forms.LAYER):
                raw[name] = w.currentData()
            elif kind in (forms.INT, forms.FLOAT):
                value = w.value()
                if getattr(w, "pb_unset", False) and value == w.minimum():
                    value = None        # a required number not given yet
                elif kind == forms.INT:
                    value = int(round(value))
                raw[name] = value
            elif kind == forms.TEXTAREA:
                raw[name] = w.toPlainText()
            elif kind == forms.CHECK:
                raw[name] = w.isChecked()
            elif kind == forms.SELECTION:
                raw[name] = "selection"
            else:
                raw[name] = w.text()
        return raw

    def _run_workflow(self):
        self.message.clear()
        self.bar.setValue(0)
        self.ctl.run_workflow(self.wf_combo.currentData() or "", self.workflow_values())

    # -- views of controller state
    def _mode_changed(self):
        mode = self.mode.currentData()
        self.strength.setEnabled(mode in ("img2img", "inpaint"))
        self.source.setEnabled(mode != "txt2img")
        self.model.setEnabled(mode != "upscale")
        self.lora.setEnabled(mode != "upscale")
        self.lora_weight.setEnabled(mode != "upscale")
        for spin in self.extend:
            spin.setEnabled(mode == "outpaint")
        self.upscaler.setEnabled(mode == "upscale")
        self.scale.setEnabled(mode == "upscale")

    def _state(self, state: str, message: str):
        self.state.setText(state + (f": {message}" if message else ""))
        connected = state == "connected"
        self.generate_btn.setEnabled(connected)
        self.wf_run.setEnabled(connected and self.wf_combo.currentData() is not None)
        self.gallery_refresh.setEnabled(connected)
        self._gallery_selection()
        if connected:
            if self._shown_state != state:
                self.message.clear()        # e.g. "cannot reach …" from before connecting
            self._refresh_gallery()
        self._shown_state = state

    def _models(self, models: list):
        self.model.clear()
        for m in models:
            self.model.addItem(f"{m['name']} ({m.get('base') or '?'})", m["name"])
        names = [m["name"] for m in models]
        if self.ctl.form.model in names:
            self.model.setCurrentIndex(names.index(self.ctl.form.model))
        self.upscaler.clear()
        self.upscaler.addItem("Plain resize (no model)", "")
        for m in self.ctl.upscalers:
            self.upscaler.addItem(m["name"], m["name"])
        self.upscaler.setCurrentIndex(max(0, self.upscaler.findData(self.ctl.form.upscaler)))
        self._fill_loras()

    def _fill_loras(self):
        """The LoRA picker holds the LoRAs that fit the chosen model (its base)."""
        keep = self.lora.currentData() or self.ctl.form.lora
        self.lora.clear()
        self.lora.addItem("None", "")
        for m in forms.loras_for(self.ctl.loras, self.ctl.models, self.model.currentData() or ""):
            self.lora.addItem(f"{m['name']} ({m.get('base') or '?'})", m["name"])
        self.lora.setCurrentIndex(max(0, self.lora.findData(keep)))

    def _progress(self, job: str, step: int, total: int, preview):
        self.bar.setMaximum(max(1, total))
        self.bar.setValue(step)
        if preview is not None:
            img = QImage(preview.data, preview.w, preview.h, preview.w * 4, QImage.Format_ARGB32)  # BGRA bytes
            self.preview.setPixmap(QPixmap.fromImage(img.copy()).scaled(
                160, 160, Qt.KeepAspectRatio, Qt.SmoothTransformation))

    def _results(self):
        self.results.clear()
        for r in self.ctl.results:
            px = r.layer.pixels
            self.results.addItem(f"{r.layer.name}  ({px.w}×{px.h} at {px.x},{px.y})")
        if self.ctl.results:
            self.results.setCurrentRow(len(self.ctl.results) - 1)

    def _busy(self, busy: bool):
        self.cancel_btn.setEnabled(busy)
        self.wf_cancel.setEnabled(busy)

    def _show_form(self):
        """The Form was refilled from an image (Use settings): show it."""
        f = self.ctl.form
        self.prompt.setPlainText(f.prompt)
        self.negative.setPlainText(f.negative)
        keys = [k for k, _ in MODES]
        if f.mode in keys:
            self.mode.setCurrentIndex(keys.index(f.mode))
        self.strength.setValue(f.strength)
        self.steps.setValue(f.steps)
        self.guidance.setValue(f.guidance)
        self.seed.setValue(f.seed)
        i = self.model.findData(f.model)
        if i >= 0:
            self.model.setCurrentIndex(i)
        self.scale.setValue(f.scale)
        self.upscaler.setCurrentIndex(max(0, self.upscaler.findData(f.upscaler)))
        self.lora.setCurrentIndex(max(0, self.lora.findData(f.lora)))
        self.lora_weight.setValue(f.lora_weight)
        for spin, v in zip(self.extend, (f.extend_left, f.extend_top, f.extend_right, f.extend_bottom)):
            spin.setValue(v)
        self.tabs.setCurrentIndex(0)

    def _gallery(self):
        ctl = self.ctl
        keep = self.selected_image()
        ids = {im["id"] for im in ctl.gallery}
        self._icons = {k: v for k, v in self._icons.items() if k in ids}
        self.gallery_list.clear()
        for im in ctl.gallery:
            icon = self._icons.get(im["id"])
            if icon is None:
                icon = self._icons[im["id"]] = _thumb_icon(im.get("thumbnail"))
            item = QListWidgetItem(icon, _caption(im))
            item.setData(Qt.UserRole, im["id"])
            item.setToolTip(_details(im))
            self.gallery_list.addItem(item)
            if im["id"] == keep:
                self.gallery_list.setCurrentItem(item)
        if ctl.gallery_loading and not ctl.gallery:
            self.gallery_count.setText("loading…")
        else:
            self.gallery_count.setText(f"{len(ctl.gallery)} of {ctl.gallery_total}")
        self.gallery_more.setEnabled(ctl.gallery_has_more and not ctl.gallery_loading)
        self._gallery_selection()

    def _gallery_selection(self, *_):
        image = self.selected_image()
        im = self.ctl.gallery_image(image) if image else None
        connected = self.ctl.state == "connected"
        for b in (self.use_btn, self.add_btn, self.star_btn):
            b.setEnabled(im is not None and connected)
        self.star_btn.setText("Unstar" if im is not None and im.get("starred") else "Star")

    def _workflows(self, workflows: list):
        current = self.wf_combo.currentData()
        self.wf_combo.blockSignals(True)
        self.wf_combo.clear()
        for w in workflows:
            self.wf_combo.addItem(w["name"], w["name"])
            if w.get("description"):
                self.wf_combo.setItemData(self.wf_combo.count() - 1, w["description"], Qt.ToolTipRole)
        i = self.wf_combo.findData(current) if current else -1
        self.wf_combo.setCurrentIndex(i if i >= 0 else (0 if workflows else -1))
        self.wf_combo.blockSignals(False)
        self._build_workflow_form()

    def _build_workflow_form(self, *_):
        """One native widget per parameter (protocol.forms decides which); rebuilt only when the chosen
        workflow or its parameters change, so typed values survive a refresh."""
        name = self.wf_combo.currentData()
        wf = self.ctl.workflow(name) if name else None
        key = (name, repr(wf.get("params")) if wf else None)
        if key == self._wf_key:
            return
        self._wf_key = key
        if self.wf_form is not None:   # gone at once: deleteLater alone leaves it drawn until the loop runs
            self.wf_holder.removeWidget(self.wf_form)
            self.wf_form.hide()
            self.wf_form.setParent(None)
            self.wf_form.deleteLater()
        self.wf_form = QWidget()
        form = QFormLayout(self.wf_form)
        form.setContentsMargins(0, 0, 0, 0)
        self.wf_fields = {}
        for f in self.ctl.workflow_fields(name) if name else []:
            widget = field_widget(f)
            label = QLabel(f.label + (" *" if f.required else ""))
            label.setToolTip(f.description)
            widget.setToolTip(f.description)
            error = QLabel()
            error.setWordWrap(True)
            error.setStyleSheet(ERROR_STYLE)
            error.hide()
            cell = QWidget()
            col = QVBoxLayout(cell)
            col.setContentsMargins(0, 0, 0, 0)
            col.setSpacing(1)
            col.addWidget(widget)
            col.addWidget(error)
            form.addRow(label, cell)
            self.wf_fields[f.name] = (f, widget, error)
        self.wf_holder.addWidget(self.wf_form)
        self.wf_desc.setText((wf or {}).get("description") or ("" if wf else "No workflows saved yet."))
        self.wf_message.clear()
        self.wf_run.setEnabled(wf is not None and self.ctl.state == "connected")

    def _workflow_errors(self, errors: dict):
        for name, (_, _, label) in self.wf_fields.items():
            label.setText(errors.get(name, ""))
            label.setVisible(name in errors)
        self.wf_message.setText(errors.get("", "") or
                                ("Fix the fields marked above." if errors else ""))


def _spin(lo, hi, value):
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def _dspin(lo, hi, step, value, decimals=2):
    s = QDoubleSpinBox()
    s.setDecimals(decimals)
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s


def _decimals(*numbers) -> int:
    """Enough decimals to show these numbers (a step of 0.05 needs 2), at least 2, at most 6."""
    out = 2
    for n in numbers:
        if n is not None and float(n) != int(float(n)):
            text = f"{float(n):.6f}".rstrip("0")
            out = max(out, len(text.split(".")[1]))
    return min(out, 6)


def field_widget(f: "forms.Field") -> QWidget:
    """The native Qt widget for one workflow parameter, with its default, bounds and step."""
    kind = f.widget
    if kind == forms.CHOICE:
        w = QComboBox()
        if f.default is None:
            w.addItem("(choose)", None)
        for choice in f.choices:
            w.addItem(str(choice), choice)
        if f.default is not None and f.default in f.choices:
            w.setCurrentIndex(f.choices.index(f.default))
        return w
    if kind in (forms.INT, forms.FLOAT):
        is_int = kind == forms.INT
        step = (f.step or 1) if is_int else (f.step or 0.1)
        lo = f.min if f.min is not None else (INT32[0] if is_int else -1e9)
        hi = f.max if f.max is not None else (INT32[1] if is_int else 1e9)
        unset = f.default is None      # required: one step below the minimum reads "(required)" = not given
        if unset:
            lo = lo - step
        wide = is_int and (lo < INT32[0] or hi > INT32[1])
        if is_int and not wide:
            w = QSpinBox()
            w.setRange(int(lo), int(hi))
            w.setSingleStep(max(1, int(step)))
        else:   # floats, and ints beyond a QSpinBox's 32 bits (seeds)
            w = QDoubleSpinBox()
            w.setDecimals(0 if is_int else _decimals(step, f.min, f.max, f.default))
            w.setRange(lo, hi)
            w.setSingleStep(step)
        if unset:
            w.setSpecialValueText("(required)")
            w.pb_unset = True
            w.setValue(w.minimum())
        else:
            w.setValue(int(f.default) if isinstance(w, QSpinBox) else float(f.default))
        return w
    if kind == forms.CHECK:
        w = QCheckBox()
        w.setChecked(bool(f.default))
        return w
    if kind == forms.TEXTAREA:
        w = QPlainTextEdit(f.default or "")
        w.setMaximumHeight(70)
        return w
    if kind == forms.LAYER:
        w = QComboBox()
        w.addItem("Active layer", "layer")
        w.addItem("Composite image", "composite")
        return w
    if kind == forms.SELECTION:
        return QLabel("The selection")
    return QLineEdit("" if f.default is None else str(f.default))


def _thumb_icon(px) -> QIcon:
    """A gallery thumbnail (BGRA Pixels, i.e. QImage's ARGB32 on little-endian) as an icon; copied so the
    image owns its pixels."""
    if px is None:
        return QIcon()
    img = QImage(px.data, px.w, px.h, px.w * 4, QImage.Format_ARGB32).copy()
    return QIcon(QPixmap.fromImage(img))


def _caption(im: dict) -> str:
    prompt = (im.get("prompt") or im.get("name") or im.get("mode") or "").strip()
    if len(prompt) > 24:
        prompt = prompt[:23] + "…"
    return ("★ " if im.get("starred") else "") + prompt


def _details(im: dict) -> str:
    lines = [im.get("prompt") or "(no prompt)"]
    info = [f"{k} {im[k]}" for k in ("seed", "steps", "model") if im.get(k) is not None]
    if info:
        lines.append(", ".join(info))
    lines.append(f"{im.get('w')}×{im.get('h')} at {im.get('x')},{im.get('y')} · {im.get('mode')} · "
                 f"{im.get('app') or '?'} · {im.get('created') or ''}")
    if im.get("document"):
        lines.append(im["document"])
    return "\n".join(lines)

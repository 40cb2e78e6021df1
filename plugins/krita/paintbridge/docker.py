"""The "Paintbridge" docker: widgets bound to the Controller. No networking, no pixel work here."""

from __future__ import annotations

from krita import DockWidget
from PyQt5.QtCore import Qt
from PyQt5.QtGui import QImage, QPixmap
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                             QLineEdit, QListWidget, QPlainTextEdit, QProgressBar, QPushButton, QSpinBox,
                             QVBoxLayout, QWidget)

from .controller import MODES, controller


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
        self.seed = _spin(-1, 2 ** 31 - 1, f.seed)
        self.seed.setSpecialValueText("random")
        self.batch = _spin(1, 8, f.batch)
        form.addRow("Model", self.model)
        form.addRow("Prompt", self.prompt)
        form.addRow("Negative", self.negative)
        form.addRow("Mode", self.mode)
        form.addRow("Read from", self.source)
        form.addRow("Strength", self.strength)
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
        self.bar = QProgressBar()
        self.preview = QLabel()
        self.preview.setAlignment(Qt.AlignCenter)
        self.preview.setMinimumHeight(96)
        form.addRow(self.bar)
        form.addRow(self.preview)
        lay.addWidget(box)

        # -- results
        box = QGroupBox("Results")
        v = QVBoxLayout(box)
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
        self.setWidget(root)

        # -- wiring
        self.sign_in_btn.clicked.connect(self._sign_in)
        self.connect_btn.clicked.connect(lambda: self.ctl.connect_server(self.url.text().strip(),
                                                                         self.token.text().strip() or None))
        self.sign_out_btn.clicked.connect(self.ctl.sign_out)
        self.generate_btn.clicked.connect(self._generate)
        self.cancel_btn.clicked.connect(self.ctl.cancel)
        self.apply_btn.clicked.connect(lambda: self._apply(False))
        self.replace_btn.clicked.connect(lambda: self._apply(True))
        self.discard_btn.clicked.connect(self._discard)
        self.mode.currentIndexChanged.connect(self._mode_changed)
        self.ctl.state_changed.connect(self._state)
        self.ctl.models_changed.connect(self._models)
        self.ctl.progress.connect(self._progress)
        self.ctl.results_changed.connect(self._results)
        self.ctl.busy_changed.connect(self._busy)
        self.ctl.message.connect(self.message.setText)
        self._mode_changed()
        self._models(self.ctl.models)
        self._state(self.ctl.state, "")
        if self.ctl.state == "disconnected":
            self.ctl.connect_server()   # with the stored token, if any

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
        f.seed, f.batch = self.seed.value(), self.batch.value()

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

    # -- views of controller state
    def _mode_changed(self):
        mode = self.mode.currentData()
        self.strength.setEnabled(mode in ("img2img", "inpaint"))
        self.source.setEnabled(mode != "txt2img")
        self.model.setEnabled(mode != "upscale")

    def _state(self, state: str, message: str):
        self.state.setText(state + (f": {message}" if message else ""))
        self.generate_btn.setEnabled(state == "connected")

    def _models(self, models: list):
        self.model.clear()
        for m in models:
            self.model.addItem(f"{m['name']} ({m.get('base') or '?'})", m["name"])
        names = [m["name"] for m in models]
        if self.ctl.form.model in names:
            self.model.setCurrentIndex(names.index(self.ctl.form.model))

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


def _spin(lo, hi, value):
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    return s


def _dspin(lo, hi, step, value):
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setValue(value)
    return s
